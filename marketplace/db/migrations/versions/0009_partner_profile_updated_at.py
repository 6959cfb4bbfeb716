"""partner profile updated_at: routing keeps the active partners between batches and reads them again only when
the number of partner profiles or the newest change to one moves (RoutingEngine.partners)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 19:40:00
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import marketplace.db.types

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('partner_profiles', schema=None) as batch_op:
        batch_op.add_column(sa.Column('updated_at', marketplace.db.types.UTCDateTime(timezone=True), nullable=True))
    # existing profiles: changed as of now (the column type stores UTC; SQLite without the zone)
    profiles = sa.table('partner_profiles', sa.column('updated_at', marketplace.db.types.UTCDateTime(timezone=True)))
    op.execute(profiles.update().values(updated_at=datetime.now(UTC)))
    with op.batch_alter_table('partner_profiles', schema=None) as batch_op:
        batch_op.alter_column('updated_at', existing_type=marketplace.db.types.UTCDateTime(timezone=True),
                              nullable=False)
        batch_op.create_index(batch_op.f('ix_partner_profiles_updated_at'), ['updated_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('partner_profiles', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_partner_profiles_updated_at'))
        batch_op.drop_column('updated_at')

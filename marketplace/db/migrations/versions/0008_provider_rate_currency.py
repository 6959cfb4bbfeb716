"""provider rate currency: the currency of a provider's hourly rate, so that price fit compares like with like

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 15:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('provider_profiles', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rate_currency', sa.String(length=3), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('provider_profiles', schema=None) as batch_op:
        batch_op.drop_column('rate_currency')

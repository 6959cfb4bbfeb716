"""offer proposals: the text a provider sends with an accepted offer, and whether it came from the AI draft
and was edited

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 22:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('offers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('proposal', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('proposal_from_draft', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('proposal_edited', sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('offers', schema=None) as batch_op:
        batch_op.drop_column('proposal_edited')
        batch_op.drop_column('proposal_from_draft')
        batch_op.drop_column('proposal')

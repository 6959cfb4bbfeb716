"""indexes for the routing worker's provider snapshot: the newest profile change and the newest rating are
read before every routing batch (provider_profiles.updated_at, ratings.created_at)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 05:00:00
"""

from __future__ import annotations

from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f('ix_provider_profiles_updated_at'), 'provider_profiles', ['updated_at'], unique=False)
    op.create_index(op.f('ix_ratings_created_at'), 'ratings', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_ratings_created_at'), table_name='ratings')
    op.drop_index(op.f('ix_provider_profiles_updated_at'), table_name='provider_profiles')

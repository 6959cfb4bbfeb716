"""decline codes and ratings: why a provider declined an offer (and the category they suggest); customers'
ratings of the providers who completed their tasks

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 19:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import marketplace.db.types

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('offers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('decline_code', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('suggested_category', sa.String(length=80), nullable=True))

    op.create_table('ratings',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('task_id', sa.Uuid(), nullable=False),
    sa.Column('provider_id', sa.Uuid(), nullable=False),
    sa.Column('customer_id', sa.Uuid(), nullable=False),
    sa.Column('stars', sa.Integer(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('created_at', marketplace.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('stars BETWEEN 1 AND 5', name=op.f('ck_ratings_stars_range')),
    sa.ForeignKeyConstraint(['customer_id'], ['accounts.id'], name=op.f('fk_ratings_customer_id_accounts'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['provider_id'], ['accounts.id'], name=op.f('fk_ratings_provider_id_accounts'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_ratings_task_id_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ratings')),
    sa.UniqueConstraint('task_id', name=op.f('uq_ratings_task_id'))
    )
    with op.batch_alter_table('ratings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ratings_provider_id'), ['provider_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('ratings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ratings_provider_id'))
    op.drop_table('ratings')
    with op.batch_alter_table('offers', schema=None) as batch_op:
        batch_op.drop_column('suggested_category')
        batch_op.drop_column('decline_code')

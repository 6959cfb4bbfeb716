"""draft provenance and requested categories: the generative model's weights hash, the grounding guard's
verdict and the sources of each draft; the category a customer who objects to AI processing chose

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('drafts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('weights_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('guard', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('sources', sa.JSON(), nullable=True))
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('requested_category_id', sa.Uuid(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_tasks_requested_category_id_categories'), 'categories',
                                    ['requested_category_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_tasks_requested_category_id_categories'), type_='foreignkey')
        batch_op.drop_column('requested_category_id')
    with op.batch_alter_table('drafts', schema=None) as batch_op:
        batch_op.drop_column('sources')
        batch_op.drop_column('guard')
        batch_op.drop_column('weights_hash')

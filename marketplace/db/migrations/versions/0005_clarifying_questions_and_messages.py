"""clarifying questions and messages: drafts of the question staff may send a customer whose task routing
could not place (drafts.task_id, drafts.kind; offer_id becomes optional), and messages on a task

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 00:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import marketplace.db.types

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('drafts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('task_id', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('kind', sa.String(length=30), nullable=False, server_default='proposal'))
        batch_op.alter_column('offer_id', existing_type=sa.Uuid(), nullable=True)
        batch_op.create_unique_constraint(batch_op.f('uq_drafts_task_id'), ['task_id'])
        batch_op.create_foreign_key(batch_op.f('fk_drafts_task_id_tasks'), 'tasks', ['task_id'], ['id'],
                                    ondelete='CASCADE')
    with op.batch_alter_table('drafts', schema=None) as batch_op:
        batch_op.alter_column('kind', existing_type=sa.String(length=30), server_default=None)

    op.create_table('messages',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('task_id', sa.Uuid(), nullable=False),
    sa.Column('author_id', sa.Uuid(), nullable=True),
    sa.Column('author_role', sa.String(length=20), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('from_draft', sa.Boolean(), nullable=False),
    sa.Column('edited', sa.Boolean(), nullable=True),
    sa.Column('created_at', marketplace.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['author_id'], ['accounts.id'], name=op.f('fk_messages_author_id_accounts'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_messages_task_id_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages'))
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_messages_task_id'), ['task_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_messages_task_id'))
    op.drop_table('messages')
    op.execute("DELETE FROM drafts WHERE offer_id IS NULL")
    with op.batch_alter_table('drafts', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_drafts_task_id_tasks'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('uq_drafts_task_id'), type_='unique')
        batch_op.alter_column('offer_id', existing_type=sa.Uuid(), nullable=False)
        batch_op.drop_column('kind')
        batch_op.drop_column('task_id')

"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 16:23:33.252085
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import marketplace.db.types

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('accounts',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('role', sa.Enum('customer', 'provider', 'partner', 'staff', name='role', native_enum=False, length=20), nullable=False),
    sa.Column('display_name', sa.String(length=80), nullable=False),
    sa.Column('ai_processing_objection', sa.Boolean(), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('created_at', marketplace.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_accounts')),
    sa.UniqueConstraint('email', name=op.f('uq_accounts_email'))
    )
    op.create_table('categories',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('slug', sa.String(length=60), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('playbook', sa.JSON(), nullable=False),
    sa.Column('questions', sa.JSON(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_categories')),
    sa.UniqueConstraint('slug', name=op.f('uq_categories_slug'))
    )
    op.create_table('login_failures',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('email_key', sa.String(length=64), nullable=False),
    sa.Column('at', marketplace.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_login_failures'))
    )
    with op.batch_alter_table('login_failures', schema=None) as batch_op:
        batch_op.create_index('ix_login_failures_email_key_at', ['email_key', 'at'], unique=False)

    op.create_table('outbox',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('actor_name', sa.String(length=80), nullable=False),
    sa.Column('queue_name', sa.String(length=40), nullable=False),
    sa.Column('args', sa.JSON(), nullable=False),
    sa.Column('created_at', marketplace.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('dispatched_at', marketplace.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_dispatched_at', ['dispatched_at'], unique=False)
        batch_op.create_index('ix_outbox_pending', ['created_at'], unique=False, postgresql_where=sa.text('dispatched_at IS NULL'), sqlite_where=sa.text('dispatched_at IS NULL'))

    op.create_table('auth_tokens',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('account_id', sa.Uuid(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', marketplace.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', marketplace.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', marketplace.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_auth_tokens_account_id_accounts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_auth_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_auth_tokens_token_hash'))
    )
    with op.batch_alter_table('auth_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_auth_tokens_account_id'), ['account_id'], unique=False)

    op.create_table('partner_profiles',
    sa.Column('account_id', sa.Uuid(), nullable=False),
    sa.Column('referral_code', sa.String(length=16), nullable=False),
    sa.Column('expertise', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_partner_profiles_account_id_accounts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id', name=op.f('pk_partner_profiles')),
    sa.UniqueConstraint('referral_code', name=op.f('uq_partner_profiles_referral_code'))
    )
    op.create_table('provider_profiles',
    sa.Column('account_id', sa.Uuid(), nullable=False),
    sa.Column('headline', sa.String(length=120), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('skills', sa.JSON(), nullable=False),
    sa.Column('categories', sa.JSON(), nullable=False),
    sa.Column('languages', sa.JSON(), nullable=False),
    sa.Column('hourly_rate', sa.Numeric(precision=10, scale=2), nullable=True),
    sa.Column('capacity', sa.Integer(), nullable=False),
    sa.Column('accepting_work', sa.Boolean(), nullable=False),
    sa.Column('updated_at', marketplace.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_provider_profiles_account_id_accounts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id', name=op.f('pk_provider_profiles'))
    )
    op.create_table('referrals',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('partner_id', sa.Uuid(), nullable=False),
    sa.Column('customer_id', sa.Uuid(), nullable=False),
    sa.Column('created_at', marketplace.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['accounts.id'], name=op.f('fk_referrals_customer_id_accounts'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['partner_id'], ['accounts.id'], name=op.f('fk_referrals_partner_id_accounts'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_referrals')),
    sa.UniqueConstraint('customer_id', name=op.f('uq_referrals_customer_id'))
    )
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_referrals_partner_id'), ['partner_id'], unique=False)

    op.create_table('tasks',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('customer_id', sa.Uuid(), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('budget_amount', sa.Numeric(precision=12, scale=2), nullable=True),
    sa.Column('budget_currency', sa.String(length=3), nullable=True),
    sa.Column('deadline', marketplace.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('status', sa.Enum('submitted', 'routing', 'routed', 'needs_review', 'assigned', 'in_progress', 'delivered', 'completed', 'cancelled', name='taskstatus', native_enum=False, length=20), nullable=False),
    sa.Column('category_id', sa.Uuid(), nullable=True),
    sa.Column('assigned_provider_id', sa.Uuid(), nullable=True),
    sa.Column('created_at', marketplace.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', marketplace.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['assigned_provider_id'], ['accounts.id'], name=op.f('fk_tasks_assigned_provider_id_accounts'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['category_id'], ['categories.id'], name=op.f('fk_tasks_category_id_categories')),
    sa.ForeignKeyConstraint(['customer_id'], ['accounts.id'], name=op.f('fk_tasks_customer_id_accounts'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tasks'))
    )
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tasks_assigned_provider_id'), ['assigned_provider_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_tasks_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index('ix_tasks_status_created_at', ['status', 'created_at'], unique=False)

    op.create_table('category_examples',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('category_id', sa.Uuid(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('task_id', sa.Uuid(), nullable=True),
    sa.ForeignKeyConstraint(['category_id'], ['categories.id'], name=op.f('fk_category_examples_category_id_categories'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_category_examples_task_id_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_category_examples'))
    )
    with op.batch_alter_table('category_examples', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_category_examples_category_id'), ['category_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_category_examples_task_id'), ['task_id'], unique=False)

    op.create_table('offers',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('task_id', sa.Uuid(), nullable=False),
    sa.Column('provider_id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.Enum('open', 'accepted', 'declined', 'expired', 'withdrawn', name='offerstatus', native_enum=False, length=20), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('score', sa.Numeric(precision=6, scale=4), nullable=False),
    sa.Column('created_at', marketplace.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', marketplace.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('responded_at', marketplace.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('decline_reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['provider_id'], ['accounts.id'], name=op.f('fk_offers_provider_id_accounts'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_offers_task_id_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_offers')),
    sa.UniqueConstraint('task_id', 'provider_id', name=op.f('uq_offers_task_id'))
    )
    with op.batch_alter_table('offers', schema=None) as batch_op:
        batch_op.create_index('ix_offers_provider_id_status', ['provider_id', 'status'], unique=False)
        batch_op.create_index('ix_offers_status_expires_at', ['status', 'expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_offers_task_id'), ['task_id'], unique=False)

    op.create_table('routing_decisions',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('task_id', sa.Uuid(), nullable=False),
    sa.Column('outcome', sa.Enum('routed', 'needs_review', name='routingoutcome', native_enum=False, length=20), nullable=False),
    sa.Column('categories', sa.JSON(), nullable=False),
    sa.Column('explanation', sa.JSON(), nullable=False),
    sa.Column('candidates', sa.JSON(), nullable=False),
    sa.Column('model_id', sa.String(length=120), nullable=False),
    sa.Column('taxonomy_version', sa.String(length=64), nullable=False),
    sa.Column('decided_by', sa.Uuid(), nullable=True),
    sa.Column('created_at', marketplace.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['decided_by'], ['accounts.id'], name=op.f('fk_routing_decisions_decided_by_accounts'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_routing_decisions_task_id_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_routing_decisions'))
    )
    with op.batch_alter_table('routing_decisions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_routing_decisions_task_id'), ['task_id'], unique=False)

    op.create_table('task_transitions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('task_id', sa.Uuid(), nullable=False),
    sa.Column('from_status', sa.Enum('submitted', 'routing', 'routed', 'needs_review', 'assigned', 'in_progress', 'delivered', 'completed', 'cancelled', name='taskstatus', native_enum=False, length=20), nullable=True),
    sa.Column('to_status', sa.Enum('submitted', 'routing', 'routed', 'needs_review', 'assigned', 'in_progress', 'delivered', 'completed', 'cancelled', name='taskstatus', native_enum=False, length=20), nullable=False),
    sa.Column('actor_id', sa.Uuid(), nullable=True),
    sa.Column('actor_role', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('at', marketplace.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['accounts.id'], name=op.f('fk_task_transitions_actor_id_accounts'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_task_transitions_task_id_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_task_transitions'))
    )
    with op.batch_alter_table('task_transitions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_task_transitions_task_id'), ['task_id'], unique=False)

    op.create_table('drafts',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('offer_id', sa.Uuid(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('engine', sa.String(length=40), nullable=False),
    sa.Column('model_id', sa.String(length=120), nullable=False),
    sa.Column('created_at', marketplace.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['offer_id'], ['offers.id'], name=op.f('fk_drafts_offer_id_offers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_drafts')),
    sa.UniqueConstraint('offer_id', name=op.f('uq_drafts_offer_id'))
    )


def downgrade() -> None:
    op.drop_table('drafts')
    with op.batch_alter_table('task_transitions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_task_transitions_task_id'))

    op.drop_table('task_transitions')
    with op.batch_alter_table('routing_decisions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_routing_decisions_task_id'))

    op.drop_table('routing_decisions')
    with op.batch_alter_table('offers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_offers_task_id'))
        batch_op.drop_index('ix_offers_status_expires_at')
        batch_op.drop_index('ix_offers_provider_id_status')

    op.drop_table('offers')
    with op.batch_alter_table('category_examples', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_category_examples_task_id'))
        batch_op.drop_index(batch_op.f('ix_category_examples_category_id'))

    op.drop_table('category_examples')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_status_created_at')
        batch_op.drop_index(batch_op.f('ix_tasks_customer_id'))
        batch_op.drop_index(batch_op.f('ix_tasks_assigned_provider_id'))

    op.drop_table('tasks')
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_referrals_partner_id'))

    op.drop_table('referrals')
    op.drop_table('provider_profiles')
    op.drop_table('partner_profiles')
    with op.batch_alter_table('auth_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_auth_tokens_account_id'))

    op.drop_table('auth_tokens')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_pending', postgresql_where=sa.text('dispatched_at IS NULL'), sqlite_where=sa.text('dispatched_at IS NULL'))
        batch_op.drop_index('ix_outbox_dispatched_at')

    op.drop_table('outbox')
    with op.batch_alter_table('login_failures', schema=None) as batch_op:
        batch_op.drop_index('ix_login_failures_email_key_at')

    op.drop_table('login_failures')
    op.drop_table('categories')
    op.drop_table('accounts')

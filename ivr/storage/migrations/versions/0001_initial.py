"""calls, tickets, accounts and the SMS outbox

Revision ID: 0001
Revises: 
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

import ivr.storage.models

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('accounts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.String(length=64), nullable=False),
    sa.Column('plan', sa.String(length=16), nullable=False),
    sa.Column('user_email', sa.String(length=254), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('pmi', sa.String(length=16), nullable=False),
    sa.Column('host_key_hash', sa.String(length=64), nullable=False),
    sa.Column('updated_at', ivr.storage.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_accounts')),
    sa.UniqueConstraint('pmi', name=op.f('uq_accounts_pmi')),
    sa.UniqueConstraint('user_email', name=op.f('uq_accounts_user_email'))
    )
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_accounts_account_id'), ['account_id'], unique=False)

    op.create_table('calls',
    sa.Column('call_sid', sa.String(length=64), nullable=False),
    sa.Column('account_sid', sa.String(length=64), nullable=True),
    sa.Column('dialed_number', sa.String(length=32), nullable=False),
    sa.Column('region', sa.String(length=64), nullable=False),
    sa.Column('language', sa.String(length=16), nullable=False),
    sa.Column('caller_number', sa.String(length=64), nullable=False),
    sa.Column('can_text', sa.Boolean(), nullable=False),
    sa.Column('step', sa.String(length=16), nullable=False),
    sa.Column('english', sa.Boolean(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('auth_failures', sa.Integer(), nullable=False),
    sa.Column('pending_pmi', sa.String(length=16), nullable=True),
    sa.Column('account_id', sa.String(length=64), nullable=True),
    sa.Column('user_email', sa.String(length=254), nullable=True),
    sa.Column('plan', sa.String(length=16), nullable=True),
    sa.Column('role', sa.String(length=16), nullable=True),
    sa.Column('transfer_to', sa.String(length=128), nullable=True),
    sa.Column('steps_reached', sa.String(length=255), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=True),
    sa.Column('abandoned_at_step', sa.String(length=16), nullable=True),
    sa.Column('twilio_status', sa.String(length=32), nullable=True),
    sa.Column('duration_seconds', sa.Integer(), nullable=True),
    sa.Column('queue_result', sa.String(length=32), nullable=True),
    sa.Column('queue_seconds', sa.Integer(), nullable=True),
    sa.Column('started_at', ivr.storage.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', ivr.storage.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ended_at', ivr.storage.models.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('call_sid', name=op.f('pk_calls'))
    )
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_calls_outcome'), ['outcome'], unique=False)
        batch_op.create_index(batch_op.f('ix_calls_started_at'), ['started_at'], unique=False)

    op.create_table('outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('call_sid', sa.String(length=64), nullable=False),
    sa.Column('template', sa.String(length=32), nullable=False),
    sa.Column('to_number', sa.String(length=32), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('twilio_sid', sa.String(length=64), nullable=True),
    sa.Column('created_at', ivr.storage.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', ivr.storage.models.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('call_sid', 'template', name=op.f('uq_outbox_call_sid'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_status'), ['status'], unique=False)

    op.create_table('tickets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=16), nullable=False),
    sa.Column('call_sid', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.String(length=64), nullable=False),
    sa.Column('user_email', sa.String(length=254), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('target_response_minutes', sa.Integer(), nullable=False),
    sa.Column('region', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('created_at', ivr.storage.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('acknowledged_at', ivr.storage.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['call_sid'], ['calls.call_sid'], name=op.f('fk_tickets_call_sid_calls')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tickets')),
    sa.UniqueConstraint('call_sid', name=op.f('uq_tickets_call_sid')),
    sa.UniqueConstraint('number', name=op.f('uq_tickets_number'))
    )
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tickets_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_tickets_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_tickets_status'), ['status'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tickets_status'))
        batch_op.drop_index(batch_op.f('ix_tickets_created_at'))
        batch_op.drop_index(batch_op.f('ix_tickets_account_id'))

    op.drop_table('tickets')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_status'))

    op.drop_table('outbox')
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_calls_started_at'))
        batch_op.drop_index(batch_op.f('ix_calls_outcome'))

    op.drop_table('calls')
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_accounts_account_id'))

    op.drop_table('accounts')

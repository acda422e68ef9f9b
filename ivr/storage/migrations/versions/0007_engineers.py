"""engineers, desk actions, pick-ups and callback attempts

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

import ivr.storage.models

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

UTC = ivr.storage.models.UTCDateTime


def upgrade() -> None:
    op.create_table(
        'engineers',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('phone', sa.String(length=32), nullable=True),
        sa.Column('client_identity', sa.String(length=128), nullable=True),
        sa.Column('languages', sa.String(length=128), nullable=False),
        sa.Column('queues', sa.String(length=255), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', UTC(timezone=True), nullable=False),
        sa.Column('token_rotated_at', UTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_engineers')),
        sa.UniqueConstraint('name', name=op.f('uq_engineers_name')),
        sa.UniqueConstraint('phone', name=op.f('uq_engineers_phone')),
        sa.UniqueConstraint('client_identity', name=op.f('uq_engineers_client_identity')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_engineers_token_hash')),
    )
    op.create_table(
        'assignments',
        sa.Column('ticket_id', sa.Integer(), nullable=False),
        sa.Column('engineer', sa.String(length=64), nullable=True),
        sa.Column('claimed_at', UTC(timezone=True), nullable=True),
        sa.Column('engineer_call_sid', sa.String(length=64), nullable=True),
        sa.Column('connected_at', UTC(timezone=True), nullable=True),
        sa.Column('callback_attempts', sa.Integer(), nullable=False),
        sa.Column('callback_failures', sa.Integer(), nullable=False),
        sa.Column('note', sa.Text(), nullable=True),
        sa.Column('updated_at', UTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'],
                                name=op.f('fk_assignments_ticket_id_tickets')),
        sa.PrimaryKeyConstraint('ticket_id', name=op.f('pk_assignments')),
    )
    op.create_table(
        'desk_actions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('ticket_id', sa.Integer(), nullable=False),
        sa.Column('actor', sa.String(length=64), nullable=False),
        sa.Column('action', sa.String(length=32), nullable=False),
        sa.Column('detail', sa.String(length=255), nullable=True),
        sa.Column('at', UTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'],
                                name=op.f('fk_desk_actions_ticket_id_tickets')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_desk_actions')),
    )
    with op.batch_alter_table('desk_actions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_desk_actions_ticket_id'), ['ticket_id'],
                              unique=False)
    op.create_table(
        'callback_attempts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('ticket_id', sa.Integer(), nullable=False),
        sa.Column('engineer', sa.String(length=64), nullable=False),
        sa.Column('engineer_call_sid', sa.String(length=64), nullable=True),
        sa.Column('customer_call_sid', sa.String(length=64), nullable=True),
        sa.Column('status', sa.String(length=32), nullable=False),
        sa.Column('outcome', sa.String(length=32), nullable=True),
        sa.Column('detail', sa.String(length=255), nullable=True),
        sa.Column('created_at', UTC(timezone=True), nullable=False),
        sa.Column('ended_at', UTC(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'],
                                name=op.f('fk_callback_attempts_ticket_id_tickets')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_callback_attempts')),
    )
    with op.batch_alter_table('callback_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_callback_attempts_ticket_id'), ['ticket_id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_callback_attempts_engineer_call_sid'),
                              ['engineer_call_sid'], unique=False)


def downgrade() -> None:
    op.drop_table('callback_attempts')
    op.drop_table('desk_actions')
    op.drop_table('assignments')
    op.drop_table('engineers')

"""help desk: push jobs written with the ticket change they carry, sent by the outbox sender

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

import ivr.storage.models

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    utc = ivr.storage.models.UTCDateTime(timezone=True)
    op.create_table(
        'helpdesk_jobs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('ticket_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('event', sa.String(length=32), nullable=False),
        sa.Column('dedupe', sa.String(length=16), nullable=True),
        sa.Column('data', sa.Text(), nullable=True),
        sa.Column('payload', sa.Text(), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('failures', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('remote_id', sa.String(length=32), nullable=True),
        sa.Column('created_at', utc, nullable=False),
        sa.Column('next_attempt_at', utc, nullable=False),
        sa.Column('first_attempt_at', utc, nullable=True),
        sa.Column('claimed_at', utc, nullable=True),
        sa.Column('sent_at', utc, nullable=True),
        sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'],
                                name=op.f('fk_helpdesk_jobs_ticket_id_tickets')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_helpdesk_jobs')),
        sa.UniqueConstraint('ticket_id', 'dedupe', name=op.f('uq_helpdesk_jobs_ticket_id')),
    )
    op.create_index('ix_helpdesk_jobs_due', 'helpdesk_jobs', ['status', 'next_attempt_at'])
    op.create_index(op.f('ix_helpdesk_jobs_ticket_id'), 'helpdesk_jobs', ['ticket_id'])


def downgrade() -> None:
    op.drop_index(op.f('ix_helpdesk_jobs_ticket_id'), table_name='helpdesk_jobs')
    op.drop_index('ix_helpdesk_jobs_due', table_name='helpdesk_jobs')
    op.drop_table('helpdesk_jobs')

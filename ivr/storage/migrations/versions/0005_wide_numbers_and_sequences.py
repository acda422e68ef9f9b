"""outbox.to_number holds any caller number a call may have (64 characters, like
calls.caller_number); calls.status_sequence holds Twilio's SequenceNumber up to 2^63 - 1

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.alter_column('to_number', existing_type=sa.String(32), type_=sa.String(64),
                              existing_nullable=False)
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.alter_column('status_sequence', existing_type=sa.Integer(),
                              type_=sa.BigInteger(), existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.alter_column('status_sequence', existing_type=sa.BigInteger(),
                              type_=sa.Integer(), existing_nullable=True)
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.alter_column('to_number', existing_type=sa.String(64), type_=sa.String(32),
                              existing_nullable=False)

"""ticket lifecycle and verification lockouts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

import ivr.storage.models

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('lockouts',
    sa.Column('key', sa.String(length=80), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('window_started_at', ivr.storage.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('lock_count', sa.Integer(), nullable=False),
    sa.Column('locked_until', ivr.storage.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('attempts_while_locked', sa.Integer(), nullable=False),
    sa.Column('updated_at', ivr.storage.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_lockouts'))
    )
    with op.batch_alter_table('lockouts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lockouts_locked_until'), ['locked_until'], unique=False)

    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('callback_number', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('connected_at', ivr.storage.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('closed_at', ivr.storage.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('updated_at', ivr.storage.models.UTCDateTime(timezone=True), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_column('updated_at')
        batch_op.drop_column('closed_at')
        batch_op.drop_column('connected_at')
        batch_op.drop_column('callback_number')

    with op.batch_alter_table('lockouts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lockouts_locked_until'))

    op.drop_table('lockouts')

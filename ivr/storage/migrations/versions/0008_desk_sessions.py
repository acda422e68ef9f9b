"""desk_sessions: dashboard sign-ins kept on the server, so signing out revokes them

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

import ivr.storage.models

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'desk_sessions',
        sa.Column('id_hash', sa.String(length=64), nullable=False),
        sa.Column('identity', sa.String(length=128), nullable=False),
        sa.Column('credential', sa.String(length=64), nullable=False),
        sa.Column('created_at', ivr.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', ivr.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id_hash', name=op.f('pk_desk_sessions')),
    )
    with op.batch_alter_table('desk_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_desk_sessions_expires_at'), ['expires_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('desk_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_desk_sessions_expires_at'))
    op.drop_table('desk_sessions')

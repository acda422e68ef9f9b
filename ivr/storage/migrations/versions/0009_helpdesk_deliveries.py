"""helpdesk_deliveries: help-desk webhook deliveries already applied, so a replay changes nothing

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

import ivr.storage.models

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'helpdesk_deliveries',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('received_at', ivr.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_helpdesk_deliveries')),
    )
    with op.batch_alter_table('helpdesk_deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_helpdesk_deliveries_received_at'), ['received_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('helpdesk_deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_helpdesk_deliveries_received_at'))
    op.drop_table('helpdesk_deliveries')

"""callback_attempts indexed by engineer: an engineer's callback under way is found
without a whole-table scan

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04

The engineer line and the desk's callbacks ask whether an engineer is on a callback
placed in the last four hours, on every engineer-line request: a few recent rows of a
table that keeps every attempt ever made.
"""
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_callback_attempts_engineer_created', 'callback_attempts',
                    ['engineer', 'created_at'])


def downgrade() -> None:
    op.drop_index('ix_callback_attempts_engineer_created', table_name='callback_attempts')

"""assignments.connected_at indexed: recent pick-ups are read without a whole-table scan

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04

A waiting caller's expected wait (asked each time Twilio plays the wait) counts the
pick-ups of the last half hour, and the engineer line asks whether an engineer is in a
conversation begun in the last four hours. Both read a few recent rows of a table that
keeps every pick-up ever made.
"""
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_assignments_connected_at', 'assignments', ['connected_at'])


def downgrade() -> None:
    op.drop_index('ix_assignments_connected_at', table_name='assignments')

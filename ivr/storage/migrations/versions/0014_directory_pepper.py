"""directory_pepper: the fingerprint of the pepper the directory was imported with

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

import ivr.storage.models

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Empty until the next import: a database from before says nothing about its pepper.
    op.create_table(
        'directory_pepper',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('fingerprint', sa.String(length=64), nullable=False),
        sa.Column('imported_at', ivr.storage.models.UTCDateTime(timezone=True),
                  nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_directory_pepper')),
    )


def downgrade() -> None:
    op.drop_table('directory_pepper')

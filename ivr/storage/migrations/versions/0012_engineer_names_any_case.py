"""engineers: a name is unique whatever its case (a unique index on lower(name))

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

from ivr.storage.engine import UpgradeRefused

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Before this release two engineers could be added with names differing only in case.
    # Which one to keep is the operator's choice, so the upgrade stops and names them.
    alike = op.get_bind().execute(sa.text(
        "SELECT name FROM engineers WHERE lower(name) IN (SELECT lower(name) FROM engineers"
        " GROUP BY lower(name) HAVING count(*) > 1) ORDER BY lower(name), name")).scalars().all()
    if alike:
        raise UpgradeRefused(
            "engineers whose names differ only in case: " + ", ".join(map(repr, alike))
            + "; remove or re-add all but one of each ('engineers remove NAME'), then run "
            "init-db again")
    op.create_index('uq_engineers_name_lower', 'engineers', [sa.text('lower(name)')],
                    unique=True)


def downgrade() -> None:
    op.drop_index('uq_engineers_name_lower', table_name='engineers')

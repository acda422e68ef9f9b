"""lockouts: a PMI's failure counter is keyed by the keyed hash of the digits typed

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04

Counters were kept under "pmi:<the digits typed>", and a wrong PMI is often a mistyped
real one: the table, or any backup of it, showed which PMIs were being tried. They are
now kept under "pmi-hash:<HMAC-SHA256 of the digits under a key derived from the pepper>".
The hash needs the pepper, which only the app has: ``flask --app app init-db`` hands it
over (``Storage.upgrade``). Each counter keeps its failures and its lock, so a PMI
locked before the upgrade stays locked after it. Without the pepper (``alembic
upgrade`` run alone) the upgrade stops if there is a counter to rekey, and changes
nothing. Caller counters are left as they are.
"""
import sqlalchemy as sa
from alembic import op

from ivr.storage.engine import UpgradeRefused

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

CLEAR = "pmi:"
HASHED = "pmi-hash:"


def upgrade() -> None:
    bind = op.get_bind()
    clear = bind.execute(sa.text(
        "SELECT key FROM lockouts WHERE key LIKE 'pmi:%'")).scalars().all()
    if not clear:
        return
    config = op.get_context().config
    digest = config.attributes.get("pmi_lockout_digest") if config is not None else None
    if digest is None:
        raise UpgradeRefused(
            f"{len(clear)} PMI failure counters are kept under the digits typed and are "
            "to be rekeyed by their keyed hash, which needs the pepper: run `flask --app "
            "app init-db` (with the service's IVR_HOST_KEY_PEPPER or instance folder)")
    bind.execute(sa.text("UPDATE lockouts SET key = :new WHERE key = :old"),
                 [{"old": key, "new": HASHED + digest(key[len(CLEAR):])} for key in clear])


def downgrade() -> None:
    # A keyed hash cannot be turned back into the PMI: the counters are forgotten (the
    # PMIs start counting afresh, locks included), the callers' are kept.
    op.execute("DELETE FROM lockouts WHERE key LIKE 'pmi-hash:%'")

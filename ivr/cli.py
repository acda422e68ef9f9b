"""Operator commands, on Flask's CLI: ``flask --app app <command>``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import sys
from urllib.parse import urlsplit

import click
from flask import current_app
from sqlalchemy.exc import ProgrammingError
from flask.cli import AppGroup, ScriptInfo, with_appcontext

from . import outbox as sms_outbox
from .desk import directory
from .desk.commands import tickets_cli
from .desk.service import ticket_dict
from .domain.lifecycle import TicketStatus
from .domain.phones import (WITHHELD, as_typed, caller_lockout_key, lockout_name, mask,
                            pmi_digest_of, pmi_lockout_key)
from .extension import ivr, schema_free
from .privacy import MAX_DAYS
from .sim.simulator import HttpTransport, Simulator, UnknownTwiML, WsgiTransport, transcript
from .sim.surge import run_surge
from .storage import (DATABASE_DOWN, UpgradeRefused, database_error, database_unavailable,
                      schema_missing, statement_cancelled)


def check_schema(storage) -> None:
    """Stop a command before it reads or writes a database whose schema is not this
    version's: none yet, or an older one (the upgrade not run: a command would stop
    half-way on a missing column, or write what the upgrade then refuses). A database
    that does not answer is left to the command, which says so in its own terms."""
    try:
        current, head, known = storage.schema_revisions()
    except DATABASE_DOWN:
        return
    if current is None:
        raise click.ClickException("the database has no tables yet: run "
                                   "`flask --app app init-db` first")
    if current != head and known:
        raise click.ClickException(
            f"the database's schema is at revision {current}, older than this version's "
            f"{head}: run `flask --app app init-db` first")


@click.command("init-db")
@with_appcontext
@schema_free()
def init_db():
    """Create or upgrade the database schema (safe to run again)."""
    try:
        ivr().storage.upgrade(ivr().hasher.pmi_lockout_digest)
    except UpgradeRefused as exc:
        raise click.ClickException(f"schema not upgraded: {exc}") from None
    click.echo(f"Database at {ivr().storage.url.render_as_string(hide_password=True)} is up to date.")


accounts_cli = AppGroup("accounts", help="The account directory.")


@accounts_cli.command("import")
@click.argument("path", type=click.Path(dir_okay=False))
def accounts_import(path):
    """Upsert users from a CSV (account_id,plan,user_email,role,pmi,host_key)."""
    try:
        result = directory.import_file(path, ivr().storage, ivr().hasher, ivr().config.lengths)
    except directory.ImportFailed as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Imported {path}: {result.created} created, {result.updated} updated, "
               f"{result.unchanged} unchanged.")


@accounts_cli.command("unlock")
@click.argument("pmi", required=False)
@click.option("--caller", help="Unlock a throttled caller number instead.")
def accounts_unlock(pmi, caller):
    """Clear the verification lock (and failure count) of a PMI or a caller number."""
    if bool(pmi) == bool(caller):
        raise click.UsageError("give a PMI or --caller NUMBER")
    lengths = ivr().config.lengths
    if pmi and not lengths.is_pmi(pmi):
        # The IVR counts failures only for a PMI of these lengths: no other value has a lock.
        raise click.ClickException(f"{as_typed(pmi)} is not a PMI: a PMI is {lengths.pmi_min} to "
                                   f"{lengths.pmi_max} digits (0-9).")
    # A PMI's counter is kept under the keyed hash of its digits, never the digits.
    key = pmi_lockout_key(ivr().hasher.pmi_lockout_digest(pmi)) if pmi \
        else caller_lockout_key(caller)
    if caller and key == caller_lockout_key(WITHHELD) and caller.strip().lower() != WITHHELD:
        raise click.UsageError(
            f"--caller {mask(caller)}: not a phone number in international form (+ and the "
            f"country code); the lock shared by withheld callers is --caller {WITHHELD}")
    with ivr().storage.unit_of_work() as uow:
        cleared = uow.lockouts.clear(key)
    what = lockout_name(key, pmi)
    if cleared:
        logging.getLogger("ivr.accounts").info(
            "operator cleared the lock of %s", "a PMI" if pmi else what)
    click.echo(f"Unlocked {what}." if cleared else f"{what} had no lock or failures.")


@accounts_cli.command("locks")
def accounts_locks():
    """PMIs and caller numbers locked now, with their expiry. A PMI is named when the
    directory holds it; the digits of any other were never stored."""
    now = ivr().service.clock()
    with ivr().storage.unit_of_work(readonly=True) as uow:
        locks = [(lock.key, lock.locked_until, lock.lock_count, lock.attempts_while_locked)
                 for lock in uow.lockouts.current(now)]
        digests = {pmi_digest_of(key) for key, *_ in locks} - {None}
        pmis = uow.accounts.pmis_hashing_to(digests, ivr().hasher.pmi_lockout_digest)
    if not locks:
        click.echo("No locks.")
        return
    click.echo(f"{'locked':<27} {'until (UTC)':<20} {'left':>8} {'locks':>5} {'tries':>5}")
    for key, until, count, tries in locks:
        name = lockout_name(key, pmis.get(pmi_digest_of(key)))
        left = int((until - now).total_seconds() // 60)
        click.echo(f"{name:<27} {until:%Y-%m-%d %H:%M:%S} {left:>6} m {count:>5} {tries:>5}")


@accounts_cli.command("purge-failures")
@click.option("--older-than", "days", type=click.IntRange(1, MAX_DAYS), default=30,
              show_default=True,
              help="Days since the last failure.")
def accounts_purge_failures(days):
    """Forget old failure counts (of PMIs and callers) that hold no lock now."""
    now = ivr().service.clock()
    with ivr().storage.unit_of_work(long_running=True) as uow:
        removed = uow.lockouts.purge(
            now - dt.timedelta(days=days), now)
    click.echo(f"Forgot {removed} failure counts older than {days} days.")


@tickets_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=None,
              help="At most this many, newest first.")
def tickets_list(as_json, limit):
    """Tickets, newest first."""
    with ivr().storage.unit_of_work(readonly=True) as uow:
        rows = [ticket_dict(t) for t in uow.tickets.list(limit)]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        click.echo("No tickets.")
        return
    width = max(len(status.value) for status in TicketStatus)  # callback_requested
    click.echo(f"{'number':<10} {'P':<2} {'region':<16} {'status':<{width}} "
               f"{'created (UTC)':<20} account")
    for row in rows:
        click.echo(f"{row['number']:<10} {row['priority']:<2} {row['region'][:16]:<16} "
                   f"{row['status']:<{width}} {row['created_at'][:19]:<20} {row['account_id']}")


outbox_cli = AppGroup("outbox", help="Text messages waiting to be sent.")


@outbox_cli.command("drain")
@click.option("--watch", is_flag=True, help="Keep draining every few seconds until stopped.")
@schema_free(lambda params: params.get("watch"))  # the sender waits for the schema, as for the database
def outbox_drain(watch):
    """Send pending text messages through Twilio (marks them not sent without credentials)
    and push tickets to the help desk when one is configured."""
    missing = sms_outbox.sms_settings_missing(ivr().settings)
    if missing:
        click.echo(f"Text messages are not sent: {', '.join(missing)} not set "
                   "(each is marked not_sent).")
    if watch:
        click.echo("Draining the SMS outbox every 2 seconds; Ctrl-C to stop.")
        sms_outbox.watch(ivr().storage, ivr().settings, ivr().service, ivr().floor)
        return
    done = sms_outbox.drain_all(ivr().storage, ivr().settings, ivr().service, ivr().floor)
    click.echo(", ".join(f"{name}: {count}" for name, count in done["sms"].items()))
    if "helpdesk" in done:
        click.echo("help desk: " + ", ".join(f"{name}: {n}" for name, n in done["helpdesk"].items()))
    if done["reopened"]:
        click.echo(f"{done['reopened']} tickets stranded in a queue after their calls ended reopened.")
    if done["queues_deleted"]:
        click.echo(f"{done['queues_deleted']} empty per-ticket Twilio queues deleted.")


spool_cli = AppGroup("spool", help="Tickets and statuses kept on disk while the database was down.")


@spool_cli.command("replay")
def spool_replay():
    """Write spooled records to the database (each once; safe to run again)."""
    try:
        result = ivr().service.spool.replay(ivr().service.replay,
                                            transient=database_unavailable)
    except DATABASE_DOWN as exc:
        if schema_missing(exc):  # said for every command by _explained
            raise
        cause, _ = database_error(exc)
        raise click.ClickException(f"the database is unreachable ({cause}); every record not "
                                   "yet written stays in the spool: run this again once it "
                                   "answers") from None
    if result.busy:
        raise click.ClickException("another replay is running")
    where = f" (see {ivr().service.spool.failed})" if result.unreadable else ""
    click.echo(f"Replayed {result.read} records: {result.applied} written, "
               f"{result.already_present} already present, {result.unreadable} set aside"
               f"{where}.")


@spool_cli.command("status")
@schema_free()
def spool_status():
    """How many records wait in the spool."""
    spool = ivr().service.spool
    click.echo(f"{spool.depth()} records waiting in {spool.folder}.")
    set_aside = spool.set_aside()
    if set_aside:
        click.echo(f"{set_aside} records set aside by a replay that could not apply "
                   f"them, in {spool.failed}: read them, and mend or re-enter each by hand.")


@click.command("simulate")
@click.option("--to", "to", help="The number dialled (any notation); needed for one call.")
@click.option("--from", "caller", default="+14155550100", show_default=True,
              help="The caller's number.")
@click.option("--digits", default="", help='Keys per prompt, e.g. "2 1234567890# 123456# 1"; '
                                           '"-" lets a prompt time out.')
@click.option("--url", default=None, help="Drive a running server instead of this process.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--calls", type=click.IntRange(1), help="Surge: drive this many calls of a "
              "realistic mix over all nine numbers (uses the demo directory's users).")
@click.option("--concurrency", type=click.IntRange(1, 512), default=8, show_default=True,
              help="Surge: calls in progress at once.")
@click.option("--seed", type=int, default=1, show_default=True, help="Surge: the mix's seed.")
@click.option("--think", type=click.FloatRange(0, 60), default=0.0, show_default=True,
              help="Surge: seconds each caller listens before answering a prompt.")
@click.option("--engineers", type=click.IntRange(1, 200), default=None,
              help="With --calls: engineers answer through /voice/agent in simulated time; "
                   "reports the waits per priority.")
@with_appcontext
@schema_free(lambda params: params.get("url") is not None)  # the server's database, not ours
def simulate(to, caller, digits, url, as_json, calls, concurrency, seed, think, engineers):
    """Drive one whole call as Twilio would and print what the caller hears, with the
    estimated seconds of speech per prompt and before the queue; with --calls, drive a
    surge and report throughput, latency, failures and the mean and longest listening
    (with --engineers, engineers answer and the waits per priority are reported)."""
    settings = ivr().settings
    app = current_app._get_current_object()
    token = settings.twilio_auth_token or ""
    signing_base = settings.public_url if not url else None
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise click.BadParameter(f"{url[:80]!r}: give the server's address, e.g. "
                                     "http://127.0.0.1:5000", param_hint="--url")

    def transport():
        return HttpTransport(url) if url else WsgiTransport(app)

    recorded = recorded_outcome(ivr().storage)

    if calls and engineers:
        from .sim.engineers import ensure_engineers, run_floor

        ensure_engineers(engineers)
        try:
            report = run_floor(transport(), token, calls, engineers, seed=seed,
                               signing_base=signing_base)
        except OSError as exc:
            if url is None:
                raise
            raise _unreachable(url, exc) from None
        click.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.table())
        if report.errors:
            raise SystemExit(1)
        return
    if calls:
        with click.progressbar(length=calls, label="calls", file=sys.stderr) as bar:
            report = run_surge(transport, token, calls, concurrency, signing_base=signing_base,
                               seed=seed, think=think, progress=bar.update,
                               recorded=recorded)
        click.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.table())
        if report.errors or report.unexpected:
            raise SystemExit(1)
        return
    if not to:
        raise click.UsageError("give --to NUMBER for one call, or --calls N for a surge")
    simulator = Simulator(transport(), token, signing_base=signing_base, recorded=recorded)
    try:
        result = simulator.call(to, caller, digits.split())
    except UnknownTwiML as exc:
        raise click.ClickException(f"the service answered with TwiML the simulator cannot "
                                   f"play: {exc}") from None
    except OSError as exc:
        if url is None:
            raise
        raise _unreachable(url, exc) from None
    shown = dataclasses.replace(result, caller=mask(result.caller))  # as the desk shows callers
    click.echo(shown.to_json() if as_json else transcript(shown))
    if result.outcome == "error":
        raise SystemExit(1)


def recorded_outcome(storage):
    """What the simulator asks once a call has ended: the outcome the service recorded for
    it, from this command's database; None when the call is not there (``--url`` names a
    server on another database) or the database cannot be read."""
    def outcome(call_sid: str) -> str | None:
        try:
            with storage.unit_of_work(readonly=True) as uow:
                record = uow.calls.load(call_sid, lock=False)
        except (*DATABASE_DOWN, ProgrammingError):
            return None
        return record.outcome if record is not None else None

    return outcome


def _unreachable(url: str, exc: BaseException) -> click.ClickException:
    """requests' errors are OSErrors: refused, timed out, no such host. Their own text is
    urllib3's retry report, which buries the reason; the innermost cause is the reason."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    reason = getattr(exc, "strerror", None) or str(exc) or "no answer"
    reason = reason[:1].lower() + reason[1:200]
    return click.ClickException(f"could not reach {url}: {reason} ({type(exc).__name__})")


def explain_database_errors(group: click.Group) -> None:
    """Every command under ``group`` ends in one clear line when the database cannot be
    reached or has no schema yet, instead of a driver's traceback; and checks first that
    the schema is this version's (``check_schema``), unless marked ``schema_free``."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            explain_database_errors(command)
        elif command.callback is not None and not hasattr(command.callback, "__explained__"):
            command.callback = _explained(command.callback)


def _explained(callback):
    free = getattr(callback, "__schema_free__", lambda params: False)

    @functools.wraps(callback)
    def run(*args, **kwargs):
        try:
            if not free(kwargs):
                if not current_app:  # as with_appcontext, which runs inside this
                    context = click.get_current_context()
                    context.with_resource(context.ensure_object(ScriptInfo).load_app()
                                          .app_context())
                check_schema(ivr().storage)
            return callback(*args, **kwargs)
        except (*DATABASE_DOWN, ProgrammingError) as exc:
            cause, reason = database_error(exc)
            if schema_missing(exc):
                raise click.ClickException(
                    f"the database has no tables yet, or older ones ({reason}): run "
                    "`flask --app app init-db` first") from None
            if isinstance(exc, ProgrammingError):
                _failed(exc)
            if statement_cancelled(exc):  # it answered: saying "unreachable" misleads
                raise click.ClickException(
                    f"a statement ran past the database's time limit ({cause}: {reason}); "
                    "the command stopped there. To give this one run no limit, add "
                    "`-c statement_timeout=0` to the options of its IVR_DATABASE_URL") from None
            raise click.ClickException(
                f"the database is unreachable ({cause}: {reason}); the command stopped there") from None
        except (click.ClickException, click.Abort, click.exceptions.Exit):
            raise
        except Exception as exc:
            _failed(exc)

    run.__explained__ = True
    return run


def _failed(exc: Exception) -> None:
    """A command's unforeseen error: its traceback through the log's formatter (long
    numbers cut, as a database quotes a refused row in full), not Python's own, which
    would reach the terminal or cron's mail whole; then exit status 1."""
    context = click.get_current_context(silent=True)
    name = context.command_path.removeprefix(f"{context.find_root().info_name} ") \
        if context is not None else "command"
    logging.getLogger("ivr.cli").error("%s failed", name, exc_info=exc)
    raise SystemExit(1) from None


def register(app) -> None:
    from .helpdesk.commands import helpdesk_cli
    from .privacy import retention_cli

    for command in (init_db, accounts_cli, tickets_cli, outbox_cli, spool_cli, simulate,
                    retention_cli, helpdesk_cli):
        app.cli.add_command(command)

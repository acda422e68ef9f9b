"""Operator commands for the help desk: ``helpdesk status [--json]`` and
``helpdesk retry (ID | --all-failed)``."""

from __future__ import annotations

import json

import click
from flask.cli import AppGroup

from ..extension import ivr
from ..storage import HelpdeskJobRepository
from ..storage.helpdesk import LARGEST_JOB_ID, status_report

helpdesk_cli = AppGroup("helpdesk", help="Tickets pushed to the help desk (Zendesk).")

NOT_CONNECTED = "help desk: not connected (no [helpdesk] section in the configuration)"


@helpdesk_cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def helpdesk_status(as_json):
    """Pushes pending, failed (with the help desk's error) and recently sent."""
    report = status_report(ivr().storage, ivr().config.helpdesk)
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    if not report["connected"]:
        click.echo(NOT_CONNECTED)
        return
    counts = report["counts"]
    click.echo(f"help desk: {report['kind']} at {report['url']}: {counts['pending']} pending, "
               f"{counts['sending']} being sent, {counts['failed']} failed, "
               f"{counts['sent']} sent.")
    for title, rows in (("Failed (retry with `helpdesk retry ID` or --all-failed)",
                         report["failed"]), ("Pending", report["pending"])):
        if not rows:
            continue
        click.echo(f"\n{title}:")
        click.echo(f"{'job':>6} {'ticket':<10} {'push':<20} {'tries':>5}  detail")
        for job in rows:
            detail = job["error"] or ""
            if job["status"] == "pending" and job["next_attempt_at"]:
                detail = f"next try {job['next_attempt_at'][:19]}" + (f"; {detail}" if detail
                                                                      else "")
            click.echo(f"{job['id']:>6} {job['ticket']:<10} {job['kind'] + ' ' + job['event']:<20} "
                       f"{job['attempts']:>5}  {detail}")
    if report["sent"]:
        click.echo("\nLatest sent:")
        for job in report["sent"]:
            click.echo(f"{job['id']:>6} {job['ticket']:<10} {job['kind'] + ' ' + job['event']:<20} "
                       f"{job['error'] or job['url'] or ''}")  # error: a superseded change


@helpdesk_cli.command("retry")
@click.argument("job_id", metavar="[ID]", type=click.IntRange(1, LARGEST_JOB_ID), required=False)
@click.option("--all-failed", is_flag=True, help="Retry every failed push.")
def helpdesk_retry(job_id, all_failed):
    """Send a failed push again (the next drain takes it), or every failed push."""
    if (job_id is None) == (not all_failed):
        raise click.UsageError("give a push ID (see `helpdesk status`) or --all-failed")
    if ivr().config.helpdesk is None:
        raise click.ClickException(NOT_CONNECTED)
    now = ivr().service.clock()
    with ivr().storage.transaction() as session:
        jobs = HelpdeskJobRepository(session)
        if job_id is not None:
            job = jobs.get(job_id)
            if job is None:
                raise click.ClickException(f"no push with id {job_id}")
            if job.status != "failed":
                raise click.ClickException(f"push {job_id} is {job.status}, not failed")
        count = jobs.retry(job_id, now)
    click.echo(f"{count} failed push{'es' if count != 1 else ''} queued again; "
               "`outbox drain` sends them.")

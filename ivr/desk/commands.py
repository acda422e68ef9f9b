"""The support desk's operator commands, on the ``tickets`` group:
``flask --app app tickets show|close|set-priority|export``."""

from __future__ import annotations

import json

import click
from flask.cli import AppGroup

from ..domain.priority import HIGHEST, LOWEST
from ..extension import ivr
from .service import EXPORT_FORMATS, Desk, DeskError, parse_moment

tickets_cli = AppGroup("tickets", help="Support tickets.")


def desk() -> Desk:
    return Desk.of(ivr())


def _run(action, *args, **kwargs):
    try:
        return action(*args, **kwargs)
    except DeskError as exc:
        raise click.ClickException(str(exc)) from None


def _minutes(seconds: int) -> str:
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    hours, minutes = divmod(seconds // 60, 60)
    return f"{sign}{hours} h {minutes:02d} min" if hours else f"{sign}{minutes} min"


def helpdesk_line(state: dict) -> str:
    if state["id"]:
        line = f"#{state['id']} {state['url']}"
    else:
        line = {"not_queued": "not pushed", "failed": "create failed"}.get(
            state["status"], "create pending")
    if state["failed"]:
        line += f"; {state['failed']} push(es) failed: {state['error']}"
    elif state["pending"]:
        line += f"; {state['pending']} push(es) pending"
    return line


@tickets_cli.command("show")
@click.argument("ref", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def tickets_show(ref, as_json):
    """One ticket, by its id or its 8-digit number."""
    view = _run(desk().ticket, ref)
    if as_json:
        click.echo(json.dumps(view, ensure_ascii=False, indent=2))
        return
    left = view["seconds_left"]
    rows = [
        ("ticket", f"{view['number']} (id {view['id']})"),
        ("status", view["status"]),
        ("priority", f"P{view['priority']} {view['priority_name']}, "
                     f"target {view['target_response_minutes']} min"),
        ("time left", f"{_minutes(left)} ({view['urgency']})" if left > 0
         else f"overdue by {_minutes(-left)}"),
        ("region", view["region"]),
        ("account", f"{view['account_id']} {view['user_email']}"),
        ("caller", view["caller"]),
        ("callback number", view["callback_number"] or "-"),
        ("created (UTC)", view["created_at"]),
        ("acknowledged", view["acknowledged_at"] or "-"),
        ("connected", view["connected_at"] or "-"),
        ("closed", view["closed_at"] or "-"),
        ("call", view["call_sid"]),
        ("engineer", view.get("engineer") or "-"),
        ("callback tries", view.get("callback_attempts", 0)),
    ]
    if "helpdesk" in view:  # the ticket in the help desk (issue 9)
        rows.append(("help desk", helpdesk_line(view["helpdesk"])))
    for name, value in rows:
        click.echo(f"{name + ':':<17}{value}")
    for action in view.get("actions", []):
        click.echo(f"  {action['at'][:19]} {action['actor']}: {action['action']}"
                   + (f" ({action['detail']})" if action["detail"] else ""))


@tickets_cli.command("close")
@click.argument("ref", metavar="ID")
def tickets_close(ref):
    """Close a ticket (from any status; a closed ticket stays closed)."""
    view, changed = _run(desk().close, ref)
    click.echo(f"Ticket {view['number']} {'closed' if changed else 'was already closed'}.")


@tickets_cli.command("set-priority")
@click.argument("ref", metavar="ID")
@click.argument("priority", type=click.IntRange(HIGHEST, LOWEST))
def tickets_set_priority(ref, priority):
    """Reclassify a ticket; its target response time follows the configured priority."""
    view, changed = _run(desk().set_priority, ref, priority)
    state = "is now" if changed else "was already"
    click.echo(f"Ticket {view['number']} {state} P{view['priority']} {view['priority_name']} "
               f"(target {view['target_response_minutes']} min).")


@tickets_cli.command("export")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="csv",
              show_default=True)
@click.option("--since", default=None, metavar="DATE",
              help="Tickets created on or after this date (YYYY-MM-DD) or ISO time; default all.")
@click.option("--output", "-o", type=click.File("w", encoding="utf-8"), default="-",
              help="Write to this file instead of standard output.")
def tickets_export(fmt, since, output):
    """Tickets, oldest first, as CSV or JSON (callback numbers masked)."""
    moment = _run(parse_moment, since, "--since") if since else None
    for piece in _run(desk().export, fmt, moment):
        output.write(piece)

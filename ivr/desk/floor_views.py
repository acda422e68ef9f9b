"""Engineers and callbacks on the desk's three faces: the ``engineers`` commands and
``tickets callback``, ``POST /api/tickets/ID/callback``, and the dashboard's floor page
("Waiting now", "Callbacks due") with its Call back buttons."""

from __future__ import annotations

import json

import click
from flask import (
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.cli import AppGroup

from ..extension import ivr, schema_free
from .api import api, json_object
from .callbacks import Callbacks
from .commands import tickets_cli
from .dashboard import actor, admin
from ..domain.engineers import ADMIN
from .engineers import Engineers
from .service import BadRequest, DeskError

HTTP_CLIENT = "twilio_http_client"  # app.extensions key: tests put a recording client here


def callbacks() -> Callbacks:
    return Callbacks.of(ivr(), http_client=current_app.extensions.get(HTTP_CLIENT))


def _run(action, *args, **kwargs):
    try:
        return action(*args, **kwargs)
    except DeskError as exc:
        raise click.ClickException(str(exc)) from None


# -- commands ----------------------------------------------------------------------------

engineers_cli = AppGroup("engineers", help="Engineers: who answers the engineer line.")


@engineers_cli.command("add")
@click.argument("name")
@click.option("--phone", help="Their phone in international form (+81...).")
@click.option("--client", "client", metavar="IDENTITY", help="Their Twilio Client identity.")
@click.option("--languages", default="", help="Caller languages they take, e.g. ja,en "
              "(default all); the first is the language they hear.")
@click.option("--queues", default="", help="Queue groups they take, e.g. support-jp,support-apac "
              "(default all).")
def engineers_add(name, phone, client, languages, queues):
    """Add an engineer and print their personal desk token (shown only this once)."""
    engineer, token = _run(Engineers.of(ivr()).add, name, phone=phone, client=client,
                           languages=languages, queues=queues)
    click.echo(f"Engineer {engineer.name} added. Their desk token (shown only now):")
    click.echo(token)


# An upgrade refused on engineers named alike (0012) asks for `engineers remove`: it and
# `engineers list` run on the schema before it.
@engineers_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@schema_free()
def engineers_list(as_json):
    """Engineers, by name."""
    rows = [e.as_dict() for e in Engineers.of(ivr()).list()]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        click.echo("No engineers.")
        return
    click.echo(f"{'name':<20} {'reached at':<24} {'languages':<12} queues")
    for row in rows:
        reach = row["phone"] or f"client:{row['client']}"
        click.echo(f"{row['name'][:20]:<20} {reach[:24]:<24} "
                   f"{','.join(row['languages']) or 'all':<12} {','.join(row['queues']) or 'all'}")


@engineers_cli.command("remove")
@click.argument("name")
@schema_free()
def engineers_remove(name):
    """Remove an engineer; their token stops working. What they did stays on the tickets."""
    _run(Engineers.of(ivr()).remove, name)
    click.echo(f"Engineer {name} removed.")


@engineers_cli.command("rotate-token")
@click.argument("name")
def engineers_rotate_token(name):
    """Give an engineer a new desk token; the old one stops working at once."""
    token = _run(Engineers.of(ivr()).rotate_token, name)
    click.echo(f"New desk token for {name} (shown only now):")
    click.echo(token)


@engineers_cli.command("calls-ended")
@click.argument("name")
def engineers_calls_ended(name):
    """Say an engineer's calls have ended when Twilio's reports of their end were lost:
    callbacks may then be placed with her again."""
    numbers, callbacks = _run(Engineers.of(ivr()).calls_ended, name, ADMIN)
    if numbers:
        click.echo(f"{name} is no longer counted as talking to the caller of ticket "
                   + ", ".join(numbers) + ".")
    if callbacks:
        click.echo(f"{name} is no longer counted as on the callback of ticket "
                   + ", ".join(callbacks) + ".")
    if not numbers and not callbacks:
        click.echo(f"{name} was not counted as talking to a caller on the engineer line "
                   "or on a callback.")


@tickets_cli.command("callback")
@click.argument("ref", metavar="ID")
@click.option("--engineer", help="Who takes the call (default: the only engineer).")
def tickets_callback(ref, engineer):
    """Place a callback: the engineer's phone rings, then the customer's."""
    if not engineer:
        names = [e.name for e in Engineers.of(ivr()).list()]
        if len(names) != 1:
            raise click.UsageError("give --engineer NAME (there is not exactly one engineer)")
        engineer = names[0]
    attempt = _run(callbacks().place, ref, engineer, ADMIN)
    click.echo(f"Callback attempt {attempt['id']} placed: ringing {engineer} first.")


# -- API ---------------------------------------------------------------------------------


@api.post("/tickets/<ref>/callback")
def place_callback(ref: str):
    """Body {"engineer": "NAME"} with the admin token; a personal token places it for its
    owner (and may name only them)."""
    body = json_object('{"engineer": "NAME"}', optional=True)
    if set(body) - {"engineer"}:
        raise BadRequest('send a JSON object like {"engineer": "NAME"}')
    named = body.get("engineer")
    if named is not None and not isinstance(named, str):
        raise BadRequest("engineer: give the engineer's name as a string")
    if g.engineer is not None:
        if named not in (None, g.engineer):
            return jsonify(error="a personal token places callbacks only for its owner"), 403
        named = g.engineer
    if not named:
        raise BadRequest('engineer: name who takes the call, e.g. {"engineer": "aiko"}')
    return jsonify(callbacks().place(ref, named, g.actor)), 201


# -- dashboard ---------------------------------------------------------------------------


@admin.context_processor
def floor_helpers():
    def floor_engineers() -> list[str]:
        """Who may take a callback from this session: any engineer for the admin, else
        the signed-in engineer."""
        if actor() != ADMIN:
            return [actor()]
        return [e.name for e in Engineers.of(ivr()).list()]
    return {"floor_engineers": floor_engineers}


@admin.get("/floor")
def floor():
    """Waiting now and Callbacks due; the page reloads itself every few seconds."""
    now = ivr().service.clock()
    rows, total = ivr().floor.waiting()
    waiting = [{
        "number": t.number, "priority": t.priority,
        "priority_name": ivr().config.priority(t.priority).name,
        "waited": int((now - w.since).total_seconds()), "language": c.language,
        "region": t.region, "group": w.group, "engineer": claimed,
    } for t, c, w, claimed in rows]
    engineers = [e.name for e in Engineers.of(ivr()).list()] if actor() == ADMIN else [actor()]
    return render_template("admin/floor.html", waiting=waiting, due=callbacks().due(),
                           engineers=engineers, refresh=5, waiting_total=total)


@admin.post("/tickets/<ref>/callback")
def callback(ref: str):
    engineer = actor() if actor() != ADMIN else request.form.get("engineer", "").strip()
    if not engineer:
        flash("Choose the engineer who takes the call.")
        return redirect(url_for("admin.floor"))
    try:
        attempt = callbacks().place(ref, engineer, actor())
    except DeskError as exc:
        flash(f"Callback not placed: {exc}")
        return redirect(request.form.get("next") == "ticket"
                        and url_for("admin.ticket", ref=ref) or url_for("admin.floor"))
    flash(f"Calling {engineer} now for ticket {ref} (attempt {attempt['id']}).")
    if request.form.get("next") == "ticket":
        return redirect(url_for("admin.ticket", ref=ref))
    return redirect(url_for("admin.floor"))

"""The help-desk sender, run by ``outbox drain [--watch]`` beside the SMS sender.

Each round claims due jobs in one short transaction (at most one per ticket: the oldest
not yet sent), pushes them with no transaction open, and records each result in its own
short transaction as soon as it is known. A sender killed at any point leaves its jobs
claimed; their lease runs out and the next sender sends them again, which is safe: a
create carries the same Idempotency-Key and body, an update sets the same values and
skips a note that is already there.

A round of slow pushes can outlast the lease on the jobs it has not reached yet, and
another sender then takes them, pushes them and moves on to the tickets' next changes. So
each job's claim is renewed just before its push, and a job another sender has taken is
left to it: pushed late, an old change would overwrite a newer one in the help desk.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import random
from dataclasses import dataclass, replace
from typing import Callable

from .. import metrics
from ..config import IvrConfig, Settings
from ..storage import HelpdeskJobRepository, Storage, utcnow
from . import pushes
from .base import HelpDesk, NewTicket, Result, TicketChange
from .zendesk import Zendesk

log = logging.getLogger("ivr.helpdesk")

RESULTS = ("sent", "superseded", "retry", "rate_limited", "failed")
# Transient failures in a row after which the rest of a round is put off: a help desk
# that does not answer should not hold the sender (and the SMS beside it) for long.
GIVE_UP_ROUND_AFTER = 3


@dataclass
class Work:
    job_id: int
    ticket_id: int
    ticket: str  # the ticket number, for logs
    kind: str
    payload: dict | None
    remote_id: str | None
    attempts: int
    failures: int
    claimed_at: dt.datetime
    first_try_age: float
    problem: str | None = None
    priority: int | None = None  # the level a priority change sets
    converted: bool = False  # a create made of an update: no create of the ticket was left


def _tally(counts: dict[str, int], outcome: str) -> None:
    counts[outcome] += 1
    metrics.HELPDESK_PUSHES.labels(outcome).inc()


def connect(config: IvrConfig, settings: Settings) -> HelpDesk:
    """The configured help desk's client."""
    return Zendesk.from_config(config.helpdesk, settings.zendesk_api_token or "")


class Sender:
    def __init__(self, storage: Storage, config: IvrConfig, settings: Settings, *,
                 clock: Callable[[], dt.datetime] = utcnow, desk: HelpDesk | None = None,
                 jitter: Callable[[], float] = random.random):
        if config.helpdesk is None:
            raise ValueError("no help desk is configured")
        self.storage = storage
        self.config = config
        self.policy = config.helpdesk
        self.desk = desk or connect(config, settings)
        self.clock = clock
        self.jitter = jitter

    def drain(self, batch: int = 20, rounds: int = 100) -> dict[str, int]:
        """Push everything due now, once; counts by result. A ticket's next job becomes
        due as soon as the one before it is sent, so it goes out in a later round."""
        counts = dict.fromkeys(RESULTS, 0)
        lease = dt.timedelta(seconds=self.policy.lease_seconds)
        for _ in range(rounds):
            now = self.clock()
            with self.storage.transaction() as session:
                jobs = HelpdeskJobRepository(session)
                work = [self._prepare(jobs, job, now) for job in jobs.claim(batch, now, lease)]
            if not work:
                break
            failing, paused = 0, None
            for item in work:
                if paused is not None:
                    result = paused
                elif failing >= GIVE_UP_ROUND_AFTER:
                    result = Result("retry", message=f"put off: {self.desk.name} did not "
                                    "answer the pushes before it", tried=False)
                elif (held := self._renew(item)) != "held":
                    if held == "superseded":
                        _tally(counts, held)
                    continue
                else:
                    result = self._push(item)
                    failing = failing + 1 if result.outcome == "retry" \
                        and not result.rate_limited else 0
                    if result.rate_limited:
                        paused = self._pause(result, item)
                        result = replace(result, retry_after=paused.retry_after)
                with self.storage.transaction() as session:
                    outcome = self._record(HelpdeskJobRepository(session), item, result)
                if outcome:
                    _tally(counts, outcome)
            if failing >= GIVE_UP_ROUND_AFTER or paused is not None:
                break
        return counts

    def _pause(self, limited: Result, item: Work) -> Result:
        """The help desk said "too many requests": no request goes to it until it said to
        come back, from this sender or another. The rest of this round is put off with the
        same wait, and so is every other pending push."""
        delay = self.rate_limit_wait(limited.retry_after, item)
        until = self.clock() + dt.timedelta(seconds=delay)
        with self.storage.transaction() as session:
            held = HelpdeskJobRepository(session).defer_pending(until)
        log.info("help desk: %s asked to slow down; no push for %.0f s (%s other pushes "
                 "held)", self.desk.name, delay, held)
        return Result("retry", message=f"put off: {self.desk.name} asked to wait (rate "
                      "limit)", retry_after=delay, rate_limited=True, tried=False)

    # -- one job -----------------------------------------------------------------------

    def _prepare(self, jobs: HelpdeskJobRepository, job, now: dt.datetime) -> Work:
        """Inside the claim's transaction: the request the job sends, built once and kept,
        so that every retry sends exactly the same."""
        ticket, call = jobs.context(job.ticket_id)
        if job.kind == "update" and not jobs.has_create(job.ticket_id):
            # A ticket logged before the help desk was connected, or whose failed create
            # retention has dropped: its first change creates it there, as it stands now.
            job.kind, job.event, job.dedupe, job.payload = "create", "created", "create", None
        problem = None
        if job.payload is None:
            try:
                if job.kind == "create":
                    payload = pushes.new_ticket(ticket, call, self.config).as_dict()
                else:
                    payload = pushes.change(job.id, job.event, job.data, job.created_at,
                                            self.config).as_dict()
                job.payload = json.dumps(payload, sort_keys=True)
            except (ValueError, KeyError, TypeError) as exc:
                problem = f"cannot build the push: {exc}"
        payload = json.loads(job.payload) if job.payload else None
        return Work(
            job_id=job.id, ticket_id=job.ticket_id, ticket=ticket.number, kind=job.kind,
            payload=payload,
            remote_id=jobs.remote_id(job.ticket_id) if job.kind == "update" else None,
            attempts=job.attempts, failures=job.failures, claimed_at=now,
            first_try_age=(now - (job.first_attempt_at or now)).total_seconds(),
            problem=problem,
            priority=payload.get("priority") if payload and job.event == "priority" else None,
            # A create queued as such carries no change; one made of an update keeps it.
            converted=job.kind == "create" and job.data is not None)

    def _renew(self, item: Work) -> str:
        """Hold the job for its push ("held"), unless another sender has taken it since
        the claim ("taken"). A priority change the ticket has moved on from (a newer one
        made on the desk, queued behind it, or one made in the help desk, which already
        shows it) is closed unsent ("superseded"): sent late, it would put the older
        priority back there."""
        now = self.clock()
        with self.storage.transaction() as session:
            jobs = HelpdeskJobRepository(session)
            if not jobs.renew(item.job_id, item.claimed_at, now):
                log.info("help desk: job %s was taken by another sender; not pushed here",
                         item.job_id)
                return "taken"
            item.claimed_at = now
            if item.priority is not None:
                current = jobs.priority_of(item.ticket_id)
                if current != item.priority:
                    jobs.record(item.job_id, now, status="sent", sent_at=now,
                                last_error=f"not sent: superseded (the ticket is P{current} "
                                           "now)")
                    log.info("help desk: ticket %s's change to P%s not pushed: it is P%s now "
                             "(job %s)", item.ticket, item.priority, current, item.job_id)
                    return "superseded"
        return "held"

    def _push(self, item: Work) -> Result:
        """The request, with no transaction open."""
        if item.problem:
            return Result.failed(item.problem)
        retried = item.attempts > 1
        if item.kind == "create":
            ticket = NewTicket.from_dict(item.payload)
            if not item.converted:
                result = self.desk.create(ticket, retried=retried,
                                          first_try_age=item.first_try_age)
            else:
                # A create given up on time-outs may have made the ticket all the same
                # before retention dropped it, and the help desk has long forgotten its
                # Idempotency-Key: asked as a create first tried long ago, it looks the
                # ticket up before making one.
                result = self.desk.create(ticket, retried=True, first_try_age=math.inf)
                if result.outcome == "ok" and result.found:
                    # Found, it still shows the state of that old create: bring it to
                    # how the ticket stands now, the change that led here included.
                    brought = self.desk.update(
                        result.remote_id, pushes.as_it_stands(ticket, item.job_id),
                        retried=retried)
                    if brought.outcome != "ok":
                        return brought
            if result.outcome == "ok" and not result.remote_id:
                return Result.retry(f"{self.desk.name} answered without a ticket id")
            return result
        if not item.remote_id:
            return Result.failed(f"the ticket has no {self.desk.name} id to update")
        return self.desk.update(item.remote_id, TicketChange.from_dict(item.payload),
                                retried=retried)

    def _record(self, jobs: HelpdeskJobRepository, item: Work, result: Result) -> str | None:
        now = self.clock()
        if result.outcome == "ok":
            values = {"status": "sent", "sent_at": now, "last_error": None, "failures": 0}
            if item.kind == "create":
                values["remote_id"] = result.remote_id
            outcome = "sent"
            log.info("help desk: ticket %s %s pushed (job %s, %s ticket %s)", item.ticket,
                     "create" if item.kind == "create" else "update", item.job_id,
                     self.desk.name, result.remote_id or item.remote_id)
        elif result.outcome == "failed":
            values, outcome = {"status": "failed", "last_error": result.message}, "failed"
            log.warning("help desk: push of ticket %s failed (job %s): %s", item.ticket,
                        item.job_id, result.message)
        else:
            failures = item.failures + (1 if result.tried and not result.rate_limited else 0)
            if failures >= self.policy.max_attempts:
                values = {"status": "failed", "failures": failures,
                          "last_error": f"gave up after {failures} failed tries: "
                                        f"{result.message}"}
                outcome = "failed"
                log.warning("help desk: push of ticket %s failed (job %s) after %s tries: %s",
                            item.ticket, item.job_id, failures, result.message)
            else:
                # A rate limit's wait was set when the round was paused; a failing server's
                # Retry-After lengthens the back-off, never shortens it (Retry-After: 0
                # would send the push again in this drain, round after round, until it
                # failed for good), and never beyond max_backoff_seconds.
                delay = self.backoff(failures)
                if result.retry_after is not None:
                    delay = result.retry_after if result.rate_limited \
                        else min(max(result.retry_after, delay),
                                 self.policy.max_backoff_seconds)
                values = {"status": "pending", "failures": failures,
                          "last_error": result.message,
                          "next_attempt_at": now + dt.timedelta(seconds=delay)}
                outcome = "rate_limited" if result.rate_limited else "retry"
                log.info("help desk: push of ticket %s will be tried again in %.0f s (job %s): "
                         "%s", item.ticket, delay, item.job_id, result.message)
        if not jobs.record(item.job_id, item.claimed_at, **values):
            log.warning("help desk: job %s was taken by another sender; result not recorded",
                        item.job_id)
            return None
        return outcome

    def backoff(self, failures: int) -> float:
        """Exponential back-off with jitter: the base doubled per failure, capped, then
        a random share between a half and all of it, so retries of many jobs spread out."""
        return self._ceiling(failures) * (0.5 + 0.5 * self.jitter())

    def _ceiling(self, failures: int) -> float:
        return min(self.policy.max_backoff_seconds,
                   self.policy.backoff_seconds * 2 ** min(max(failures, 1) - 1, 30))

    def rate_limit_wait(self, asked: float | None, item: Work) -> float:
        """How long a rate limit holds every push: the help desk's Retry-After, but at
        least the back-off, and at most max_backoff_seconds.

        A 429 does not count as a failure, so it is never given up on: "Retry-After: 0"
        (or a date already past, the clocks apart) would send the push again every round
        for ever. The least wait grows as the back-off does, with this push's tries that
        did not count as failures (rate limits, and rounds put off), and has no jitter:
        every push waits for the same moment anyway. A Retry-After far beyond any rate
        limit window (a proxy's mistake) must not stop every push, P1s included, for
        longer than any other retry waits."""
        least = self._ceiling(item.attempts - item.failures)
        return min(max(asked or 0.0, least), self.policy.max_backoff_seconds)

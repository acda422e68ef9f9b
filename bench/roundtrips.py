"""What a PostgreSQL transaction costs the caller at a caller's pace, by round trips.

A webhook's transaction on PostgreSQL is BEGIN, a locking load, a save and COMMIT: four
round trips. This measures, on the server the bench uses, the wall time of

- one SELECT (one round trip),
- that transaction as four round trips (how the service runs it),
- the same transaction in two round trips ("BEGIN; SELECT ... FOR UPDATE", then
  "UPDATE ...; COMMIT", as one simple query each): the least any pipelining could reach,
- each transaction again with its COMMIT's WAL flush turned off (``synchronous_commit``),

back to back and with a pause between transactions (a caller's pace: every request finds
the backend idle). It answers whether fewer round trips would shorten a paced webhook.

    .venv/bin/python bench/roundtrips.py [--url postgresql://...] [--repeat 400]
"""

from __future__ import annotations

import argparse
import time

import psycopg

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
TABLE = "bench_roundtrips"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="a libpq URL (not SQLAlchemy's)")
    parser.add_argument("--repeat", type=int, default=400, help="transactions per figure")
    parser.add_argument("--pause", type=float, default=0.03,
                        help="seconds between transactions at a caller's pace")
    args = parser.parse_args()

    connection = psycopg.connect(args.url, autocommit=True)
    connection.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (k text PRIMARY KEY, v bigint)")
    connection.execute(f"INSERT INTO {TABLE} VALUES ('a', 0) ON CONFLICT DO NOTHING")
    client = psycopg.ClientCursor(connection)  # binds client-side: several statements at once
    key = {"k": "a"}

    def one_select(commit_off: bool) -> None:
        client.execute(f"SELECT v FROM {TABLE} WHERE k = %(k)s", key)
        client.fetchone()

    def four_round_trips(commit_off: bool) -> None:
        # (No parameters: one simple query, so the SET costs no round trip of its own.)
        connection.execute("BEGIN; SET LOCAL synchronous_commit TO off" if commit_off
                           else "BEGIN")
        value = connection.execute(f"SELECT v FROM {TABLE} WHERE k = %(k)s FOR UPDATE",
                                   key).fetchone()[0]
        connection.execute(f"UPDATE {TABLE} SET v = %(v)s WHERE k = %(k)s",
                           {"v": value + 1, **key})
        connection.execute("COMMIT")

    def two_round_trips(commit_off: bool) -> None:
        off = "SET LOCAL synchronous_commit TO off; " if commit_off else ""
        client.execute(f"BEGIN; {off}SELECT v FROM {TABLE} WHERE k = %(k)s FOR UPDATE", key)
        while client.description is None:  # to the SELECT's result
            client.nextset()
        value = client.fetchone()[0]
        client.execute(f"UPDATE {TABLE} SET v = %(v)s WHERE k = %(k)s; COMMIT",
                       {"v": value + 1, **key})

    def timed(run, commit_off: bool, pause: float) -> tuple[float, float, float]:
        for _ in range(20):
            run(commit_off)
        times = []
        for _ in range(args.repeat):
            if pause:
                time.sleep(pause)
            start = time.perf_counter()
            run(commit_off)
            times.append(time.perf_counter() - start)
        times.sort()
        pick = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1000  # noqa: E731
        return pick(0.5), pick(0.95), pick(0.99)

    print(f"{args.repeat} each; wall time at the client, ms (p50 / p95 / p99)")
    print(f"| what | back to back | {args.pause * 1000:g} ms between (a caller's pace) |")
    print("|---|---|---|")
    cases = [("one SELECT", one_select, False),
             ("transaction, 4 round trips", four_round_trips, False),
             ("transaction, 2 round trips", two_round_trips, False),
             ("4 round trips, no WAL flush at COMMIT", four_round_trips, True),
             ("2 round trips, no WAL flush at COMMIT", two_round_trips, True)]
    try:
        for name, run, commit_off in cases:
            figures = [" / ".join(f"{v:.2f}" for v in timed(run, commit_off, pause))
                       for pause in (0.0, args.pause)]
            print(f"| {name} | {figures[0]} | {figures[1]} |")
    finally:
        connection.execute(f"DROP TABLE IF EXISTS {TABLE}")
        connection.close()


if __name__ == "__main__":
    main()

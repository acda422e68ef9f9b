"""Where a webhook's time goes: whole calls in-process (no HTTP, one thread) under
pyinstrument, on SQLite. Writes bench/results/profile.txt and prints the top of it."""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyinstrument import Profiler  # noqa: E402

from ivr import create_app  # noqa: E402
from ivr.desk.directory import import_file  # noqa: E402
from ivr.config import Settings  # noqa: E402
from ivr.sim.simulator import Simulator, WsgiTransport  # noqa: E402
from ivr.sim.surge import plan_call  # noqa: E402


def main(calls: int = 400) -> None:
    import logging

    logging.getLogger("ivr").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(config_path=ROOT / "config" / "ivr.toml",
                            database_url=f"sqlite:///{tmp}/profile.db",
                            instance_path=Path(tmp) / "instance", twilio_auth_token="profile",
                            host_key_pepper="profile")
        app = create_app(settings)
        ivr = app.extensions["ivr"]
        ivr.storage.upgrade()
        import_file(ROOT / "config" / "demo-accounts.csv", ivr.storage, ivr.hasher,
                    ivr.config.lengths)
        logging.getLogger("ivr").setLevel(logging.WARNING)
        simulator = Simulator(WsgiTransport(app), "profile")
        rng = random.Random(5)
        plans = [plan_call(n, rng) for n in range(calls + 50)]
        for _kind, to, caller, digits in plans[:50]:  # warm up
            simulator.call(to, caller, digits)
        half = (len(plans) - 50) // 2
        requests, started = 0, time.perf_counter()
        for _kind, to, caller, digits in plans[50:50 + half]:
            requests += simulator.call(to, caller, digits).requests
        plain_ms = 1000 * (time.perf_counter() - started) / requests
        print(f"{requests} requests, {plain_ms:.2f} ms each in-process (no profiler)")
        profiler = Profiler(interval=0.0005)
        requests = 0
        started = time.perf_counter()
        profiler.start()
        for _kind, to, caller, digits in plans[50 + half:]:
            requests += simulator.call(to, caller, digits).requests
        profiler.stop()
        seconds = time.perf_counter() - started
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    out = ROOT / "bench" / "results" / "profile.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{plain_ms:.2f} ms per request in-process without the profiler\n"
                   f"{requests} requests in {seconds:.2f} s in-process "
                   f"({1000 * seconds / requests:.2f} ms each, profiler on)\n\n{text}")
    print(f"{requests} requests, {1000 * seconds / requests:.2f} ms each in-process (profiler on)")
    print("\n".join(text.splitlines()[:80]))


if __name__ == "__main__":
    main(int(os.environ.get("PROFILE_CALLS", "400")))

"""gunicorn settings for the benchmark: the project's own gunicorn.conf.py, plus hooks that
let each worker note, with wall-clock timestamps, how long each request spent inside the
worker (from the request parsed to the response written) and every garbage collection
pause. Written to $IVR_BENCH_WORKER_STATS/<pid>.json when the worker exits; bench/run.py
splits them by phase. Comparing the time inside the worker with the time the client waited
tells queueing (waiting for a free worker) apart from time spent handling the request."""

import gc
import json
from array import array
import os
import runpy
import time
from pathlib import Path

_base = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))
globals().update({k: v for k, v in _base.items() if not k.startswith("__")})

# Compact, so that they barely add to the resident memory the bench reads: 24 bytes per
# request (time, duration, path number).
_requests = array("d")
_paths: dict[str, int] = {}
_collections: list = []


def post_fork(server, worker):
    _base["post_fork"](server, worker)  # the project's own hook: a worker dies with its master
    del _requests[:]
    _collections.clear()
    started = {}

    def collected(phase, info):
        if phase == "start":
            started["at"] = time.perf_counter()
        elif "at" in started:
            _collections.append((time.time(), info["generation"],
                                 time.perf_counter() - started.pop("at")))

    gc.callbacks.append(collected)


def pre_request(worker, req):
    worker.bench_started = time.perf_counter()


def post_request(worker, req, environ, resp):
    started = getattr(worker, "bench_started", None)
    if started is not None:
        path = _paths.setdefault(req.path.split("?", 1)[0], len(_paths))
        _requests.extend((time.time(), time.perf_counter() - started, path))


def worker_exit(server, worker):
    folder = os.environ.get("IVR_BENCH_WORKER_STATS")
    if folder:
        Path(folder, f"{os.getpid()}.json").write_text(
            json.dumps({"requests": _requests.tolist(), "paths": _paths,
                        "collections": _collections}))

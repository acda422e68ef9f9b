"""gunicorn settings for the support line (read automatically from this folder).

Command-line flags (--bind, --workers) override these. Prometheus counters from every
worker are kept in one folder, so /metrics adds them up: PROMETHEUS_MULTIPROC_DIR when
the operator sets it (shared with the sender), else a folder of this master process."""

import os
import shutil
from pathlib import Path



def _refuse(name: str, problem: str) -> None:
    """Stop gunicorn with one line naming the setting (not a traceback of this file)."""
    raise SystemExit(f"Configuration error: environment: {name}: {problem}")


def _workers() -> int:
    text = os.environ.get("IVR_WORKERS")
    if text is None:
        return os.cpu_count() or 2
    # Zero or fewer would start a master that listens and never answers. ASCII digits
    # only, as ivr/domain/digits.py has it: '\u00b2' passes isdigit() but int() refuses it
    # (this file imports nothing of the project's when gunicorn reads it).
    if not (text.strip().isascii() and text.strip().isdigit()) or int(text) < 1:
        _refuse("IVR_WORKERS", f"{text[:20]!r} is not a whole number of workers, 1 or more")
    return int(text)


def _worker_class() -> str:
    name = os.environ.get("IVR_WORKER_CLASS", "asgi")
    from gunicorn.util import load_class

    try:
        load_class(name, default="asgi", section="gunicorn.workers")
    except Exception:  # gunicorn's own error is a traceback in brackets
        _refuse("IVR_WORKER_CLASS", f"{name[:40]!r} is not a gunicorn worker class "
                "(asgi, the default, or sync behind a proxy that buffers request bodies)")
    return name


def _bind() -> str:
    address = os.environ.get("IVR_BIND", "127.0.0.1:5000")
    # Empty (a unit file's IVR_BIND=${BIND} with BIND unset), gunicorn binds nothing and
    # boots worker after worker, each saying "No servers could be started".
    if not address.strip():
        _refuse("IVR_BIND", "empty; give the address to listen on (HOST:PORT, e.g. "
                "0.0.0.0:8000), or leave it unset for 127.0.0.1:5000")
    return address


bind = _bind()
workers = _workers()
# The asyncio worker reads each request whole before the app runs (ivr/edge.py), so slow
# clients hold a coroutine, not a worker. IVR_WORKER_CLASS=sync restores plain workers
# (only behind a proxy that buffers request bodies, such as nginx).
worker_class = _worker_class()
worker_connections = 1000
timeout = 30
# A request's head must be whole this long after its connection opens or after the last
# answer on it, else the connection is closed (ivr/edge.py HeadDeadline): idle and
# byte-a-second connections do not pile up until the worker runs out of file descriptors.
keepalive = 5
# X-Forwarded-* is trusted only by the app, only with IVR_TRUSTED_PROXIES (ProxyFix):
# gunicorn itself would trust X-Forwarded-Proto from 127.0.0.1 by default.
forwarded_allow_ips = os.environ.get("IVR_FORWARDED_ALLOW_IPS", "")
# Where `make run` finds a master left behind by a crash.
pidfile = os.environ.get("IVR_PIDFILE")
# Twilio waits 15 s for a webhook; a worker stuck longer than that is no use to a caller.
graceful_timeout = 10
accesslog = os.environ.get("IVR_ACCESS_LOG")  # e.g. "-"; request bodies are never logged
# gunicorn's control socket sits at one path per user ($XDG_RUNTIME_DIR or ~/.gunicorn):
# a second server on the host takes it over, and stopping either deletes it. The service
# is run by its pid file and signals (Makefile), so none is opened.
control_socket_disable = True

# Empty counts as unset, as the app reads it (ivr/config.py Settings.from_env).
_metrics_root = Path(os.environ.get("IVR_INSTANCE_PATH") or "instance") / "metrics"
# A PROMETHEUS_MULTIPROC_DIR the operator set may be shared with the sender, whose counts
# (ivr_helpdesk_pushes_total) live there too: it is theirs, and never emptied here.
# Without one, this master counts in a folder of its own, made for it alone.
_own_metrics_dir = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _own_metrics_dir = _metrics_root / str(os.getpid())
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_own_metrics_dir)


def on_starting(server):
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if folder == _own_metrics_dir:  # a master before this one may have had the same pid
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    # Folders of masters that are gone hold stale counts: remove them.
    for other in _metrics_root.glob("*"):
        if other != folder and other.name.isdigit() and not _alive(int(other.name)):
            shutil.rmtree(other, ignore_errors=True)


def when_ready(server):
    """The configuration is checked once here, in the master, before any worker boots: a
    refusal is one message and gunicorn's "app failed to load" status. Left to the workers
    alone (``_halt_on_a_refused_configuration``), two that refused at the same instant
    made gunicorn raise again while it was stopping: a traceback and exit status 1."""
    from ivr import load_configuration

    _stopping_on_a_refusal(load_configuration, server.pidfile)


def _stopping_on_a_refusal(load, pidfile=None) -> None:
    """Run ``load``; if the app refuses its configuration (SystemExit with a message),
    say the message and exit with gunicorn's "app failed to load" status."""
    import sys

    from gunicorn.arbiter import Arbiter

    try:
        load()
    except SystemExit as refused:
        if not isinstance(refused.code, str):
            raise
        print(refused.code, file=sys.stderr, flush=True)
        if pidfile is not None:
            pidfile.unlink()
        sys.exit(Arbiter.APP_LOAD_ERROR)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def post_fork(server, worker):
    """A worker dies with its master: after `kill -9` of the master no orphan keeps
    serving (and holding the port), so a new server can bind at once. Linux tells the
    worker by signal; elsewhere the worker's own check of its parent does, within seconds."""
    _die_with_parent()
    _halt_on_a_refused_configuration(worker)


def _halt_on_a_refused_configuration(worker) -> None:
    """The app refuses a configuration it cannot use (config/ivr.toml, the environment) by
    exiting with its message (``ivr.create_app``). The master checks it before any worker
    boots (``when_ready``); one that changed since (a worker booted after a reload) is
    refused here. From a worker that was only a worker exiting: the master booted another,
    for ever, with the port open and nobody answering. Such an exit now says the message
    and leaves with gunicorn's "app failed to load" status, on which the master stops."""
    load = worker.load_wsgi
    worker.load_wsgi = lambda: _stopping_on_a_refusal(load)


def post_worker_init(worker):
    """Under the asyncio worker, put the buffering front (ivr/edge.py) before a WSGI app
    and give every connection a deadline for its request heads (``HeadDeadline``); then
    keep what loading the app made out of the garbage collector's way."""
    if hasattr(worker, "asgi"):
        from ivr.edge import BufferingFront, install_head_deadline, is_asgi

        if not is_asgi(worker.asgi):
            worker.asgi = BufferingFront(worker.asgi)
        install_head_deadline()
    _freeze_loaded_objects()


def _freeze_loaded_objects() -> None:
    """A loaded worker holds over a hundred thousand objects that live as long as it does
    (modules, SQLAlchemy's tables, the prompt catalogues, phonenumbers' metadata). Every
    full collection walked all of them: pauses of about 120 ms, a dozen times per 10,000
    calls, each one landing on whichever caller's request was running. Frozen, they are
    never walked again, and a full collection covers only what requests left behind."""
    import gc

    gc.collect()
    gc.freeze()


def _die_with_parent() -> None:
    import ctypes
    import ctypes.util
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() == 1:  # the master died between fork and prctl
        os.kill(os.getpid(), signal.SIGTERM)

"""gunicorn settings for the support line (read automatically from this folder).

Command-line flags (--bind, --workers) override these. Prometheus counters from every
worker are kept in a folder of this master process, so /metrics adds them up."""

import os
import shutil
from pathlib import Path

bind = os.environ.get("IVR_BIND", "127.0.0.1:5000")
workers = int(os.environ.get("IVR_WORKERS", os.cpu_count() or 2))
timeout = 30
# Twilio waits 15 s for a webhook; a worker stuck longer than that is no use to a caller.
graceful_timeout = 10
accesslog = os.environ.get("IVR_ACCESS_LOG")  # e.g. "-"; request bodies are never logged

_metrics_root = Path(os.environ.get("IVR_INSTANCE_PATH", "instance")) / "metrics"
_metrics_dir = _metrics_root / str(os.getpid())
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_metrics_dir))


def on_starting(server):
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    # Folders of masters that are gone hold stale counts: remove them.
    for other in _metrics_root.glob("*") if folder.parent == _metrics_root else []:
        if other != folder and other.name.isdigit() and not _alive(int(other.name)):
            shutil.rmtree(other, ignore_errors=True)


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

"""The app under gunicorn in processes of its own, as deployed (the project's
gunicorn.conf.py), for the end-to-end tests; and a database prepared for them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from ..support import CONFIG, DEMO_ACCOUNTS, PEPPER, ROOT, TOKEN


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """``app:app`` under gunicorn on a free port (or ``port``), its log and pid file in
    ``tmp_path``. ``env`` adds or overrides settings; IVR_PUBLIC_URL is unset unless given."""

    def __init__(self, tmp_path: Path, database_url: str, *, port: int | None = None,
                 workers: int = 2, name: str = "gunicorn", **env):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.pidfile = tmp_path / f"{name}-{self.port}.pid"
        self.log = open(tmp_path / f"{name}-{self.port}.log", "a+")
        environment = {**os.environ, "IVR_DATABASE_URL": database_url, "TWILIO_AUTH_TOKEN": TOKEN,
                       "IVR_HOST_KEY_PEPPER": PEPPER, "IVR_CONFIG": str(CONFIG),
                       "IVR_INSTANCE_PATH": str(tmp_path / "instance"),
                       "IVR_PIDFILE": str(self.pidfile)}
        environment.pop("IVR_PUBLIC_URL", None)
        environment.update(env)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(workers), "--log-level", "warning", "app:app"],
            cwd=ROOT, env=environment, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def workers(self) -> list[int]:
        return children(self.process.pid)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def prepare_database(database_url: str):
    """The schema and the demo directory in ``database_url``; the Storage, to dispose of."""
    from ivr.config import load_config
    from ivr.desk.directory import import_file
    from ivr.security import HostKeyHasher
    from ivr.storage import Storage

    storage = Storage(database_url)
    storage.upgrade()
    import_file(DEMO_ACCOUNTS, storage, HostKeyHasher(PEPPER.encode()),
                load_config(CONFIG).lengths)
    return storage

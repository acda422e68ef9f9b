"""Secrets: the host-key pepper and keyed hashes of host keys."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

PEPPER_FILE = "host_key_pepper"


def load_pepper(configured: str | None, instance_path: Path) -> bytes:
    """The pepper from IVR_HOST_KEY_PEPPER, else from instance/, created on first use."""
    if configured:
        return configured.encode("utf-8")
    instance_path.mkdir(parents=True, exist_ok=True)
    path = instance_path / PEPPER_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


class HostKeyHasher:
    """HMAC-SHA256 of PMI and host key under the pepper; a dump alone reveals nothing."""

    def __init__(self, pepper: bytes):
        self._pepper = pepper
        # Compared against when the PMI is unknown, so both paths cost the same.
        self._decoy = self.digest("0", "0")

    def digest(self, pmi: str, host_key: str) -> str:
        message = f"{pmi}:{host_key}".encode("utf-8")
        return hmac.new(self._pepper, message, hashlib.sha256).hexdigest()

    def matches(self, pmi: str, host_key: str, stored: str | None) -> bool:
        candidate = self.digest(pmi, host_key)
        expected = stored if stored is not None else self._decoy
        same = hmac.compare_digest(candidate, expected)
        return same and stored is not None

    def derive(self, label: str) -> bytes:
        """A secret for another purpose (e.g. the session key), independent of host keys."""
        return hmac.new(self._pepper, f"derive:{label}".encode("utf-8"), hashlib.sha256).digest()

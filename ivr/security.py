"""Secrets: the host-key pepper and keyed hashes of host keys and of typed PMIs."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

PEPPER_FILE = "host_key_pepper"


class PepperError(RuntimeError):
    """The pepper file cannot be used; the message names it and says why."""


def load_pepper(configured: str | None, instance_path: Path) -> bytes:
    """The pepper from IVR_HOST_KEY_PEPPER, else from instance/, created on first use.
    The file appears whole or not at all (written aside, then linked into place), and one
    that is empty or not the 64 hex digits written stops the app: hashes keyed with
    anything else would match no host key imported before."""
    if configured:
        return configured.encode("utf-8")
    path = instance_path / PEPPER_FILE
    try:
        instance_path.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            _create_pepper(path)
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError as exc:  # a folder of that name, no permission...
        raise PepperError(f"{path}: cannot be read or created: {exc.strerror or exc}") \
            from None
    if len(text) < 32 or len(text) % 2 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise PepperError(f"{path}: not a host-key pepper (expected 64 hex digits, or at "
                          f"least 32, found {len(text)} characters); restore it from a "
                          "backup, as host keys imported under another pepper no longer "
                          "match")
    return bytes.fromhex(text)


def _create_pepper(path: Path) -> None:
    """A new pepper written aside, then linked into place: of two processes starting at
    once, the first to link wins and both read its pepper."""
    fd, aside = tempfile.mkstemp(dir=path.parent, prefix=".pepper-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(aside, 0o600)
        try:
            os.link(aside, path)  # fails if another process created it first
        except FileExistsError:
            pass
    finally:
        os.unlink(aside)


class HostKeyHasher:
    """HMAC-SHA256 of PMI and host key under the pepper; a dump alone reveals nothing."""

    def __init__(self, pepper: bytes):
        self._pepper = pepper
        # Compared against when the PMI is unknown, so both paths cost the same.
        self._decoy = self.digest("0", "0")
        self._pmi_lockout_key = self.derive("pmi-lockout")

    def digest(self, pmi: str, host_key: str) -> str:
        message = f"{pmi}:{host_key}".encode("utf-8")
        return hmac.new(self._pepper, message, hashlib.sha256).hexdigest()

    def matches(self, pmi: str, host_key: str, stored: str | None) -> bool:
        candidate = self.digest(pmi, host_key)
        expected = stored if stored is not None else self._decoy
        same = hmac.compare_digest(candidate, expected)
        return same and stored is not None

    def pmi_lockout_digest(self, pmi: str) -> str:
        """The keyed hash a PMI's failure counter is kept under (``lockouts``), for any
        digits typed at the PMI prompt: a wrong PMI is often a mistyped real one, so the
        digits themselves are never stored. Another pepper gives other hashes, so the
        counters kept under the old one are no longer found."""
        return hmac.new(self._pmi_lockout_key, pmi.encode("utf-8"), hashlib.sha256).hexdigest()

    def fingerprint(self) -> str:
        """A value that tells peppers apart without revealing them: two hosts with the
        same pepper give the same one."""
        return self.derive("directory-pepper-fingerprint").hex()

    def derive(self, label: str) -> bytes:
        """A secret for another purpose (e.g. the session key), independent of host keys."""
        return hmac.new(self._pepper, f"derive:{label}".encode("utf-8"), hashlib.sha256).digest()

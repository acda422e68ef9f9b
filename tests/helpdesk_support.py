"""Helpers for the help-desk tests: an app whose configuration points at the fake Zendesk,
signed Zendesk webhooks and a sender on the test clock."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

from ivr import create_app
from ivr.desk.directory import import_file
from ivr.helpdesk.sender import Sender
from ivr.helpdesk.zendesk import Zendesk

from .desk_support import ADMIN_TOKEN
from .support import CONFIG, DEMO_ACCOUNTS
from .zendesk_fake import API_TOKEN, EMAIL

WEBHOOK_SECRET = "zendesk-signing-secret-for-tests"
JAPAN_LINE = "+81531320070"
JAPAN_CALLER = "+819012345678"


def helpdesk_config(folder: Path, section: str) -> Path:
    """The shipped configuration with a [helpdesk] section added, prompts alongside."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "prompts").exists():
        (folder / "prompts").symlink_to(CONFIG.parent / "prompts")
    path = folder / "ivr.toml"
    path.write_text(CONFIG.read_text(encoding="utf-8") + "\n" + section, encoding="utf-8")
    return path


# Per request to the fake Zendesk: long enough for a loaded machine to answer, as any
# answer the tests expect to arrive must; tests of the time-out itself pass 0.5 s.
TIMEOUT = 2.0


def zendesk_section(url: str, extra: str = "", timeout: float = TIMEOUT) -> str:
    return (f'[helpdesk]\nkind = "zendesk"\nurl = "{url}"\nemail = "{EMAIL}"\n'
            f"timeout_seconds = {timeout}\nbackoff_seconds = 10\nmax_attempts = 4\n"
            "custom_fields = { region = 360001, plan = 360002 }\n" + extra)


def helpdesk_app(settings, clock, folder: Path, url: str, extra: str = "",
                 timeout: float = TIMEOUT):
    path = helpdesk_config(folder, zendesk_section(url, extra, timeout))
    app = create_app(settings.model_copy(update={
        "config_path": path, "zendesk_api_token": API_TOKEN,
        "zendesk_webhook_secret": WEBHOOK_SECRET, "admin_token": ADMIN_TOKEN}), clock=clock)
    ivr = app.extensions["ivr"]
    ivr.storage.upgrade()
    import_file(DEMO_ACCOUNTS, ivr.storage, ivr.hasher, ivr.config.lengths)
    return app


def sender(ivr, clock, **kwargs) -> Sender:
    return Sender(ivr.storage, ivr.config, ivr.settings, clock=clock, jitter=lambda: 1.0,
                  **kwargs)


def patient_sender(ivr, clock) -> Sender:
    """A sender that waits TIMEOUT for Zendesk's answers, for the part of a test with a
    short time-out (0.5 s) where the fake answers at once again: a loaded machine may take
    longer than 0.5 s to answer even then, which would time out a push the test expects
    sent."""
    patient = ivr.config.helpdesk.model_copy(update={"timeout_seconds": TIMEOUT})
    return sender(ivr, clock, desk=Zendesk.from_config(patient, ivr.settings.zendesk_api_token))


def signed(body: dict | bytes, timestamp: str, secret: str = WEBHOOK_SECRET) -> tuple[bytes, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    digest = hmac.new(secret.encode(), timestamp.encode() + raw, hashlib.sha256).digest()
    return raw, {"X-Zendesk-Webhook-Signature": base64.b64encode(digest).decode(),
                 "X-Zendesk-Webhook-Signature-Timestamp": timestamp,
                 "Content-Type": "application/json"}


def trigger_body(remote_id, number, status="Open", priority="Normal") -> dict:
    """The body the README tells operators to paste into the Zendesk trigger, filled in."""
    return {"ticket": {"id": str(remote_id), "external_id": number, "status": status,
                       "priority": priority}}

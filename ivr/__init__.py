"""Support-line IVR: the app factory, the one place configuration, storage and blueprints
are wired together."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Callable

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import ConfigError, IvrConfig, Settings, check_helpdesk, load_config
from .privacy import RedactingFormatter, protect_database_file, protect_instance_folder
from .security import HostKeyHasher, PepperError, load_pepper
from .storage import Storage, utcnow
from .voice.prompts import Catalogue, CatalogueError, load_catalogues
from .voice.service import CallService
from .voice.spool import Spool
from .voice.floor import Floor
from .voice.twiml import Renderer
from .web import App, TokenRefusals


@dataclass
class Ivr:
    """What the views and commands use, kept on ``app.extensions['ivr']``."""

    settings: Settings
    config: IvrConfig
    catalogues: dict[str, Catalogue]
    storage: Storage
    hasher: HostKeyHasher
    renderer: Renderer
    service: CallService
    floor: Floor  # the engineer line and callbacks (ivr/voice/floor.py)
    token_refusals: TokenRefusals | None = None  # wrong API tokens per address (set up by web.install)


def load_configuration(settings: Settings | None = None
                       ) -> tuple[Settings, IvrConfig, dict[str, Catalogue]]:
    """The environment, config/ivr.toml and the prompt catalogues, checked together; a
    problem stops the process with a message naming the file, the key and what was
    expected. Reads files only: gunicorn's master runs it before any worker boots."""
    try:
        settings = settings or Settings.from_env()
        config = load_config(settings.config_path)
        catalogues = load_catalogues(settings.config_path.parent / "prompts")
        _check_catalogues(settings, config, catalogues)
        check_helpdesk(settings, config)
    except (ConfigError, CatalogueError) as exc:
        raise SystemExit(f"Configuration error: {exc}") from None
    return settings, config, catalogues


def create_app(settings: Settings | None = None, clock: Callable = utcnow) -> App:
    """Build the app; a configuration problem stops it with a message saying what is wrong."""
    settings, config, catalogues = load_configuration(settings)
    _configure_logging()
    try:
        storage = _open_storage(settings)
        hasher = HostKeyHasher(load_pepper(settings.host_key_pepper, settings.instance_path))
    except (ConfigError, PepperError) as exc:
        raise SystemExit(f"Configuration error: {exc}") from None
    renderer = Renderer(config, catalogues)
    spool = Spool(settings.instance_path / "spool")
    floor = Floor(config, catalogues, storage, renderer, spool, clock)
    service = CallService(config, catalogues, storage, hasher, renderer, spool, floor,
                          clock=clock)

    app = App(__name__, instance_path=str(settings.instance_path.resolve()))
    app.extensions["ivr"] = Ivr(settings, config, catalogues, storage, hasher, renderer, service,
                                floor=floor)
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        # No X-Forwarded-Prefix: the TwiML's next-step URLs are root paths, so an app
        # mounted under a prefix would send Twilio out of it after the first answer.
        # Without the prefix the signature check fails at once and says so instead.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)

    from . import cli, health, web
    from .desk import api, commands, dashboard  # noqa: F401  commands: tickets show|close|...
    # Imported before the blueprints are registered: its routes (/admin/floor, callbacks)
    # join the api and admin blueprints, and it holds the engineers commands.
    from .desk import floor_views
    from .helpdesk import webhook as helpdesk_webhook
    from .voice import agent, webhooks

    app.register_blueprint(webhooks.voice)
    app.register_blueprint(agent.agent)
    app.register_blueprint(health.health)
    app.register_blueprint(api.api)
    app.register_blueprint(dashboard.admin)
    app.register_blueprint(helpdesk_webhook.hooks)
    cli.register(app)
    app.cli.add_command(floor_views.engineers_cli)
    cli.explain_database_errors(app.cli)
    # Body limits, accepted hosts, desk headers, the sign-in limiter (after the blueprints).
    app.extensions["ivr"].token_refusals = web.install(app)
    return app


def _open_storage(settings: Settings) -> Storage:
    """The database of IVR_DATABASE_URL, the instance folder made first (0600 files in a
    0700 folder before SQLite opens them). A folder or URL that cannot be used is a
    ConfigError naming its setting; the URL itself is never repeated, as it may hold a
    password."""
    folder = settings.instance_path
    try:
        protect_instance_folder(folder)
    except OSError as exc:  # a file of that name, no permission, a read-only file system
        raise ConfigError(f"environment: IVR_INSTANCE_PATH: {folder}: not a folder that "
                          f"can be used ({exc.strerror or exc})") from None
    if not os.access(folder, os.W_OK | os.X_OK):  # its pepper, outage spool and metrics
        raise ConfigError(f"environment: IVR_INSTANCE_PATH: {folder}: the service cannot "
                          "write to this folder (it keeps the generated pepper, the outage "
                          "spool and the metrics there)")
    try:
        scheme = make_url(settings.database_url).drivername
    except (ArgumentError, ValueError):  # no scheme at all, a port that is not a number...
        raise ConfigError("environment: IVR_DATABASE_URL: not a database URL (for example "
                          "sqlite:///instance/ivr.db, or postgresql+psycopg://user@host/db "
                          "for PostgreSQL)") from None
    try:
        protect_database_file(settings.database_url)
        return Storage(settings.database_url)
    except NoSuchModuleError:  # postgres://, as some hosting providers hand it out
        raise ConfigError(f"environment: IVR_DATABASE_URL: {scheme}:// is not a database "
                          "SQLAlchemy knows (for PostgreSQL write "
                          "postgresql+psycopg://user@host/db)") from None
    except ImportError as exc:  # mysql://: a database whose driver this service does not ship
        raise ConfigError(f"environment: IVR_DATABASE_URL: {scheme}://: its driver is not "
                          f"installed ({exc}); this service runs on SQLite (sqlite:///...) "
                          "and PostgreSQL (postgresql+psycopg://...)") from None
    except OSError as exc:  # the SQLite file's folder cannot be made, or the file created
        raise ConfigError(f"environment: IVR_DATABASE_URL: {exc.filename}: cannot be "
                          f"created or opened ({exc.strerror or exc})") from None


def _check_catalogues(settings: Settings, config: IvrConfig, catalogues: dict) -> None:
    voices = [config.service.speech] + [line.speech for line in config.lines] + [
        line.english for line in config.lines if line.english is not None]
    for voice in voices:
        if voice.catalogue_name not in catalogues:
            raise ConfigError(
                f"{settings.config_path}: no prompt catalogue "
                f"{settings.config_path.parent / 'prompts' / (voice.catalogue_name + '.toml')} "
                f"for language {voice.catalogue_name}"
            )
    notice = config.notice
    if notice is not None:  # spoken to every caller while it runs: a typo would fail them all
        for name in sorted({voice.catalogue_name for voice in voices}):
            template = catalogues[name].messages.get(notice.message)
            if template is None or "{" in template.replace("{{", "").replace("}}", ""):
                raise ConfigError(
                    f"{settings.config_path}: [notice] message = {notice.message[:60]!r}: "
                    f"{'no such message' if template is None else 'a message with placeholders'}"
                    f" in the prompt catalogue {name}.toml (give the key of a message "
                    "without placeholders, present in every line's catalogue)")


def _configure_logging() -> None:
    logger = logging.getLogger("ivr")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)

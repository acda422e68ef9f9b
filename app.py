"""WSGI entry point: ``gunicorn app:app`` or ``flask --app app ...``."""

from ivr import create_app

app = create_app()

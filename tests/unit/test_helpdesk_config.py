"""The [helpdesk] section and its secrets, validated at start (issue 9)."""

import pytest

from ivr import create_app
from ivr.config import ConfigError, Settings, load_config

from ..helpdesk_support import helpdesk_config
from ..support import CONFIG, TOKEN


def section(**keys) -> str:
    values = {"kind": '"zendesk"', "subdomain": '"example"', "email": '"phone@example.com"'}
    values.update(keys)
    return "[helpdesk]\n" + "".join(f"{k} = {v}\n" for k, v in values.items() if v is not None)


def test_the_shipped_configuration_has_no_help_desk():
    assert load_config(CONFIG).helpdesk is None


def test_a_subdomain_gives_the_zendesk_host_and_a_url_wins_when_set(tmp_path):
    config = load_config(helpdesk_config(tmp_path / "a", section()))
    assert config.helpdesk.base_url == "https://example.zendesk.com"
    assert config.helpdesk.ticket_url(42) == "https://example.zendesk.com/agent/tickets/42"
    config = load_config(helpdesk_config(tmp_path / "b", section(url='"http://127.0.0.1:8080"')))
    assert config.helpdesk.base_url == "http://127.0.0.1:8080"


@pytest.mark.parametrize("keys, named", [
    ({"kind": '"freshdesk"'}, "helpdesk.kind"),
    ({"subdomain": '"Not A Host!"'}, "helpdesk.subdomain"),
    ({"subdomain": None}, "give subdomain"),
    ({"email": '"nobody"'}, "helpdesk.email"),
    ({"custom_fields": "{ colour = 1 }"}, "helpdesk.custom_fields.colour"),
    ({"custom_fields": "{ region = -3 }"}, "helpdesk.custom_fields"),
    ({"timeout_seconds": "0"}, "helpdesk.timeout_seconds"),
    ({"max_attempts": "0"}, "helpdesk.max_attempts"),
    ({"timeout_seconds": "20", "lease_seconds": "60"},
     "lease_seconds (60) must be at least four times timeout_seconds (20)"),
    ({"surprise": "1"}, "helpdesk.surprise: is not a known key"),
    ({"url": '"http://127.0.0.1:99999"'}, "helpdesk.url"),
    ({"url": '"http://127.0.0.1:abc"'}, "helpdesk.url"),
    ({"url": '"http://user:pw@zendesk.example"'}, "helpdesk.url"),
    ({"url": '"http://zendesk.example?x=1"'}, "helpdesk.url"),
    ({"url": '"http://[::1"'}, "helpdesk.url"),
])
def test_bad_help_desk_settings_stop_the_app_naming_the_key(tmp_path, keys, named):
    with pytest.raises(ConfigError) as error:
        load_config(helpdesk_config(tmp_path, section(**keys)))
    assert named in str(error.value)


def test_a_configured_help_desk_without_its_api_token_stops_the_app(tmp_path):
    path = helpdesk_config(tmp_path / "config", section())
    settings = Settings(config_path=path, database_url=f"sqlite:///{tmp_path}/ivr.db",
                        instance_path=tmp_path / "instance", twilio_auth_token=TOKEN,
                        host_key_pepper="test-pepper-of-thirty-two-chars!")
    with pytest.raises(SystemExit) as stopped:
        create_app(settings)
    assert "IVR_ZENDESK_API_TOKEN" in str(stopped.value)


def test_the_secrets_come_from_the_environment():
    settings = Settings.from_env({"TWILIO_AUTH_TOKEN": TOKEN,
                                  "IVR_PUBLIC_URL": "https://support-ivr.example.com",
                                  "IVR_ZENDESK_API_TOKEN": "api-token",
                                  "IVR_ZENDESK_WEBHOOK_SECRET": "signing-secret"})
    assert settings.zendesk_api_token == "api-token"
    assert settings.zendesk_webhook_secret == "signing-secret"
    with pytest.raises(ConfigError, match="IVR_ZENDESK_WEBHOOK_SECRET"):
        Settings.from_env({"TWILIO_AUTH_TOKEN": TOKEN, "IVR_ZENDESK_WEBHOOK_SECRET": "short"})


@pytest.mark.parametrize("body, said", [
    (b'{"errors": 5}', "HTTP 422: 5"),
    (b'{"errors": ["boom", {"title": "Bad"}]}', "HTTP 422: boom; Bad"),
    (b'{"error": "RecordInvalid", "description": "Record validation errors"}',
     "HTTP 422: RecordInvalid; Record validation errors"),
    (b'[1, 2]', "HTTP 422"),
])
def test_any_error_body_zendesk_or_a_proxy_sends_is_told_not_raised(body, said):
    """An error body of an unexpected shape must not stop the sender's round (the
    stranded sweep runs in the same one)."""
    from ivr.helpdesk.zendesk import error_message

    assert error_message(422, body) == said

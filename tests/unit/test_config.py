"""The TOML configuration and the prompt catalogues, validated at start; what gunicorn's
settings (gunicorn.conf.py) do to the metrics folder when it starts."""

import os
import subprocess
import sys

import pytest

from ivr import create_app
from ivr.config import ConfigError, Settings, load_config
from ivr.voice.prompts import CatalogueError, Digits, Text, load_catalogues

from ..support import CONFIG, ROOT

PUBLISHED = {
    "+1.888.799.9666": "+18887999666",
    "+61.1800.768.027": "+611800768027",
    "+33.800.94.64.64": "+33800946464",
    "+91.800.050.2040": "+918000502040",
    "+81.053.132.0070": "+81531320070",
    "+64.800.475.039": "+64800475039",
    "+65.800.321.1249": "+658003211249",
    "+44.800.368.7314": "+448003687314",
    "+44.20.7039.8961": "+442070398961",
}


def test_the_nine_published_numbers_are_configured_and_normalised_to_e164(config):
    assert [line.number for line in config.lines] == list(PUBLISHED.values())


def test_a_line_is_found_from_any_common_notation_of_its_number(config):
    assert config.line_for("+81 53-132-0070").region == "Japan"
    assert config.line_for("+44 20 7039 8961").region == "United Kingdom"
    assert config.line_for("+15005550006") is None
    assert config.line_for("garbage") is None


def test_japan_is_spoken_with_a_japanese_polly_or_google_voice(config):
    line = config.line_for("+81531320070")
    assert line.language == "ja-JP" and line.voice.split(".")[0] in ("Polly", "Google")


def test_the_channel_policy_matches_the_support_policy(config):
    policy = config.policy
    for plan in ("business", "education", "enterprise", "api"):
        for role in ("owner", "admin"):
            assert policy.channel_for(plan, role) == "phone"
        assert policy.channel_for(plan, "member") == "self_service"
    assert policy.channel_for("pro", "owner") == policy.channel_for("pro", "admin") == "web"
    assert policy.channel_for("pro", "member") == "self_service"
    for role in ("owner", "admin", "member"):
        assert policy.channel_for("free", role) == "self_service"


def test_priorities_carry_the_published_target_response_times(config):
    assert [p.target_response_minutes for p in config.priorities] == [60, 240, 1440, 1440]


def write(tmp_path, text):
    path = tmp_path / "ivr.toml"
    path.write_text(text, encoding="utf-8")
    return path


def broken(tmp_path, old, new):
    source = CONFIG.read_text(encoding="utf-8")
    assert old in source
    return write(tmp_path, source.replace(old, new, 1))


def test_an_invalid_number_stops_the_app_naming_the_number(tmp_path):
    path = broken(tmp_path, '"+1.888.799.9666"', '"+1.888.799.96"')
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message and "lines[0].number" in message and "+1.888.799.96" in message


def test_a_voice_that_does_not_speak_the_line_language_is_refused(tmp_path):
    path = broken(tmp_path, 'voice = "Polly.Mizuki"', 'voice = "Polly.Joanna"')
    with pytest.raises(ConfigError, match=r"lines\[4\]\.voice: .*Polly.Joanna.* not a Twilio voice for ja-JP"):
        load_config(path)


@pytest.mark.parametrize("old, new, where", [
    ('default_language = "en-US"', 'default_language = "en-ZA"', r"service\.default_language: 'en-ZA'"),
    ('default_voice = "Polly.Joanna-Neural"', 'default_voice = "Polly.Mizuki"',
     r"service\.default_voice: 'Polly.Mizuki' is not a Twilio voice for en-US"),
    ('language = "en-AU"', 'language = "en-ZA"', r"lines\[1\]\.language: 'en-ZA'"),
    ('english = { language = "en-GB", voice = "Polly.Amy-Neural" }',
     'english = { language = "en-GB", voice = "Polly.Lea" }', r"lines\[2\]\.english\.voice: "),
    ("pmi_min = 9", "pmi_min = 12", r"lengths\.pmi_max: 11 is less than pmi_min \(12\)"),
    ("host_key_min = 6", "host_key_min = 0", r"lengths\.host_key_min: Input should be greater than 0"),
])
def test_a_language_voice_or_length_that_does_not_fit_is_refused_naming_its_key(
        tmp_path, old, new, where):
    """[service] default_language = "en-ZA" was refused as "service: language 'en-ZA'",
    a key the section does not have, and pmi_min = 12 as "lengths: each minimum length
    must be positive and at most its maximum", naming none of the four."""
    with pytest.raises(ConfigError, match=where):
        load_config(broken(tmp_path, old, new))


def test_a_missing_key_and_an_unknown_key_are_named(tmp_path):
    path = broken(tmp_path, 'help_center = "https://support.zoom.us/hc"', 'help_centre = "x"')
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "links.help_center: is required but missing" in str(error.value)
    assert "links.help_centre: is not a known key" in str(error.value)


def test_a_wrong_type_names_the_key_and_what_was_expected(tmp_path):
    path = broken(tmp_path, "prompt_attempts = 3", 'prompt_attempts = "three"')
    with pytest.raises(ConfigError, match=r"retries.prompt_attempts: Input should be a valid integer"):
        load_config(path)


def test_priorities_must_be_one_to_four_once_each(tmp_path):
    path = broken(tmp_path, "level = 4", "level = 3")
    with pytest.raises(ConfigError, match=r"priorities: expected priorities 1, 2, 3 and 4"):
        load_config(path)


def test_the_callback_key_cannot_be_the_key_that_repeats_the_ticket_number(tmp_path):
    path = broken(tmp_path, 'callback_key = "1"', 'callback_key = "*"')
    with pytest.raises(ConfigError, match=r"\n  queue: callback_key '\*' is also menu.repeat_key"):
        load_config(path)


@pytest.mark.parametrize("key", ["0", "1", "4", "5"])
def test_a_repeat_key_other_than_star_is_refused_at_start(tmp_path, key):
    """Every catalogue tells callers to press star to hear a prompt again (the hint after
    the menu, the offer in the queue): another key would leave them pressing one that does
    nothing but count as a wrong answer. And at the priority prompt a repeat key of 1 would
    play the menu again instead of choosing P1, however often it was pressed."""
    path = broken(tmp_path, 'repeat_key = "*"', f'repeat_key = "{key}"')
    path.write_text(path.read_text().replace('callback_key = "1"', 'callback_key = "7"'))
    with pytest.raises(ConfigError, match=rf"repeat_key: '{key}' is not star"):
        load_config(path)


def test_a_file_that_is_not_toml_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"ivr.toml: not valid TOML"):
        load_config(write(tmp_path, "[service\n"))


def test_the_app_refuses_to_start_on_a_bad_file_with_the_message(tmp_path):
    from ivr import create_app

    path = broken(tmp_path, 'level = 4', 'level = 5')
    settings = Settings(config_path=path, twilio_auth_token="x", database_url="sqlite://",
                        instance_path=tmp_path)
    with pytest.raises(SystemExit, match=r"(?s)Configuration error: .*priorities\[3\].level"):
        create_app(settings)


def test_signatures_cannot_be_validated_without_the_auth_token():
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN is required"):
        Settings.from_env({})
    assert Settings.from_env({"IVR_VALIDATE_SIGNATURES": "false"}).validate_signatures is False


def test_every_catalogue_has_every_message_with_the_same_placeholders():
    catalogues = load_catalogues(CONFIG.parent / "prompts")
    assert {"en-GB", "en-US", "en-AU", "en-IN", "en-NZ", "en-SG", "ja-JP", "fr-FR"} <= set(catalogues)
    reference = set(catalogues["en-GB"].messages)
    for catalogue in catalogues.values():
        assert set(catalogue.messages) == reference


def test_english_variants_use_their_region_words():
    catalogues = load_catalogues(CONFIG.parent / "prompts")
    assert "pound key" in catalogues["en-US"].messages["pmi_prompt"]
    assert "hash key" in catalogues["en-GB"].messages["pmi_prompt"]
    assert "centre" in catalogues["en-AU"].messages["rejected_self_service"]
    assert "center" in catalogues["en-US"].messages["rejected_self_service"]


def test_the_ticket_number_is_a_digits_segment():
    catalogues = load_catalogues(CONFIG.parent / "prompts")
    segments = catalogues["fr-FR"].segments("ticket_logged", {"ticket": "12345678"})
    assert Digits("12345678") in segments
    assert all(isinstance(s, (Text, Digits)) for s in segments)


def shipped_catalogues(folder):
    """The shipped prompt catalogues copied into ``folder``, to be spoilt one at a time."""
    for source in (CONFIG.parent / "prompts").glob("*.toml"):
        (folder / source.name).write_text(source.read_text(encoding="utf-8"), encoding="utf-8")


def test_a_catalogue_missing_a_message_is_refused_naming_it(tmp_path):
    shipped_catalogues(tmp_path)
    fr = tmp_path / "fr-FR.toml"
    fr.write_text("\n".join(l for l in fr.read_text(encoding="utf-8").splitlines()
                            if not l.startswith("goodbye =")), encoding="utf-8")
    with pytest.raises(CatalogueError, match=r"fr-FR.toml: missing messages: goodbye$"):
        load_catalogues(tmp_path)


@pytest.mark.parametrize("text, problem", [
    ('greeting = "Kia ora {brnd}"', r"greeting: placeholders"),  # not the reference's
    ('greeting = "Kia ora {brand}}"', r"greeting: Single '}' encountered"),
    ('greeting = "Kia ora {brand"', r"greeting: expected '}'"),
    ('greeting = "Kia ora {brand!x}"', r"greeting: placeholder \{brand!x\} must be a plain name"),
    ('greeting = "Kia ora {brand:d}"', r"greeting: placeholder \{brand:d\} must be a plain name"),
    ('greeting = "Kia ora {brand.upper}"', r"greeting: placeholder \{brand.upper\} must be a plain name"),
])
def test_a_message_with_wrong_placeholders_or_that_could_not_be_filled_in_is_refused(tmp_path, text, problem):
    """Spoken messages and texts are filled in with str.format: a lone brace or a
    conversion would otherwise pass start-up and fail the calls that reach it."""
    shipped_catalogues(tmp_path)
    (tmp_path / "en-NZ.toml").write_text(f'extends = "en-GB"\n{text}\n')
    with pytest.raises(CatalogueError, match=r"en-NZ.toml: " + problem):
        load_catalogues(tmp_path)


def test_a_catalogue_that_is_not_utf8_or_extends_a_list_is_refused_by_name(tmp_path):
    shipped_catalogues(tmp_path)
    (tmp_path / "en-NZ.toml").write_text('extends = ["en-GB"]\n')
    with pytest.raises(CatalogueError, match=r"en-NZ.toml: extends: expected the name"):
        load_catalogues(tmp_path)
    (tmp_path / "en-NZ.toml").write_bytes(b'extends = "en-GB"\ngreeting = "Caf\xe9"\n')
    with pytest.raises(CatalogueError, match=r"en-NZ.toml: not UTF-8 text"):
        load_catalogues(tmp_path)


def test_a_short_admin_token_is_refused():
    with pytest.raises(ConfigError, match="IVR_ADMIN_TOKEN"):
        Settings.from_env({"IVR_VALIDATE_SIGNATURES": "false", "IVR_ADMIN_TOKEN": "hunter2"})
    long_enough = "x" * 32
    assert Settings.from_env({"IVR_VALIDATE_SIGNATURES": "false",
                              "IVR_ADMIN_TOKEN": long_enough}).admin_token == long_enough


def test_a_short_host_key_pepper_is_refused():
    """The pepper keys every host-key hash: a short one (a word, a default left in a
    template) makes a stolen directory's host keys a quick search again. The generated
    file holds 32 random bytes; a pepper given as text needs at least 32 characters."""
    with pytest.raises(ConfigError, match="IVR_HOST_KEY_PEPPER"):
        Settings.from_env({"IVR_VALIDATE_SIGNATURES": "false", "IVR_HOST_KEY_PEPPER": "pepper"})
    long_enough = "p" * 32
    assert Settings.from_env({"IVR_VALIDATE_SIGNATURES": "false",
                              "IVR_HOST_KEY_PEPPER": long_enough}).host_key_pepper == long_enough


@pytest.mark.parametrize("token", [" " + "x" * 32, "x" * 32 + "\n", "\t" + "x" * 32 + " "])
def test_an_admin_token_nobody_could_send_is_refused(token):
    """Sign-in and the API strip what they are sent: a token with white space at either
    end would never match."""
    with pytest.raises(ConfigError, match="IVR_ADMIN_TOKEN"):
        Settings.from_env({"IVR_VALIDATE_SIGNATURES": "false", "IVR_ADMIN_TOKEN": token})


@pytest.mark.parametrize("name", ["IVR_ZENDESK_API_TOKEN", "IVR_ZENDESK_WEBHOOK_SECRET"])
def test_zendesk_credentials_are_taken_without_the_line_end_a_secret_file_leaves(name):
    """A token or signing secret read from a file (a container's secret, `echo` into an
    environment file) often ends in a line end. Zendesk's never hold white space, and
    kept with it every push was refused with 401 (the token) or every delivery from
    Zendesk was refused as wrongly signed (the secret), long after the start said
    nothing; one of white space only is not set."""
    env = {"IVR_VALIDATE_SIGNATURES": "false"}
    attribute = {"IVR_ZENDESK_API_TOKEN": "zendesk_api_token",
                 "IVR_ZENDESK_WEBHOOK_SECRET": "zendesk_webhook_secret"}[name]
    settings = Settings.from_env({**env, name: " zendesk-secret-123\n"})
    assert getattr(settings, attribute) == "zendesk-secret-123"
    assert getattr(Settings.from_env({**env, name: " \n"}), attribute) is None


def test_twilio_credentials_are_taken_without_the_line_end_a_secret_file_leaves():
    """The auth token read from a file, with its line end, checked every webhook's
    signature with a key Twilio never signed with: every call was refused (403, and the
    caller heard Twilio's application error) and every text and callback refused with
    401, while the start said nothing. Twilio's SIDs and tokens hold no white space."""
    from twilio.request_validator import RequestValidator
    from werkzeug.datastructures import MultiDict

    from ivr.voice.webhooks import signature_matches

    token, sid = "0123456789abcdef0123456789abcdef", "AC" + "1" * 32
    settings = Settings.from_env({"TWILIO_AUTH_TOKEN": token + "\n",
                                  "TWILIO_ACCOUNT_SID": f" {sid}\r\n",
                                  "IVR_PUBLIC_URL": "https://ivr.example.com"})
    assert (settings.twilio_auth_token, settings.twilio_account_sid) == (token, sid)
    url, form = "https://ivr.example.com/voice", {"CallSid": "CA" + "2" * 32}
    signed = RequestValidator(token).compute_signature(url, form)
    assert signature_matches(settings.twilio_auth_token, url, MultiDict(form), signed)
    blank = Settings.from_env({"IVR_VALIDATE_SIGNATURES": "false", "TWILIO_AUTH_TOKEN": " \n"})
    assert blank.twilio_auth_token is None


@pytest.mark.parametrize("url", ["https://ivr.example.com/line", "https://ivr.example.com?x=1",
                                 "https://ivr.example.com?", "https://ivr.example.com#",
                                 "ivr.example.com", "ftp://ivr.example.com"])
def test_a_public_url_with_a_path_or_without_a_scheme_is_refused(url):
    """Twilio resolves the TwiML's root paths (/voice/menu) against the host: under a
    path the call would leave the service after its first answer."""
    with pytest.raises(ConfigError, match="IVR_PUBLIC_URL.*scheme and host only"):
        Settings.from_env({"IVR_VALIDATE_SIGNATURES": "false", "IVR_PUBLIC_URL": url})
    assert Settings.from_env({"IVR_VALIDATE_SIGNATURES": "false",
                              "IVR_PUBLIC_URL": "https://ivr.example.com:8443/"}
                             ).public_url == "https://ivr.example.com:8443"
    assert Settings.from_env({"IVR_VALIDATE_SIGNATURES": "false",
                              "IVR_PUBLIC_URL": "HTTPS://ivr.example.com"}
                             ).public_url == "https://ivr.example.com"  # HSTS, Secure cookie


@pytest.mark.parametrize("url", ["https://ivr.example.com:99999", "https://ivr.example.com:abc",
                                 "https://ivr.example.com:0", "https://ivr example.com",
                                 "https://user:secret@ivr.example.com"])
def test_a_public_url_no_request_could_carry_is_refused_at_start(url):
    """Signatures are checked against it: a port out of range or not a number, a host with
    a space or a user in it would fail every webhook's signature check with 403. The rule is
    the help desk's url's (tests/unit/test_helpdesk_config.py)."""
    with pytest.raises(ConfigError, match=r"IVR_PUBLIC_URL: '.*': "):
        Settings.from_env({"IVR_VALIDATE_SIGNATURES": "false", "IVR_PUBLIC_URL": url})
    assert Settings.from_env({"IVR_VALIDATE_SIGNATURES": "false",
                              "IVR_PUBLIC_URL": "https://[::1]:8443"}
                             ).public_url == "https://[::1]:8443"


@pytest.mark.parametrize("old, new, message", [
    ('queue = "support-us"', 'queue = "support-{region}"',
     r"lines\[0\]\.route\.enqueue\.queue: 'support-\{region\}': the one placeholder"),
    ('queue = "support-us"', 'queue = "support-{"', r"lines\[0\]\.route\.enqueue\.queue: .*placeholder"),
    ('queue = "support-us"', 'queue = "support-{priority[0]}"', r"route\.enqueue\.queue: .*placeholder"),
    ('queue = "support-us"', 'queue = "support-{priority.x}"', r"route\.enqueue\.queue: .*placeholder"),
    ('queue = "support-us"', 'queue = "' + "q" * 56 + '"', r"1 to 55 characters"),
    ('fallback_queue = "support"', 'fallback_queue = ""', r"service\.fallback_queue"),
    ('fallback_queue = "support"', 'fallback_queue = "  "', r"service\.fallback_queue"),
    ('fallback_queue = "support"', 'fallback_queue = "' + "q" * 65 + '"',
     r"service\.fallback_queue"),
])
def test_a_queue_name_twilio_could_not_use_is_refused_at_start(tmp_path, old, new, message):
    """Found out at start, not when the first caller of that priority, or the first caller
    of an outage, is routed to it."""
    with pytest.raises(ConfigError, match=message):
        load_config(broken(tmp_path, old, new))


def test_a_queue_name_may_name_the_priority(tmp_path):
    config = load_config(broken(tmp_path, 'queue = "support-us"', 'queue = "us-p{priority}"'))
    assert config.lines[0].route.group(2) == "us-p2"


def test_a_notice_naming_no_message_or_one_with_placeholders_stops_the_app(tmp_path):
    """Spoken to every caller while it runs: a typo would send every call to the fallback."""
    import shutil

    from ivr import create_app

    shutil.copytree(CONFIG.parent / "prompts", tmp_path / "prompts")
    for key, problem in (("notice_high_demnd", "no such message"),
                         ("sms_self_service", "a message with placeholders")):
        path = broken(tmp_path, 'message = "notice_high_demand"', f'message = "{key}"')
        settings = Settings(config_path=path, twilio_auth_token="x", database_url="sqlite://",
                            instance_path=tmp_path)
        with pytest.raises(SystemExit, match=rf"\[notice\] message = '{key}': {problem}"):
            create_app(settings)


@pytest.mark.parametrize("hosts", ["https://ivr.example.com", "ivr.example.com/voice",
                                   "ivr.example.com,user@ivr.example.com", "ivr example.com",
                                   "[::1]:8000", "::1", "ivr.example.com:http",
                                   # ports no request carries: other digits ('\u00b2' passes
                                   # isdigit() but not int(), so every request naming a
                                   # port failed), or out of range
                                   "ivr.example.com:\u00b2", "ivr.example.com:\u0668\u0664",
                                   "ivr.example.com:0", "ivr.example.com:65536"])
def test_allowed_hosts_that_no_request_could_match_are_refused(hosts):
    with pytest.raises(ConfigError, match="IVR_ALLOWED_HOSTS: .*host names only"):
        Settings.from_env({"IVR_VALIDATE_SIGNATURES": "false", "IVR_ALLOWED_HOSTS": hosts})


def test_every_allowed_host_werkzeug_can_match_is_kept_and_matches():
    from werkzeug.sansio.utils import host_is_trusted

    given = "IVR.example.com, .example.org,127.0.0.1:5000,localhost,ivr.example.net.,bücher.example"
    hosts = Settings.from_env({"IVR_VALIDATE_SIGNATURES": "false",
                               "IVR_ALLOWED_HOSTS": given}).allowed_hosts
    assert hosts == ["ivr.example.com", ".example.org", "127.0.0.1:5000", "localhost",
                     "ivr.example.net.", "bücher.example"]
    for request_host in ("ivr.example.com", "line.example.org", "127.0.0.1:5000", "localhost",
                         "ivr.example.net.", "xn--bcher-kva.example"):
        assert host_is_trusted(request_host, hosts), request_host


@pytest.mark.parametrize("old, new, where", [
    ('region = "United States"', 'region = "' + "U" * 65 + '"', r"lines\[\d\]\.region"),
    ("pmi_max = 11", "pmi_max = 17", r"lengths\.pmi_max"),
    ("caller_window_minutes = 60", "caller_window_minutes = 2000000000",
     r"lockout\.caller_window_minutes"),
    ("lock_minutes = 15", "lock_minutes = 2000000000", r"lockout\.lock_minutes"),
    ("max_lock_hours = 24", "max_lock_hours = 100000000", r"lockout\.max_lock_hours"),
    ("target_response_minutes = 60", "target_response_minutes = 5000000000",
     r"priorities\[0\]\.target_response_minutes"),
])
def test_values_the_database_or_the_clock_could_not_hold_are_refused_at_start(
        tmp_path, old, new, where):
    """A region longer than its column, a PMI longer than the directory holds, or a period
    past any calendar would otherwise pass start-up and fail calls one by one."""
    with pytest.raises(ConfigError, match=where):
        load_config(broken(tmp_path, old, new))


def test_a_configuration_that_is_not_utf8_or_not_a_file_is_named_not_a_traceback(tmp_path):
    path = tmp_path / "ivr.toml"
    path.write_bytes(b"[service]\nbrand = \"Caf\xe9\"\n")
    with pytest.raises(ConfigError, match=r"ivr\.toml: not UTF-8 text"):
        load_config(path)
    with pytest.raises(ConfigError, match=r": cannot be read: Is a directory"):
        load_config(tmp_path)


def startup_settings(tmp_path, **changes) -> Settings:
    values = dict(config_path=CONFIG, database_url=f"sqlite:///{tmp_path}/ivr.db",
                  instance_path=tmp_path / "instance", twilio_auth_token="x",
                  host_key_pepper="test-pepper-of-thirty-two-chars!")
    return Settings(**{**values, **changes})


@pytest.mark.parametrize("url", [
    "postgres://ivr:s3cret@127.0.0.1:5432/ivr",  # the scheme some hosting providers hand out
    "mysql://ivr:s3cret@127.0.0.1/ivr",          # a database whose driver is not installed
    "postgresql+psycopg://ivr:s3cret@db:port/ivr",
    "not a url",
])
def test_a_database_url_that_cannot_be_used_stops_the_app_with_one_line_naming_it(
        tmp_path, url):
    """Told as a configuration error naming IVR_DATABASE_URL, not as SQLAlchemy's
    traceback; the URL is not repeated, as it may hold a password."""
    with pytest.raises(SystemExit) as stopped:
        create_app(startup_settings(tmp_path, database_url=url))
    message = str(stopped.value)
    assert message.startswith("Configuration error: environment: IVR_DATABASE_URL: ")
    assert "\n" not in message and "s3cret" not in message


def test_an_instance_path_that_is_a_file_stops_the_app_with_one_line_naming_it(tmp_path):
    (tmp_path / "instance").write_text("not a folder")
    with pytest.raises(SystemExit, match=r"^Configuration error: environment: "
                                         r"IVR_INSTANCE_PATH: .*instance: not a folder"):
        create_app(startup_settings(tmp_path))


def test_a_read_only_instance_folder_stops_the_app_naming_ivr_instance_path(
        tmp_path, monkeypatch):
    """The folder exists but nothing can be written there (a read-only mount): the pepper,
    the outage spool and the metrics could not be kept. It was reported as a fault of
    IVR_DATABASE_URL, which the operator had not set."""
    import errno
    import pathlib

    instance = tmp_path / "instance"
    instance.mkdir(mode=0o755)

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(pathlib.Path, "chmod", read_only)
    with pytest.raises(SystemExit) as stopped:
        create_app(startup_settings(tmp_path))
    message = str(stopped.value)
    assert message.startswith(f"Configuration error: environment: IVR_INSTANCE_PATH: "
                              f"{instance}: ")
    assert message.endswith("not a folder that can be used (Read-only file system)")
    assert "\n" not in message
    assert "IVR_DATABASE_URL" not in message


def test_an_instance_folder_the_service_cannot_write_to_stops_the_app(tmp_path, monkeypatch):
    instance = tmp_path / "instance"
    instance.mkdir(mode=0o700)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False
                        if str(path) == str(instance) and mode & os.W_OK
                        else real_access(path, mode, **kw))
    with pytest.raises(SystemExit, match=r"^Configuration error: environment: "
                                         r"IVR_INSTANCE_PATH: .*instance: .*cannot write"):
        create_app(startup_settings(tmp_path))


@pytest.mark.parametrize("make", [
    lambda path, tmp_path: path.symlink_to(tmp_path / "gone" / path.name),
    lambda path, tmp_path: path.mkdir(),
], ids=["a link to nothing", "a folder"])
def test_a_prompt_catalogue_that_cannot_be_read_stops_the_app_naming_it(tmp_path, make):
    import shutil

    shutil.copytree(CONFIG.parent, tmp_path / "config")
    catalogue = tmp_path / "config" / "prompts" / "fr-FR.toml"
    catalogue.unlink()
    make(catalogue, tmp_path)
    with pytest.raises(CatalogueError, match=r"fr-FR\.toml: cannot be read"):
        load_catalogues(catalogue.parent)
    with pytest.raises(SystemExit, match=r"^Configuration error: .*fr-FR\.toml: cannot be read"):
        create_app(startup_settings(tmp_path, config_path=tmp_path / "config" / "ivr.toml"))


# -- gunicorn.conf.py ----------------------------------------------------------------------


@pytest.mark.parametrize("name, value", [
    ("IVR_WORKERS", "abc"), ("IVR_WORKERS", "0"), ("IVR_WORKERS", "-2"), ("IVR_WORKERS", " "),
    ("IVR_WORKERS", "\u00b2"),
    ("IVR_WORKER_CLASS", "bogus"), ("IVR_WORKER_CLASS", ""),
    ("IVR_BIND", ""), ("IVR_BIND", " "),
])
def test_gunicorn_refuses_a_server_setting_it_cannot_use_in_one_line_naming_it(
        tmp_path, name, value):
    """IVR_WORKERS=abc stopped gunicorn with a traceback of its configuration file, and
    IVR_WORKERS=0 started a master with no worker: it listened and answered nobody. An
    empty IVR_BIND (a unit file's `IVR_BIND=${BIND}` with BIND unset) bound nothing: each
    worker said "No servers could be started" and was booted again, for ever."""
    env = {**os.environ, "IVR_INSTANCE_PATH": str(tmp_path / "instance"), name: value}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    run = subprocess.run([sys.executable, "-c", "import runpy; runpy.run_path('gunicorn.conf.py')"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"Configuration error: environment: {name}: ")


def test_gunicorn_takes_the_worker_settings_the_readme_names(tmp_path):
    env = {**os.environ, "IVR_INSTANCE_PATH": str(tmp_path / "instance"), "IVR_WORKERS": "3",
           "IVR_WORKER_CLASS": "sync"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    run = subprocess.run([sys.executable, "-c", "import runpy; c = runpy.run_path("
                          "'gunicorn.conf.py'); print(c['workers'], c['worker_class'])"],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["3", "sync"]


def test_gunicorn_stops_at_start_on_a_configuration_the_app_refuses_saying_why(tmp_path):
    """The app refuses a bad config/ivr.toml by exiting; under gunicorn that was a worker
    exiting, and the master booted another, which exited too, for ever: the port stayed
    open, answering nobody, and the log filled with the same message every second."""
    bad = broken(tmp_path, "pmi_min = 9", "pmi_min = 99")
    (tmp_path / "prompts").symlink_to(CONFIG.parent / "prompts")
    env = {**os.environ, "IVR_CONFIG": str(bad), "IVR_INSTANCE_PATH": str(tmp_path / "inst"),
           "IVR_DATABASE_URL": f"sqlite:///{tmp_path}/ivr.db", "IVR_VALIDATE_SIGNATURES": "false",
           "IVR_BIND": "127.0.0.1:0", "IVR_WORKERS": "2", "IVR_PIDFILE": str(tmp_path / "pid")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    try:
        run = subprocess.run([sys.executable, "-m", "gunicorn", "app:app"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as still_running:
        pytest.fail(f"gunicorn kept running: {still_running.stderr[-600:]!r}")
    # Said once, by the master, before any worker boots: two workers refusing at the same
    # instant made gunicorn raise again while stopping (a traceback, exit status 1).
    assert run.returncode == 4, run.stderr  # gunicorn's "app failed to load"
    assert run.stderr.count("lengths.pmi_max: 11 is less than pmi_min (99)") == 1, run.stderr
    assert "Booting worker" not in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "pid").exists()


def test_gunicorn_counts_in_the_apps_instance_folder_when_ivr_instance_path_is_empty():
    """The app takes an empty IVR_INSTANCE_PATH as unset (instance/); gunicorn made its
    metrics folder in the working directory's metrics/ instead."""
    env = {**os.environ, "IVR_INSTANCE_PATH": ""}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    run = subprocess.run([sys.executable, "-c", "import os, runpy; runpy.run_path("
                          "'gunicorn.conf.py'); print(os.environ['PROMETHEUS_MULTIPROC_DIR'])"],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    folder = run.stdout.strip()
    assert os.path.dirname(folder) == os.path.join("instance", "metrics"), folder


def test_starting_gunicorn_keeps_the_senders_counts_in_a_metrics_folder_the_operator_set(
        tmp_path):
    """The README has the sender (which counts ivr_helpdesk_pushes_total) given the same
    PROMETHEUS_MULTIPROC_DIR as the web workers: a restart of the web server must not
    wipe the counts of a sender that keeps running."""
    shared = tmp_path / "metrics"
    shared.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared),
           "IVR_INSTANCE_PATH": str(tmp_path / "instance")}
    sender = subprocess.Popen(
        [sys.executable, "-c",
         "from ivr import metrics\n"
         "metrics.HELPDESK_PUSHES.labels('failed').inc(); print('one', flush=True); input()\n"
         "metrics.HELPDESK_PUSHES.labels('failed').inc(); print('two', flush=True); input()\n"],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert sender.stdout.readline().strip() == "one"
        subprocess.run([sys.executable, "-c",
                        "import runpy; runpy.run_path('gunicorn.conf.py')['on_starting'](None)"],
                       cwd=ROOT, env=env, check=True)
        sender.stdin.write("\n")
        sender.stdin.flush()
        assert sender.stdout.readline().strip() == "two"
        scrape = subprocess.run(
            [sys.executable, "-c",
             "from prometheus_client import CollectorRegistry, generate_latest, multiprocess\n"
             "r = CollectorRegistry(); multiprocess.MultiProcessCollector(r)\n"
             "print(generate_latest(r).decode())"],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    finally:
        sender.stdin.write("\n")
        sender.stdin.flush()
        sender.wait(10)
    assert 'ivr_helpdesk_pushes_total{result="failed"} 2.0' in scrape


@pytest.mark.parametrize("claim, dial", [(10, 10), (39, 10), (60, 31)])
def test_a_claim_that_could_go_stale_before_its_own_dial_is_refused_at_start(
        tmp_path, claim, dial):
    """The engineer line claims a caller, whispers their summary, then dials their queue
    for up to dial_timeout_seconds. A claim shorter than that goes stale on the way, and a
    second engineer is whispered the same caller."""
    source = CONFIG.read_text(encoding="utf-8")
    source = source.replace("claim_seconds = 60", f"claim_seconds = {claim}", 1)
    source = source.replace("dial_timeout_seconds = 10", f"dial_timeout_seconds = {dial}", 1)
    with pytest.raises(ConfigError, match=rf"engineers: claim_seconds \({claim}\) .*"
                                          rf"at least {30 + dial}"):
        load_config(write(tmp_path, source))


def test_a_claim_that_outlives_the_whisper_and_the_dial_is_accepted(tmp_path):
    source = CONFIG.read_text(encoding="utf-8").replace("claim_seconds = 60",
                                                        "claim_seconds = 40", 1)
    assert load_config(write(tmp_path, source)).engineers.claim_seconds == 40


MESSAGING_SERVICE = "MG" + "0123456789abcdef" * 2


@pytest.mark.parametrize("given, kept", [
    ("+15005550006", "+15005550006"),
    ("+1 (415) 555-0100", "+14155550100"),  # an E.164 number, however it is written
    ("894546", "894546"), ("72345", "72345"),  # short codes
    ("Acme IT", "Acme IT"), ("Acme_Help-2", "Acme_Help-2"),  # alphanumeric sender IDs
    ("Acme&Co+", "Acme&Co+"),
    (MESSAGING_SERVICE, MESSAGING_SERVICE),
])
def test_every_sender_twilio_can_text_from_is_accepted(given, kept):
    settings = Settings.from_env({"IVR_VALIDATE_SIGNATURES": "false", "IVR_SMS_FROM": given})
    assert settings.sms_from == kept


@pytest.mark.parametrize("given", [
    "14155550100",  # a number without its +
    "+1415555",  # too short to be a number
    "+1 415 555 01OO",  # letters O for zeros
    "whatsapp:+14155550100",  # a channel address: callers are texted on their phones
    "MG0123456789abcdef",  # a Messaging Service SID cut short
    "AC" + "0123456789abcdef" * 2,  # the account SID, not a sender
    "Acme Support",  # twelve characters
    "Acme!", "12", "  ",
])
def test_a_sender_twilio_could_not_text_from_is_refused_at_start(given):
    """A typo in IVR_SMS_FROM was found only when every text message had failed."""
    with pytest.raises(ConfigError, match="IVR_SMS_FROM: ") as error:
        Settings.from_env({"IVR_VALIDATE_SIGNATURES": "false", "IVR_SMS_FROM": given})
    assert "14155550100" not in str(error.value)  # a number is shown by its last four digits
    assert len(str(error.value).splitlines()) == 1

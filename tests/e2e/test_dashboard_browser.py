"""The dashboard in a real browser: a simulated call over HTTP to a running server, then an
operator signs in with headless Chromium and finds the call's ticket."""

import shutil
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from ivr.sim.simulator import HttpTransport, Simulator

from ..desk_support import ADMIN_TOKEN, admin_app
from ..support import BUSINESS_OWNER, CALLER, TOKEN, US_LINE

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                "(pip install -r requirements.txt)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _find(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    return None


CHROMIUM = _find("chromium", "chromium-browser", "/usr/bin/chromium")
CHROMEDRIVER = _find("chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="the browser test needs Chromium and chromedriver "
           "(.ci/install-browser, or apt-get install chromium chromium-driver)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900"]


@pytest.fixture
def server(settings, clock):
    app = admin_app(settings, clock)
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join(timeout=10)
    app.extensions["ivr"].storage.dispose()


@pytest.fixture
def chromium(tmp_path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER,
                      log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_an_operator_signs_in_and_sees_the_ticket_of_a_call_with_priority_and_time_left(
        server, chromium, tmp_path):
    call = Simulator(HttpTransport(server), TOKEN).call(
        US_LINE, CALLER, ["2", f"{BUSINESS_OWNER[0]}#", f"{BUSINESS_OWNER[1]}#", "1"])
    assert call.outcome == "routed" and call.ticket

    chromium.get(server + "/admin/")
    assert chromium.current_url == server + "/admin/login"
    chromium.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
    chromium.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    WebDriverWait(chromium, 15).until(lambda d: d.find_elements(By.ID, "tickets"))
    assert chromium.current_url == server + "/admin/"

    row = chromium.find_element(By.CSS_SELECTOR, f'#tickets tr[data-ticket="{call.ticket}"]')
    cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
    assert cells[:5] == [call.ticket, "P1 urgent", "1 h 00 min left", "in queue", "United States"]
    assert row.get_attribute("class") == "fine"
    assert chromium.get_cookie("ivr_admin")["httpOnly"] is True
    chromium.save_screenshot(str(tmp_path / "dashboard.png"))

    chromium.set_window_size(390, 844)  # a phone: the secondary columns make way
    chromium.refresh()
    row = chromium.find_element(By.CSS_SELECTOR, f'#tickets tr[data-ticket="{call.ticket}"]')
    shown = [cell.text for cell in row.find_elements(By.TAG_NAME, "td") if cell.is_displayed()]
    assert shown == [call.ticket, "P1 urgent", "1 h 00 min left", "in queue", "United States"]
    chromium.save_screenshot(str(tmp_path / "dashboard-phone.png"))
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000


@pytest.fixture
def floor_server(settings, clock):
    """A running server whose callbacks go to a recording Twilio client."""
    from ..support import RecordingHttpClient

    app = admin_app(settings.model_copy(update={"twilio_account_sid": "AC" + "1" * 32,
                                                "public_url": "http://localhost"}), clock)
    app.extensions["twilio_http_client"] = RecordingHttpClient()
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", app
    httpd.shutdown()
    thread.join(timeout=10)
    app.extensions["ivr"].storage.dispose()


def test_the_floor_shows_who_is_waiting_and_a_callback_is_placed_from_the_keyboard(
        floor_server, chromium, clock, tmp_path):
    from selenium.webdriver.common.keys import Keys

    from ..floor_support import add_engineer, queued
    from ..support import TwilioClient

    server, app = floor_server
    ivr = app.extensions["ivr"]
    twilio = TwilioClient(app)
    add_engineer(ivr)
    older_p4 = queued(twilio, 4)
    clock.advance(minutes=3)
    newer_p1 = queued(twilio, 1)
    callback = queued(twilio, 2)
    twilio.post(f"/voice/wait-choice?ticket={callback['ticket']}&priority=2",
                **twilio.call_params(callback["sid"]), Digits="1")

    chromium.get(server + "/admin/login")
    chromium.find_element(By.ID, "token").send_keys(ADMIN_TOKEN + Keys.ENTER)
    WebDriverWait(chromium, 15).until(lambda d: d.find_elements(By.ID, "tickets"))
    chromium.get(server + "/admin/floor")
    refresh = chromium.find_element(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')
    assert refresh.get_attribute("content") == "5"
    rows = chromium.find_elements(By.CSS_SELECTOR, "#waiting tbody tr")
    assert [r.get_attribute("data-ticket") for r in rows] == [newer_p1["ticket"],
                                                              older_p4["ticket"]]
    assert [c.text for c in rows[1].find_elements(By.TAG_NAME, "td")][:4] == [
        older_p4["ticket"], "P4 low", "3 min", "en-US"]
    due = chromium.find_elements(By.CSS_SELECTOR, "#callbacks tbody tr")
    assert [r.get_attribute("data-ticket") for r in due] == [callback["ticket"]]

    # From the keyboard alone: Tab to the Call back button, Enter.
    label = f"Call back ticket {callback['ticket']}"
    body = chromium.find_element(By.TAG_NAME, "body")
    body.click()
    for _ in range(40):
        chromium.switch_to.active_element.send_keys(Keys.TAB)
        if chromium.switch_to.active_element.text == label:
            break
    assert chromium.switch_to.active_element.text == label
    chromium.switch_to.active_element.send_keys(Keys.ENTER)
    WebDriverWait(chromium, 15).until(
        lambda d: any("Calling aiko now" in p.text for p in d.find_elements(By.CLASS_NAME, "flash")))
    assert len(app.extensions["twilio_http_client"].requests) == 1
    chromium.save_screenshot(str(tmp_path / "floor.png"))

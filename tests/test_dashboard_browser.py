"""The operator's dashboard in a real browser: Debian's chromium, headless, driven by
selenium through chromium-driver, against `hivegen serve --listen` on the simulated host.

One hive, one server and one browser for the module (a hive and a browser each take
seconds to start): alice spawned, and three pending proposals on top of each other (a
good change to approve, one to deny with a note, one whose subject and diff are hostile).
Each test logs the browser in if it is not, so that none depends on another's order.

Nothing is downloaded: the browser and its driver are Debian's (`.ci/run` installs
`chromium chromium-driver`); the driver's path is given, so selenium-manager never runs
(and SE_OFFLINE forbids it to fetch anything). Without them the tests are skipped, but
not in CI (CI=true), where a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import IO, Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from hivegen.config import load_config
from hivegen.hive import Hive
from hivegen.proposals import Proposals
from hivegen.store import ProposalStatus, Store
from tests.conftest import commit_dir, sim_config
from tests.serve_helpers import Server, serving

pytestmark = pytest.mark.xdist_group("browser")

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SESSION_COOKIE = "hivegen_session"
WAIT = 20.0  # a page, a form's answer
BUILD_WAIT = 120.0  # an approve's build and deploy (a few seconds on the simulated host)

GOOD = '{ ... }: { environment.variables.GREETING = "hello"; }\n'
DENIED = '{ ... }: { environment.variables.GREETING = "HELLO!!!"; }\n'
HOSTILE_SUBJECT = (
    '<script>document.title="pwned"</script> \x1b[31mred\x1b[0m <img src=x onerror=alert(1)>'
)
HOSTILE_COMMENT = "# <script>alert(1)</script> \x1b]52;c;AAAA\x07"
HOSTILE = f'{HOSTILE_COMMENT}\n{{ ... }}: {{ environment.variables.GREETING = "hi"; }}\n'
# What the page must show instead: the markup as text, each control as a visible escape.
HOSTILE_SUBJECT_SHOWN = (
    '<script>document.title="pwned"</script> \\x1b[31mred\\x1b[0m <img src=x onerror=alert(1)>'
)
HOSTILE_COMMENT_SHOWN = "# <script>alert(1)</script> \\x1b]52;c;AAAA\\x07"
DENY_NOTE = "too loud: keep <b>GREETING</b> as it is"


class FormRefusedAsCrossSite(AssertionError):
    """The dashboard refused a form the browser posted from the dashboard's own page as
    coming from another site (the page says "the form came from another site")."""


# A browser sends `Origin: null` with a form POST when the page's Referrer-Policy is
# no-referrer, even to the page's own origin: the dashboard once refused every form that
# way (auth.py now sends same-origin). `submit` fails loudly if that ever comes back.


def _browser_or_skip() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if not missing:
        return
    reason = f"{' and '.join(missing)} missing (apt-get install chromium chromium-driver)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}: CI must run the dashboard's browser tests (.ci/run installs it)")
    pytest.skip(reason)


# -- plain HTTP beside the browser ------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: Message
    body: str


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(  # noqa: PLR0917 (urllib's signature)
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None  # a 303 is the answer to look at, not a page to go to


_OPENER = urllib.request.build_opener(_NoRedirects)


def http(
    url: str,
    *,
    form: dict[str, str] | None = None,
    cookie: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request over TCP with urllib (a POST when `form` is given), redirects not
    followed, an error status returned rather than raised."""
    sent = dict(headers or {})
    if cookie is not None:
        sent["Cookie"] = f"{SESSION_COOKIE}={cookie}"
    data = None if form is None else urllib.parse.urlencode(form).encode()
    assert url.startswith("http://127.0.0.1:"), url
    request = urllib.request.Request(url, data=data, headers=sent)  # noqa: S310 (checked)
    try:
        with _OPENER.open(request, timeout=WAIT) as response:
            return Reply(response.status, response.headers, response.read().decode())
    except urllib.error.HTTPError as exc:
        with exc:
            return Reply(exc.code, exc.headers, exc.read().decode())


# -- the hive, the server and the browser -----------------------------------------------


@dataclass
class Dashboard:
    url: str  # http://127.0.0.1:PORT/
    token: str
    config: Path
    server: Server
    driver: webdriver.Chrome
    good: int  # the proposal ids
    denied: int
    hostile: int

    def status_of(self, proposal_id: int) -> tuple[ProposalStatus, str]:
        """A proposal's status and note, read from the hive's database."""
        proposal = Store(load_config(self.config).layout.database).get(proposal_id)
        return proposal.status, proposal.note


def _make_hive(tmp: Path, hyperhive_flake: str) -> tuple[Path, int, int, int]:
    config = sim_config(tmp, hyperhive_flake)
    hive = Hive(load_config(config))
    hive.spawn("alice")
    proposed = hive.layout.proposed("alice")
    proposals = Proposals(hive)
    ids = []
    # Each on top of the one before: approving the first supersedes neither of the others.
    for agent_nix, subject in ((GOOD, "greet"), (DENIED, "shout"), (HOSTILE, HOSTILE_SUBJECT)):
        (proposed / "agent.nix").write_text(agent_nix)
        ids.append(proposals.propose("alice", commit_dir(proposed, subject)).id)
    return config, ids[0], ids[1], ids[2]


def _start_browser() -> webdriver.Chrome:
    options = Options()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)  # --no-sandbox: the tests run as root
    options.binary_location = str(CHROMIUM)
    # An alert that a page opens stays open (not dismissed by the driver), so that a
    # check for one sees it.
    options.unhandled_prompt_behavior = "ignore"
    # The performance log has the EventSource messages the job page receives.
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(WAIT)
    return driver


@pytest.fixture(scope="module")
def dashboard(
    tmp_path_factory: pytest.TempPathFactory, hyperhive_flake: str
) -> Iterator[Dashboard]:
    _browser_or_skip()
    tmp = tmp_path_factory.mktemp("dashboard")
    config, good, denied, hostile = _make_hive(tmp, hyperhive_flake)
    with (
        pytest.MonkeyPatch.context() as env,
        serving(config, "--listen", "127.0.0.1:0") as server,
    ):
        env.setenv("SE_OFFLINE", "true")  # selenium must never fetch a browser or driver
        url = server.url
        token = (tmp / "state" / "dashboard.token").read_text().strip()
        driver = _start_browser()
        try:
            yield Dashboard(url, token, config, server, driver, good, denied, hostile)
        finally:
            driver.quit()


@pytest.fixture
def driver(dashboard: Dashboard) -> webdriver.Chrome:
    """The module's browser, logged in.

    A test that is not about logging in gets its session from a POST of the token over
    plain HTTP (no Origin header), put in the browser as the cookie the login's answer
    sets: test_login_and_logout logs in through the form.
    """
    driver = dashboard.driver
    driver.get(dashboard.url)
    if driver.current_url != dashboard.url:
        assert driver.current_url == dashboard.url + "login"
        reply = http(dashboard.url + "login", form={"token": dashboard.token})
        assert reply.status == 303, reply.body
        found = re.search(rf"{SESSION_COOKIE}=([^;]+)", reply.headers["Set-Cookie"])
        assert found is not None, reply.headers
        driver.add_cookie(
            {"name": SESSION_COOKIE, "value": found.group(1), "path": "/", "httpOnly": True}
        )
        driver.get(dashboard.url)
    assert driver.current_url == dashboard.url
    assert driver.find_elements(By.ID, "agents")
    return driver


# -- browser helpers --------------------------------------------------------------------


def wait(driver: webdriver.Chrome, timeout: float = WAIT) -> WebDriverWait[webdriver.Chrome]:
    return WebDriverWait(driver, timeout)


def submit(driver: webdriver.Chrome, button_id: str, *, confirm: str | None = None) -> None:
    """Click a form's button and wait for the page that answers it. `confirm`: the
    question the form's data-confirm makes the page ask (window.confirm), accepted."""
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, button_id).click()
    if confirm is not None:
        alert = wait(driver).until(ec.alert_is_present())
        assert alert.text == confirm
        alert.accept()
    wait(driver).until(ec.staleness_of(page))
    wait(driver).until(lambda d: d.execute_script("return document.readyState") == "complete")
    refused = driver.find_elements(By.ID, "error")
    if refused and "the form came from another site" in refused[0].text:
        # Posted from the dashboard's own page: never another site's (see above).
        raise FormRefusedAsCrossSite(
            f"#{button_id} on its own page was refused as cross-site: {refused[0].text!r}"
        )


def assert_no_alert(driver: webdriver.Chrome) -> None:
    with pytest.raises(NoAlertPresentException):
        _ = driver.switch_to.alert.text


def cells(row: WebElement) -> list[str]:
    return [td.text for td in row.find_elements(By.TAG_NAME, "td")]


def performance_log(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The DevTools events since the last call (the log is drained)."""
    entries = driver.get_log("performance")  # type: ignore[no-untyped-call]
    return [json.loads(entry["message"])["message"] for entry in entries]


def event_source_messages(events: list[dict[str, Any]], url: str) -> list[tuple[str, Any]]:
    """(event name, decoded data) of every server-sent event the page received from `url`."""
    requests = {
        e["params"]["requestId"]
        for e in events
        if e["method"] == "Network.requestWillBeSent" and e["params"]["request"]["url"] == url
    }
    return [
        (e["params"]["eventName"], json.loads(e["params"]["data"]))
        for e in events
        if e["method"] == "Network.eventSourceMessageReceived"
        and e["params"]["requestId"] in requests
    ]


# -- the tests --------------------------------------------------------------------------


def test_login_and_logout(dashboard: Dashboard) -> None:
    driver = dashboard.driver
    driver.delete_all_cookies()
    driver.get(dashboard.url)
    assert driver.current_url == dashboard.url + "login"  # redirected
    assert driver.title == "log in · hivegen"
    assert not driver.find_elements(By.ID, "logout")

    driver.find_element(By.ID, "token").send_keys("not-the-token-" + "x" * 20)
    submit(driver, "login")
    assert driver.find_element(By.ID, "error").text == "wrong token"
    assert driver.get_cookie(SESSION_COOKIE) is None
    driver.get(dashboard.url)
    assert driver.current_url == dashboard.url + "login"

    driver.find_element(By.ID, "token").send_keys(dashboard.token)
    submit(driver, "login")
    assert driver.current_url == dashboard.url
    assert driver.find_elements(By.ID, "agents")
    cookie = driver.get_cookie(SESSION_COOKIE)
    assert cookie is not None
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"

    submit(driver, "logout")
    assert driver.current_url == dashboard.url + "login"
    assert driver.get_cookie(SESSION_COOKIE) is None
    # The session is gone on the server too, not only from the browser.
    reply = http(dashboard.url, cookie=cookie["value"])
    assert (reply.status, reply.headers["Location"]) == (303, "/login")


def test_approve_streams_the_build_and_deploys(
    dashboard: Dashboard, driver: webdriver.Chrome
) -> None:
    url, good = dashboard.url, dashboard.good
    agents = driver.find_elements(By.CSS_SELECTOR, "#agents tr[data-agent]")
    # Only spawned agents are listed: alice, not the manager hm1nd (never spawned here).
    assert [row.get_attribute("data-agent") for row in agents] == ["alice"]
    assert agents[0].find_element(By.CSS_SELECTOR, "td.state").text == "running"

    driver.find_element(By.CSS_SELECTOR, f'#pending tr[data-proposal="{good}"] a').click()
    wait(driver).until(ec.url_to_be(f"{url}proposals/{good}"))
    assert driver.find_element(By.ID, "subject").text == "greet"
    assert driver.find_element(By.ID, "status").text == "pending"
    diff = driver.find_element(By.ID, "diff").text
    assert "+" + GOOD.strip() in diff.splitlines()

    performance_log(driver)  # drained: what follows is the job page's

    submit(driver, "approve", confirm=f"Build and deploy proposal {good} to alice?")
    assert re.fullmatch(rf"{re.escape(url)}jobs/\d+", driver.current_url), driver.current_url
    job_url = driver.current_url
    state = driver.find_element(By.ID, "job-state")
    wait(driver, BUILD_WAIT).until(
        lambda _: state.text in ("done", "failed"), f"{job_url} never said done or failed"
    )
    result = driver.find_element(By.ID, "result").text
    assert state.text == "done", result
    assert f"as deployed/{good}" in result
    shown = driver.find_element(By.ID, "output").get_property("textContent")
    assert isinstance(shown, str)
    assert re.search(r"^\[h-alice\] ", shown, re.MULTILINE), shown  # the build's output

    # The lines came over EventSource (the job was still building when the page loaded),
    # and the page shows exactly those, in order.
    messages = event_source_messages(performance_log(driver), job_url + "/events")
    lines = [data for name, data in messages if name == "line"]
    assert "".join(f"{line}\n" for line in lines) == shown
    assert messages[-1][0] == "done"
    assert messages[-1][1]["ok"] is True
    assert messages[-1][1]["result"] == result

    driver.find_element(By.ID, "next").click()
    wait(driver).until(ec.url_to_be(url + "agents/alice"))
    assert driver.find_element(By.ID, "current").text == f"deployed/{good}"
    row = driver.find_element(By.CSS_SELECTOR, f'#history tr[data-tag="deployed/{good}"]')
    assert row.find_element(By.CSS_SELECTOR, "td.status").text == "deployed"
    assert dashboard.status_of(good)[0] is ProposalStatus.DEPLOYED

    driver.get(url)
    assert not driver.find_elements(By.CSS_SELECTOR, f'#pending tr[data-proposal="{good}"]')
    alice = driver.find_element(By.CSS_SELECTOR, '#agents tr[data-agent="alice"]')
    assert f"deployed/{good}" in cells(alice)[4]


def test_deny_with_a_note(dashboard: Dashboard, driver: webdriver.Chrome) -> None:
    url, denied = dashboard.url, dashboard.denied
    driver.get(f"{url}proposals/{denied}")
    assert driver.find_element(By.ID, "status").text == "pending"
    driver.find_element(By.ID, "note").send_keys(DENY_NOTE)
    submit(driver, "deny")
    assert driver.current_url == f"{url}?notice=proposal+{denied}+denied"
    assert driver.find_element(By.ID, "notice").text == f"proposal {denied} denied"
    assert not driver.find_elements(By.CSS_SELECTOR, f'#pending tr[data-proposal="{denied}"]')
    assert dashboard.status_of(denied) == (ProposalStatus.DENIED, DENY_NOTE)

    driver.get(f"{url}proposals/{denied}")
    assert driver.find_element(By.ID, "status").text == "denied"
    note = driver.find_element(By.XPATH, "//dt[.='note']/following-sibling::dd[1]")
    assert note.text == DENY_NOTE
    assert not driver.find_elements(By.ID, "approve")

    driver.get(url + "agents/alice")
    row = driver.find_element(By.CSS_SELECTOR, f'#history tr[data-tag="denied/{denied}"]')
    assert row.find_element(By.CSS_SELECTOR, "td.status").text == "denied"
    assert cells(row)[5] == DENY_NOTE  # as text: no <b> made of the note
    assert not row.find_elements(By.TAG_NAME, "b")


def _assert_inert(driver: webdriver.Chrome, url: str, title: str) -> None:
    """Nothing of the hostile proposal ran or became markup on the page."""
    assert driver.title == title  # not "pwned"
    assert_no_alert(driver)
    scripts = [s.get_attribute("src") for s in driver.find_elements(By.TAG_NAME, "script")]
    assert scripts == [url + "static/dashboard.js"]  # the head's, and no other
    assert not driver.find_elements(By.TAG_NAME, "img")
    assert "\x1b" not in driver.find_element(By.TAG_NAME, "body").text


def test_hostile_subject_and_diff_stay_text(dashboard: Dashboard, driver: webdriver.Chrome) -> None:
    url, hostile = dashboard.url, dashboard.hostile
    row = driver.find_element(By.CSS_SELECTOR, f'#pending tr[data-proposal="{hostile}"]')
    subject = row.find_element(By.CSS_SELECTOR, "td.subject")
    assert subject.text == HOSTILE_SUBJECT_SHOWN
    assert not subject.find_elements(By.CSS_SELECTOR, "script, img")
    _assert_inert(driver, url, "hive · hivegen")

    row.find_element(By.CSS_SELECTOR, "a").click()
    wait(driver).until(ec.url_to_be(f"{url}proposals/{hostile}"))
    subject = driver.find_element(By.ID, "subject")
    assert subject.text == HOSTILE_SUBJECT_SHOWN
    assert not subject.find_elements(By.CSS_SELECTOR, "script, img")
    diff = driver.find_element(By.ID, "diff")
    assert "+" + HOSTILE_COMMENT_SHOWN in diff.text.splitlines()
    assert not diff.find_elements(By.CSS_SELECTOR, "script, img")
    _assert_inert(driver, url, f"proposal {hostile} · hivegen")


def test_headers_csrf_and_host(dashboard: Dashboard, driver: webdriver.Chrome) -> None:
    url, hostile = dashboard.url, dashboard.hostile
    cookie = driver.get_cookie(SESSION_COOKIE)
    assert cookie is not None
    session = cookie["value"]

    for reply in (http(url + "login"), http(url, cookie=session)):
        assert reply.status == 200, reply.body
        assert "script-src 'self'" in reply.headers["Content-Security-Policy"]
        assert reply.headers["X-Frame-Options"] == "DENY"

    # A logged-in POST without the form's CSRF field (or with a wrong one) does nothing.
    for action in ("approve", "deny"):
        for form in ({"note": "no csrf"}, {"note": "forged", "csrf": "0" * 64}):
            reply = http(f"{url}proposals/{hostile}/{action}", form=form, cookie=session)
            assert reply.status == 403, (action, form, reply.body)
            assert "CSRF token is missing or stale" in reply.body
    assert dashboard.status_of(hostile) == (ProposalStatus.PENDING, "")
    driver.get(url)
    assert driver.find_elements(By.CSS_SELECTOR, f'#pending tr[data-proposal="{hostile}"]')
    jobs = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#jobs li")]
    assert not [j for j in jobs if f"proposal {hostile} " in j], jobs
    driver.get(f"{url}proposals/{hostile}")
    assert driver.find_element(By.ID, "status").text == "pending"

    # A name that is not the listener's own (DNS rebinding) gets nothing, logged in or not.
    for with_cookie in (None, session):
        reply = http(url, cookie=with_cookie, headers={"Host": "evil.example"})
        assert reply.status == 421, reply.body
        assert "unexpected Host header" in reply.body

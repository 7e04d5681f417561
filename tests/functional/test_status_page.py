"""The status page at / in a real headless Chromium, against a real daemon subprocess.

Debian's chromium and chromium-driver, driven by selenium; one browser for
the module. The daemon has read, agent and admin tokens, so the page is
tested as it must behave where tokens matter: nothing shown without the
read token, actions refused without the admin token. A second daemon runs
under auth_strategy = keystone against a real Keystone (tests/keystone_server.py),
for the page with Keystone tokens of each role. Every wait is a
WebDriverWait with a deadline; timings are printed as figures.

Screenshots: set SERVICEGROUP_SCREENSHOTS to a directory (`doc` for the
ones in the repository) and the tests save the page there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from servicegroup.api import ServiceGroup
from servicegroup.client import Client
from servicegroup.service import Registration, Service
from tests.functional.daemon import Daemon, config_text, free_port
from tests.functional.test_daemon import migrated_sqlite
from tests.keystone_server import Keystone, daemon_options, keystone_or_fail
from tests.servers import IN_CI

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# As root, on a machine with no network: no sandbox (it needs an unprivileged
# user), no GPU, and none of the background connections Chromium makes on its
# own (their refusals would be console noise, and they are not the page's).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1300",
]
READ, AGENT, ADMIN = "page-read-token", "page-agent-token", "page-admin-token"
HOSTILE = "<img src=x onerror=alert(1)>"
BEAT_EVERY = 0.2
TIMINGS = {
    "report_interval": BEAT_EVERY,
    "service_down_time": 2.0,
    "events__sweep_interval": 0.2,
}
DEADLINE = 15.0
FLEET_AT_SCALE = 10_000
KEYSTONE_PASSWORD = "page-user-secret-3f1"
DASH = "\u2013"  # the page writes ranges as 1\u2013100


class Beater:
    """Beats for a set of services, in one request per round, until told to stop one."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.services: dict[str, Service] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(BEAT_EVERY):
            self.client.heartbeat_many(list(self.services.values()))

    def start(self) -> Beater:
        self.client.heartbeat_many(list(self.services.values()))
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


def _start_daemon(tmp: Path, options: dict[str, Any], url: str | None = None) -> Daemon:
    port = free_port()
    config = tmp / "sg.conf"
    config.write_text(config_text(url or migrated_sqlite(tmp / "sg.sqlite"), port, options))
    return Daemon(config, port, tmp / "daemon.log").start().wait_ready()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    options = {
        **TIMINGS,
        "api__read_tokens": [READ],
        "api__agent_tokens": [AGENT],
        "api__admin_tokens": [ADMIN],
    }
    running = _start_daemon(tmp_path_factory.mktemp("status-page"), options)
    yield running
    running.stop()
    assert "Traceback" not in running.log(), running.log()


@pytest.fixture(scope="module")
def agent(daemon: Daemon) -> Iterator[Client]:
    with Client(daemon.url, AGENT) as client:
        yield client


@pytest.fixture(scope="module")
def beater(agent: Client) -> Iterator[Beater]:
    running = Beater(agent)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def fleet(daemon: Daemon, agent: Client, beater: Beater) -> dict[str, Service]:
    """Five beating services in three binaries and three zones, one never beating."""
    beating = {
        "compute-1": agent.register("compute-1", "nova-compute", "compute", "az1", 3),
        "compute-2": agent.register("compute-2", "nova-compute", "compute", "az1", 4),
        "compute-3": agent.register("compute-3", "nova-compute", "compute", "az2", 4),
        "scheduler-1": agent.register("scheduler-1", "nova-scheduler", None, "az1", 5),
        HOSTILE: agent.register(HOSTILE, "nova-conductor", None, None, 5),
    }
    silent = agent.register("compute-9", "nova-compute", "compute", "az2", 2)
    beater.services.update(beating)
    beater.start()
    agent.claim(beating["compute-1"], "instance", "i-42", "rebuilding")
    with Client(daemon.url, READ) as reader:
        _wait_for(lambda: len(reader.get_all(state="up")) == len(beating), "the fleet up")
    return {**beating, "compute-9": silent}


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        why = f"{', '.join(missing)} missing: apt-get install chromium chromium-driver"
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)
    profile = tempfile.mkdtemp(prefix="sg-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=ChromeService(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _screenshot(driver: WebDriver, name: str) -> None:
    where = os.environ.get("SERVICEGROUP_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(where) / name))


def _console(driver: WebDriver) -> list[str]:
    """The browser's errors since the last call (reading the log empties it)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _wait(driver: WebDriver, predicate: Callable[[WebDriver], Any], what: str) -> Any:
    return WebDriverWait(
        driver, DEADLINE, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException]
    ).until(predicate, message=what)


def _text(driver: WebDriver, css: str) -> list[list[str]]:
    """Each row of a table body as its cells' texts, read in one script call."""
    rows: list[list[str]] = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map("
        "tr => [...tr.cells].map(td => td.textContent))",
        css,
    )
    return rows


def _use_tokens(driver: WebDriver, read: str, admin: str) -> None:
    for field, value in (("read-token", read), ("admin-token", admin)):
        box = driver.find_element(By.ID, field)
        box.clear()
        if value:
            box.send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "#tokens button[type=submit]").click()


def _row(driver: WebDriver, host: str) -> dict[str, Any] | None:
    """The services table's row for `host`, read in one script call: rows are re-rendered
    on every update, so an element found now may be gone by the next call."""
    found: dict[str, Any] | None = driver.execute_script(
        "const tr = [...document.querySelectorAll('#services tbody tr')]"
        ".find(tr => tr.cells.length > 1 && tr.cells[1].textContent === arguments[0]);"
        "return tr ? {cls: tr.className, cells: [...tr.cells].map(td => td.textContent),"
        " text: tr.textContent} : null",
        host,
    )
    return found


def _api(daemon: Daemon, path: str) -> Any:
    answer = httpx.get(f"{daemon.url}{path}", headers={"Authorization": f"Bearer {READ}"})
    answer.raise_for_status()
    return answer.json()


def _summary_rows(summary: dict[str, Any]) -> list[list[str]]:
    """GET /v1/summary's groups as the page's fleet table must show them."""
    rows = []
    for g in summary["groups"]:
        low, high = g["min_version"], g["max_version"]
        versions = str(low) if low == high else f"{low}{DASH}{high}"
        counts = [str(g[k]) for k in ("total", "up", "down", "unknown", "disabled", "forced_down")]
        rows.append([g["binary"], g["availability_zone"] or "—", *counts, versions])
    return rows


def test_viewing_needs_the_read_token(
    daemon: Daemon, fleet: dict[str, Service], browser: WebDriver
) -> None:
    browser.get(f"{daemon.url}/")
    message = _wait(browser, lambda d: d.find_element(By.ID, "message").text, "a refusal")
    assert "401" in message
    assert _text(browser, "#services tbody tr") == []
    refusals = _console(browser)
    assert refusals and all("401" in line for line in refusals), refusals


def test_the_page_loads_and_its_counts_match_the_api(
    daemon: Daemon, fleet: dict[str, Service], browser: WebDriver
) -> None:
    _use_tokens(browser, READ, "")

    def matches(driver: WebDriver) -> bool:
        summary = _api(daemon, "/v1/summary")
        listed = _api(daemon, "/v1/services?sort=state&order=asc&limit=100")
        page_services = [(r[1], r[0]) for r in _text(driver, "#services tbody tr")]
        api_services = [(s["host"], s["state"]) for s in listed["services"]]
        return (
            _text(driver, "#summary tbody tr") == _summary_rows(summary)
            and page_services == api_services
            and driver.find_element(By.ID, "range").text == f"1{DASH}{listed['total']} of 6"
        )

    _wait(browser, matches, "the page's counts to match GET /v1/summary and /v1/services")
    totals = browser.find_element(By.ID, "totals").text
    assert totals.startswith("6 services: 5 up, 1 down")
    claims = _text(browser, "#claims tbody tr")
    assert [c[:5] for c in claims] == [
        ["instance/i-42", "rebuilding", "compute-1 (nova-compute)", "held", "1"]
    ]
    # The silent service is down and stands out: first, in a down row.
    silent = _row(browser, "compute-9")
    assert silent is not None and "state-down" in silent["cls"]
    assert _text(browser, "#services tbody tr")[0][1] == "compute-9"
    _wait(browser, lambda d: d.find_element(By.ID, "live").text == "live", "the live stream")
    _screenshot(browser, "status-page.png")
    assert _console(browser) == []


def test_the_hostile_host_renders_as_text_and_runs_nothing(
    daemon: Daemon, fleet: dict[str, Service], browser: WebDriver
) -> None:
    row = _wait(browser, lambda d: _row(d, HOSTILE), "the hostile host's row")
    assert row["cells"][1] == HOSTILE
    # The page has no image of its own: any img is injected markup.
    assert browser.find_elements(By.TAG_NAME, "img") == []
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - raises when no alert is open
    assert _console(browser) == []


def test_a_service_that_stops_beating_turns_down_without_a_reload(
    daemon: Daemon, fleet: dict[str, Service], beater: Beater, browser: WebDriver
) -> None:
    browser.execute_script("window.stillTheSamePage = true")
    stopped = time.monotonic()
    del beater.services["compute-3"]

    def down(driver: WebDriver) -> bool:
        row = _row(driver, "compute-3")
        return row is not None and "state-down" in row["cls"]

    _wait(browser, down, "compute-3 down on screen")
    print(f"compute-3 shown down {time.monotonic() - stopped:.2f} s after its beats stopped")
    assert browser.execute_script("return window.stillTheSamePage") is True
    events = _text(browser, "#events tbody tr")
    assert any(e[1] == "compute-3" and e[3] == "up → down" for e in events), events
    assert _console(browser) == []


def _confirm(driver: WebDriver, reason: str | None) -> None:
    dialog = _wait(driver, lambda d: d.find_element(By.ID, "confirm"), "the confirm dialog")
    _wait(driver, lambda d: dialog.get_attribute("open") is not None, "the dialog open")
    if reason is not None:
        driver.find_element(By.ID, "confirm-reason").send_keys(reason)
    driver.find_element(By.ID, "confirm-ok").click()


def _click_action(driver: WebDriver, host: str, label: str) -> None:
    def click(d: WebDriver) -> bool:
        for row in d.find_elements(By.CSS_SELECTOR, "#services tbody tr"):
            cells = row.find_elements(By.TAG_NAME, "td")
            if len(cells) > 1 and cells[1].get_attribute("textContent") == host:
                for b in row.find_elements(By.TAG_NAME, "button"):
                    if b.text == label:
                        b.click()
                        return True
        return False

    _wait(driver, click, f"the {label} button of {host}")


def test_an_admin_action_is_refused_without_the_admin_token(
    daemon: Daemon, fleet: dict[str, Service], browser: WebDriver
) -> None:
    _use_tokens(browser, READ, READ)  # actions shown, but the token may only read
    _click_action(browser, "compute-2", "disable")
    _confirm(browser, "maintenance")
    message = _wait(
        browser,
        lambda d: (d.find_element(By.ID, "message").text or "").startswith("Refused") and d,
        "the refusal",
    ).find_element(By.ID, "message")
    assert "403" in message.text
    assert _api(daemon, f"/v1/services/{fleet['compute-2'].uuid}")["disabled"] is False
    refusals = _console(browser)
    assert refusals and all("403" in line for line in refusals), refusals


def test_admin_actions_work_with_the_admin_token(
    daemon: Daemon, fleet: dict[str, Service], browser: WebDriver
) -> None:
    _use_tokens(browser, READ, ADMIN)
    compute_2 = f"/v1/services/{fleet['compute-2'].uuid}"

    _click_action(browser, "compute-2", "disable")
    _confirm(browser, "maintenance window")

    def flagged(driver: WebDriver) -> bool:
        row = _row(driver, "compute-2")
        return row is not None and "disabled: maintenance window" in row["text"]

    _wait(browser, flagged, "compute-2 shown disabled")
    assert _api(daemon, compute_2)["disabled_reason"] == "maintenance window"

    _click_action(browser, "scheduler-1", "force down")
    _confirm(browser, None)
    _wait(
        browser,
        lambda d: (row := _row(d, "scheduler-1")) is not None and "forced down" in row["text"],
        "scheduler-1 shown forced down",
    )

    # Cancel is a real way out: nothing is deleted.
    _click_action(browser, "compute-9", "delete")
    _wait(browser, lambda d: d.find_element(By.ID, "confirm").get_attribute("open"), "dialog")
    _screenshot(browser, "status-page-confirm.png")
    browser.find_element(By.ID, "confirm-cancel").click()
    assert _api(daemon, f"/v1/services/{fleet['compute-9'].uuid}")["host"] == "compute-9"

    _click_action(browser, "compute-9", "delete")
    _confirm(browser, None)
    _wait(browser, lambda d: _row(d, "compute-9") is None, "compute-9 gone from the table")

    def release(d: WebDriver) -> bool:
        found = d.find_elements(By.CSS_SELECTOR, "#claims tbody button")
        if found:
            found[0].click()
        return bool(found)

    _wait(browser, release, "the force-release button")
    _confirm(browser, "stuck rebuild")
    _wait(
        browser,
        lambda d: _text(d, "#claims tbody tr")[0][3] == "released",
        "the claim shown released",
    )
    claim = _api(daemon, "/v1/claims/instance/i-42")
    assert (claim["state"], claim["epoch"], claim["reason"]) == (
        "released",
        2,
        "force_released: stuck rebuild",
    )
    assert _console(browser) == []


# Run in the page: count its refreshes (each is one GET /v1/services?...) and any
# GET /v1/summary, and hold the answers to the former until openRefreshGate().
HOLD_REFRESHES = """
window.pageRequests = {services: 0, summary: 0};
let openGate;
const gate = new Promise((resolve) => { openGate = resolve; });
window.openRefreshGate = () => openGate();
const send = window.fetch;
window.fetch = (path, init) => {
  if (path.startsWith("/v1/summary")) window.pageRequests.summary += 1;
  if (!path.startsWith("/v1/services?")) return send(path, init);
  window.pageRequests.services += 1;
  return send(path, init).then((answer) => gate.then(() => answer));
};
"""
BURST = 10


def test_a_burst_of_events_makes_one_refresh_after_the_one_in_flight(
    daemon: Daemon, fleet: dict[str, Service], agent: Client, browser: WebDriver
) -> None:
    _use_tokens(browser, READ, "")
    _wait(browser, lambda d: d.find_element(By.ID, "live").text == "live", "the live stream")
    browser.execute_script(HOLD_REFRESHES)
    browser.find_element(By.ID, "f-clear").click()  # a refresh, its answer held
    _wait(
        browser,
        lambda d: d.execute_script("return window.pageRequests.services") == 1,
        "a refresh in flight",
    )
    burst = [f"burst-{i}" for i in range(BURST)]
    for host in burst:
        agent.register(host, "nova-burst")
        # Each registration's event reaches the page on its own, while the refresh waits.
        _wait(
            browser,
            lambda d, host=host: any(e[1] == host for e in _text(d, "#events tbody tr")),
            f"{host}'s event on the page",
        )
    browser.execute_script("window.openRefreshGate()")

    def listed(driver: WebDriver) -> bool:
        return set(burst) <= {row[1] for row in _text(driver, "#services tbody tr")}

    _wait(browser, listed, "the burst's services listed")
    sent = browser.execute_script("return window.pageRequests")
    # The held refresh and one after it for all ten events (the 10 s safety
    # refresh may add one); the counts came with the page of services.
    assert 2 <= sent["services"] <= 3, sent
    assert sent["summary"] == 0, sent
    assert _console(browser) == []


# -- under [api] auth_strategy = keystone, with a real Keystone ---------------------------


@dataclass
class KeystoneStage:
    keystone: Keystone
    fleet: str  # the project the daemon accepts
    daemon: Daemon
    services: dict[str, Service]

    def token(self, user: str) -> str:
        return self.keystone.token(user, KEYSTONE_PASSWORD, project_id=self.fleet)

    def api(self, path: str) -> Any:
        answer = httpx.get(
            f"{self.daemon.url}{path}", headers={"X-Auth-Token": self.token("reader")}
        )
        answer.raise_for_status()
        return answer.json()


@pytest.fixture(scope="module")
def keystone_stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeystoneStage]:
    """A daemon under keystone, and three services an agent registered and beat once."""
    tmp = tmp_path_factory.mktemp("status-page-keystone")
    with contextlib.ExitStack() as stack:
        keystone = stack.enter_context(keystone_or_fail(tmp))
        fleet = keystone.project("fleet")
        keystone.service_user(KEYSTONE_PASSWORD)
        for user, role in (("reader", "reader"), ("agent", "service"), ("operator", "admin")):
            keystone.user(user, KEYSTONE_PASSWORD, fleet, role)
        daemon = _start_daemon(tmp, daemon_options(keystone, fleet, KEYSTONE_PASSWORD))
        stack.callback(daemon.stop)
        token = keystone.token("agent", KEYSTONE_PASSWORD, project_id=fleet)
        with Client(daemon.url, token, auth_strategy="keystone") as agent:
            services = {
                "ks-compute-1": agent.register("ks-compute-1", "nova-compute", None, "az1", 7),
                "ks-compute-2": agent.register("ks-compute-2", "nova-compute", None, "az2", 7),
                "ks-scheduler-1": agent.register("ks-scheduler-1", "nova-scheduler", None, "az1"),
            }
            agent.heartbeat_many(list(services.values()))  # up for service_down_time (60 s)
        yield KeystoneStage(keystone, fleet, daemon, services)
        assert "Traceback" not in daemon.log(), daemon.log()


# Run in the page: every request the page makes from now on records its header names.
RECORD_HEADERS = """
window.sentHeaders = [];
const send = window.fetch;
window.fetch = (path, init) => {
  window.sentHeaders.push(Object.keys((init && init.headers) || {}));
  return send(path, init);
};
"""


def _sent_headers(driver: WebDriver) -> list[list[str]]:
    sent: list[list[str]] = driver.execute_script("return window.sentHeaders")
    return sent


def test_under_keystone_a_reader_token_shows_the_fleet(
    keystone_stage: KeystoneStage, browser: WebDriver
) -> None:
    browser.get(f"{keystone_stage.daemon.url}/")
    message = _wait(browser, lambda d: d.find_element(By.ID, "message").text, "a refusal")
    assert "401" in message and "Keystone token" in message
    assert browser.find_element(By.ID, "read-token-label").text == "Keystone token"
    assert browser.find_element(By.ID, "admin-token-label").text == "Admin Keystone token"
    refusals = _console(browser)
    assert refusals and all("401" in line for line in refusals), refusals

    browser.execute_script(RECORD_HEADERS)
    _use_tokens(browser, keystone_stage.token("reader"), "")

    def shown(driver: WebDriver) -> bool:
        summary = keystone_stage.api("/v1/summary")
        hosts = {row[1] for row in _text(driver, "#services tbody tr")}
        return _text(driver, "#summary tbody tr") == _summary_rows(summary) and hosts == set(
            keystone_stage.services
        )

    _wait(browser, shown, "the fleet shown with a reader-role token")
    assert browser.find_element(By.ID, "totals").text.startswith("3 services: 3 up")
    _wait(browser, lambda d: d.find_element(By.ID, "live").text == "live", "the live stream")
    sent = _sent_headers(browser)
    assert sent and all("X-Auth-Token" in names for names in sent), sent
    assert not any("Authorization" in names for names in sent), sent
    assert _console(browser) == []


def test_under_keystone_an_admin_action_needs_the_admin_role(
    keystone_stage: KeystoneStage, browser: WebDriver
) -> None:
    compute_1 = f"/v1/services/{keystone_stage.services['ks-compute-1'].uuid}"
    reader = keystone_stage.token("reader")
    _use_tokens(browser, reader, reader)  # actions shown, but the token's role only reads
    _click_action(browser, "ks-compute-1", "disable")
    _confirm(browser, "maintenance")
    message = _wait(
        browser,
        lambda d: (d.find_element(By.ID, "message").text or "").startswith("Refused") and d,
        "the refusal",
    ).find_element(By.ID, "message")
    assert "403" in message.text
    assert keystone_stage.api(compute_1)["disabled"] is False
    refusals = _console(browser)
    assert refusals and all("403" in line for line in refusals), refusals

    _use_tokens(browser, reader, keystone_stage.token("operator"))
    _click_action(browser, "ks-compute-1", "disable")
    _confirm(browser, "keystone maintenance")
    _wait(
        browser,
        lambda d: (
            (row := _row(d, "ks-compute-1")) is not None
            and "disabled: keystone maintenance" in row["text"]
        ),
        "ks-compute-1 shown disabled",
    )
    assert keystone_stage.api(compute_1)["disabled_reason"] == "keystone maintenance"
    assert _console(browser) == []


@pytest.fixture(scope="module")
def big_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """An open daemon over FLEET_AT_SCALE services, registered in one transaction, 10 down."""
    tmp = tmp_path_factory.mktemp("status-page-10k")
    url = migrated_sqlite(tmp / "sg.sqlite")
    with ServiceGroup.from_options(database__connection=url) as sg:
        registered = sg.register_many(
            [
                Registration(f"compute-{i:05d}", "nova-compute", "compute", f"az{i % 4}", i % 3)
                for i in range(FLEET_AT_SCALE)
            ]
        )
        # All up but one in a thousand, for as long as service_down_time (60 s by default).
        sg.heartbeat_many([service for i, (service, _) in enumerate(registered) if i % 1000])
    running = _start_daemon(tmp, {}, url)
    yield running
    running.stop()


def test_first_paint_at_ten_thousand_services(big_daemon: Daemon, browser: WebDriver) -> None:
    """A figure, not an assertion: how soon the page shows a fleet of 10,000."""
    browser.get(f"{big_daemon.url}/")
    _wait(
        browser,
        lambda d: d.find_element(By.ID, "range").text == f"1{DASH}100 of {FLEET_AT_SCALE}",
        "the first page of 10,000 services",
    )
    paint, rendered = browser.execute_script(
        "const paint = performance.getEntriesByName('first-contentful-paint')[0];"
        "const mark = performance.getEntriesByName('servicegroup-services-rendered')[0];"
        "return [paint ? paint.startTime : null, mark ? mark.startTime : null]"
    )
    print(
        f"\n{FLEET_AT_SCALE} services: first contentful paint {paint:.0f} ms, "
        f"services table rendered {rendered:.0f} ms after navigation start"
    )
    assert len(_text(browser, "#services tbody tr")) == 100
    _screenshot(browser, "status-page-10k.png")
    assert _console(browser) == []

"""The web pages in a real browser: Debian's chromium driven by Selenium (its own
chromedriver, given by path, so Selenium Manager never downloads anything) against a
real ``catalogd serve`` with two workers, the real slapd of ``tests/slapd_node.py`` and
the SQLite catalogue of ``tests/api_support.py``.

Each page's screenshot is written under the test's own directory (``tmp_path``, which
pytest keeps for the last three runs); with ``CATALOGD_SCREENSHOTS=DIR`` it is copied
there too (the README's pictures in docs/img come from such a run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from api_support import build_catalogue
from ops_daemon import CATALOGD, free_port
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.wait import WebDriverWait
from slapd_node import SlapdNode
from test_api_serve import answers, environment, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
)
LAYOUT = "rfc2307bis"


@dataclass(frozen=True)
class Server:
    base: str
    root: Path

    def api_paths(self, user: str) -> set[str]:
        """The paths the search API gives ``user`` (the same server, Basic auth)."""
        answer = httpx.get(
            self.base + "/api/v1/search",
            params={"size": 1000},
            auth=(user, f"{user}-pw"),
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return {item["path"] for item in answer.json()["items"]}


@pytest.fixture
def server(tmp_path: Path, slapd: SlapdNode) -> Iterator[Server]:
    catalogue = build_catalogue(tmp_path)
    catalogue.store.close()
    ldap = slapd.settings(LAYOUT)
    config = tmp_path / "catalogd.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path}/catalog.db"\n\n'
        f'[ldap]\nurl = "{ldap.url}"\nbind_dn = "{ldap.bind_dn}"\n'
        f'bind_password = "{slapd.bind_password}"\nuser_base = "{ldap.user_base}"\n'
        f'group_base = "{ldap.group_base}"\nschema = "{LAYOUT}"\n',
        encoding="utf-8",
    )
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*CATALOGD, "--config", str(config), "serve", "--listen", f"127.0.0.1:{port}"],
            env=environment(),  # two workers, no session_key_file: a login made on one
            # holds on the other (the supervisor gives both one key)
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: "from 2 workers" in log.read_text(), "both workers", proc)
        assert answers(base + "/healthz")
        yield Server(base=base, root=catalogue.root)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "apt-get install chromium chromium-driver"
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not fetch a browser or driver
    profile = tempfile.mkdtemp(prefix="catalogd-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: WebDriver, tmp_path: Path, name: str) -> Path:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(700, min(int(height) + 40, 2400)))
    path = tmp_path / "screenshots" / f"{name}.png"
    path.parent.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 1000
    stable = os.environ.get("CATALOGD_SCREENSHOTS")
    if stable:
        Path(stable).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(stable) / path.name)
    return path


def log_in(driver: WebDriver, server: Server, user: str, password: str | None = None) -> None:
    driver.get(server.base + "/ui/search")
    assert driver.current_url.startswith(server.base + "/ui/login")
    driver.find_element(By.ID, "username").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password or f"{user}-pw")
    old = driver.find_element(By.ID, "login")
    old.click()
    # While the page is being replaced chromedriver can answer a question about
    # the old element with a bare "unknown error" (the node "does not belong to
    # the document") instead of a stale-element error; that is the navigation
    # still under way, so ask again until the element is reported stale.
    WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,)).until(staleness_of(old))


def wait_for_page(driver: WebDriver, url: str) -> None:
    """Wait until the browser has navigated to ``url`` (a prefix), after a click."""
    WebDriverWait(driver, 30).until(lambda d: d.current_url.startswith(url))


def result_paths(driver: WebDriver) -> set[str]:
    return {a.text for a in driver.find_elements(By.CSS_SELECTOR, "#results td.path a")}


def test_two_users_of_different_proposals_see_exactly_their_files(
    server: Server, browser: WebDriver, tmp_path: Path
) -> None:
    seen: dict[str, set[str]] = {}
    for user in ("alice", "bob"):
        log_in(browser, server, user)
        assert browser.current_url == server.base + "/ui/search"
        assert browser.find_element(By.ID, "user").text == user
        seen[user] = result_paths(browser)
        assert seen[user] == server.api_paths(user)  # the API's filter, no more, no less
        assert int(browser.find_element(By.ID, "total").text) == len(seen[user])
        screenshot(browser, tmp_path, f"search-{user}")
        browser.find_element(By.ID, "logout").click()
        wait_for_page(browser, server.base + "/ui/login")
        browser.get(server.base + "/ui/search")  # logged out: the form again
        assert browser.current_url.startswith(server.base + "/ui/login")
    alice, bob = seen["alice"], seen["bob"]
    assert any(p.endswith("lysozyme_0001.nxs") for p in alice)
    assert any(p.endswith("insulin_master.h5") for p in alice)
    assert not any(p.endswith("insulin_data_000001.h5") for p in alice)  # collapsed
    assert not any("20180042" in p or "20190777" in p or "20100001" in p for p in alice)
    assert {p.rsplit("/", 1)[1] for p in bob} == {"secret_thaumatin.nxs"}
    assert not alice & bob


def test_facets_filter_and_the_file_page_shows_a_dataset(
    server: Server, browser: WebDriver, tmp_path: Path
) -> None:
    log_in(browser, server, "carol")  # beamline staff: both biomax visitor proposals
    facet = {a.text: a for a in browser.find_elements(By.CSS_SELECTOR, "a[data-facet=proposal]")}
    assert {"20170251", "20180042"} <= set(facet)
    facet["20180042"].click()
    wait_for_page(browser, server.base + "/ui/search?proposal=20180042")
    assert {p.rsplit("/", 1)[1] for p in result_paths(browser)} == {"secret_thaumatin.nxs"}
    browser.get(server.base + "/ui/search?q=insulin")
    (master,) = browser.find_elements(By.CSS_SELECTOR, "#results td.path a")
    assert "1 data file" in browser.find_element(By.CSS_SELECTOR, "#results .badge").text
    screenshot(browser, tmp_path, "search-dataset")
    master.click()
    wait_for_page(browser, server.base + "/ui/files/")
    assert browser.find_element(By.ID, "file-name").text == "insulin_master.h5"
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "Insulin" in page and "insulin" in page  # the entry's title and its sample
    (part,) = browser.find_elements(By.CSS_SELECTOR, "#data-files a")
    assert part.text.endswith("insulin_data_000001.h5")
    screenshot(browser, tmp_path, "file-master")
    part.click()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "master-link"))
    assert browser.find_element(By.ID, "master-link").text.endswith("insulin_master.h5")
    screenshot(browser, tmp_path, "file-data")


def test_a_file_of_another_proposal_is_not_found(
    server: Server, browser: WebDriver, tmp_path: Path
) -> None:
    log_in(browser, server, "bob")
    (own,) = browser.find_elements(By.CSS_SELECTOR, "#results td.path a")
    thaumatin_id = own.get_attribute("data-id")
    browser.find_element(By.ID, "logout").click()
    wait_for_page(browser, server.base + "/ui/login")
    log_in(browser, server, "alice")
    browser.get(f"{server.base}/ui/files/{thaumatin_id}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"
    assert "thaumatin" not in browser.page_source
    screenshot(browser, tmp_path, "file-not-found")


def test_an_auditor_sees_the_dashboard_and_a_visitor_does_not(
    server: Server, browser: WebDriver, tmp_path: Path
) -> None:
    log_in(browser, server, "alice")
    assert not browser.find_elements(By.LINK_TEXT, "Violations")
    browser.get(server.base + "/ui/violations")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not allowed"
    assert "thaumatin" not in browser.page_source
    screenshot(browser, tmp_path, "violations-visitor")
    browser.find_element(By.ID, "logout").click()
    wait_for_page(browser, server.base + "/ui/login")

    log_in(browser, server, "dave")
    browser.find_element(By.LINK_TEXT, "Violations").click()
    wait_for_page(browser, server.base + "/ui/violations")
    assert browser.find_element(By.ID, "open-count").text == "1"
    rules = browser.find_element(By.ID, "counts-rule").text
    assert "DP003" in rules
    assert browser.find_elements(By.CSS_SELECTOR, "svg#chart path.open")
    rows = browser.find_elements(By.CSS_SELECTOR, "#violations tbody tr")
    assert len(rows) == 1 and "secret_thaumatin.nxs" in rows[0].text
    screenshot(browser, tmp_path, "violations-auditor")
    csv_link = browser.find_element(By.ID, "csv").get_attribute("href")
    assert csv_link is not None
    cookie = browser.get_cookie("catalogd_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["path"] == "/ui"
    answer = httpx.get(csv_link, cookies={"catalogd_session": cookie["value"]}, timeout=30)
    assert answer.status_code == 200
    assert answer.text.splitlines()[0].startswith("path,rule,severity")
    assert "secret_thaumatin.nxs,DP003" in answer.text


def test_a_wrong_password_shows_the_form_again(
    server: Server, browser: WebDriver, tmp_path: Path
) -> None:
    log_in(browser, server, "alice", "bob-pw")
    assert browser.find_element(By.ID, "login-error").text == "Wrong user name or password."
    assert browser.get_cookie("catalogd_session") is None
    screenshot(browser, tmp_path, "login-failed")


def test_a_login_holds_on_every_worker_without_a_key_file(server: Server) -> None:
    """The server runs two workers and no ``[api] session_key_file``: the session cookie
    one worker signed is accepted by the other (the supervisor gives both one key). Each
    request goes on a connection of its own, so both workers answer."""
    with httpx.Client(base_url=server.base, timeout=30.0) as first:
        token = first.get("/ui/login").text.split('name="csrf" value="', 1)[1].split('"')[0]
        form = {"csrf": token, "username": "alice", "password": "alice-pw"}
        logged_in = first.post("/ui/login", data=form, headers={"Origin": server.base})
        assert logged_in.status_code == 303, logged_in.text  # to the search page
        assert "/ui/login" not in logged_in.headers["location"]
        cookies = dict(first.cookies)

    def search_page(_: int) -> tuple[str, int]:
        with httpx.Client(base_url=server.base, timeout=30.0, cookies=cookies) as fresh:
            page = fresh.get("/ui/search", follow_redirects=False)
            return page.headers["X-Catalogd-Worker"], page.status_code

    with ThreadPoolExecutor(4) as pool:
        answered = list(pool.map(search_page, range(24)))
    assert len({pid for pid, _ in answered}) == 2, answered  # both workers answered
    assert {status for _, status in answered} == {200}, answered  # logged in on both

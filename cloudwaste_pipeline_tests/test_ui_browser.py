"""The Dagster UI in a real browser: headless Debian chromium, driven by Selenium, against
``dagster-webserver`` on a private copy of the demo instance.

What is checked comes from the definitions (asset keys, groups, schedules, sensors) and from the
copy's instance (the metadata of the latest materializations), never from a list written here.
A Dagster 1.13 instance queues the runs the UI launches (``QueuedRunCoordinator``), so the daemon
runs beside the webserver, as under ``make ui`` (``dagster dev``).

Screenshots of every check land in ``test-artifacts/ui/`` at the top of the repository
(``$CLOUDWASTE_TEST_ARTIFACTS/ui/`` when that is set), with the page source of a failed check.
Nothing downloads a browser or a driver: without ``/usr/bin/chromium`` and
``/usr/bin/chromedriver`` (``scripts/test-tools`` installs them) the tests skip and say why.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import dagster as dg
import pytest
import yaml
from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from cloudwaste_pipeline.definitions import defs
from cloudwaste_pipeline_tests.demo_instance import DemoInstance, demo_copy

REPO = Path(__file__).resolve().parent.parent
WORKSPACE = REPO / "workspace.yaml"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
SERVER_TIMEOUT = 120  # seconds until /server_info answers
PAGE_TIMEOUT = 60  # seconds for a page's content (the first one waits for the code location)
RUN_TIMEOUT = 180  # seconds for the run launched from the UI to finish
STATS_ASSET = dg.AssetKey("ml_collection_stats")  # unpartitioned, reads only the warehouse
ROW_COUNT_ASSET = dg.AssetKey("ml_training_data")  # reports dagster/row_count
TOAST_VIEW_BUTTON = (
    "//*[contains(text(), 'Launched run')]/following::button[normalize-space()='View']"
)

T = TypeVar("T")


# --- what the definitions say the UI must show ---------------------------------------------------


def asset_graph() -> Any:
    return defs.resolve_asset_graph()


def asset_keys() -> list[dg.AssetKey]:
    return sorted(asset_graph().get_all_asset_keys(), key=lambda k: k.to_user_string())


def asset_href(key: dg.AssetKey) -> str:
    return "/assets/" + "/".join(quote(part, safe="") for part in key.path)


def location_name() -> str:
    """The code location's name, as ``workspace.yaml`` gives it (the UI's URLs use it)."""
    entry = yaml.safe_load(WORKSPACE.read_text())["load_from"][0]
    return next(iter(entry.values()))["location_name"]


# --- processes ------------------------------------------------------------------------------------


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    stdout: Path
    stderr: Path

    def tail(self, lines: int = 40) -> str:
        text = self.stderr.read_text(errors="replace") if self.stderr.exists() else ""
        return f"--- {self.name} stderr (last {lines} lines) ---\n" + "\n".join(
            text.splitlines()[-lines:]
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def dagster_process(name: str, command: list[str], logs: Path) -> Iterator[Process]:
    """A process in a group of its own (its code server and run workers join it), stopped with
    the whole group at the end: SIGTERM, then SIGKILL to what is left once the leader has exited
    (or after 20 s)."""
    logs.mkdir(parents=True, exist_ok=True)
    stdout, stderr = logs / f"{name}.out", logs / f"{name}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        popen = subprocess.Popen(
            command, cwd=REPO, env=dict(os.environ), stdout=out, stderr=err, start_new_session=True
        )
    process = Process(name, popen, stdout, stderr)
    try:
        yield process
    finally:
        stop_group(popen)


def stop_group(popen: subprocess.Popen) -> None:
    """SIGTERM to the group, then SIGKILL to what is left of it (children outlive a leader)."""
    with suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=20)
    with suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGKILL)
    popen.wait(timeout=20)


def wait_for_webserver(url: str, server: Process) -> None:
    deadline = time.monotonic() + SERVER_TIMEOUT
    while time.monotonic() < deadline:
        if server.popen.poll() is not None:
            pytest.fail(
                f"dagster-webserver exited with {server.popen.returncode} before answering\n"
                + server.tail(),
                pytrace=False,
            )
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)  # polling for readiness, not an assertion
    pytest.fail(
        f"dagster-webserver gave no /server_info within {SERVER_TIMEOUT} s\n" + server.tail(),
        pytrace=False,
    )


# --- the browser ----------------------------------------------------------------------------------


def require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        reason = (
            f"UI browser tests need Debian's chromium and chromedriver: {', '.join(missing)} "
            "missing (scripts/test-tools installs them: apt-get install chromium chromium-driver)"
        )
        print(reason)
        pytest.skip(reason)


@contextmanager
def chrome(profile: Path) -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size=1600,1000")
    # An explicit driver path and browser binary: Selenium Manager never runs (SE_OFFLINE too).
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        driver.set_window_size(1600, 1000)
        yield driver
    finally:
        driver.quit()


def artefacts_dir() -> Path:
    root = os.environ.get("CLOUDWASTE_TEST_ARTIFACTS")
    folder = (Path(root) if root else REPO / "test-artifacts") / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class UI:
    url: str
    driver: WebDriver
    artefacts: Path
    processes: list[Process] = field(default_factory=list)

    def open(self, path: str) -> None:
        self.driver.get(self.url + path)

    def wait_for(
        self,
        condition: Callable[[Any], T],
        what: str | Callable[[], str],
        timeout: float = PAGE_TIMEOUT,
    ) -> T:
        """``condition(driver)`` once truthy; else fail saying ``what`` was not seen (a callable
        is evaluated at the timeout, to name what is missing then)."""
        # React re-renders under the test's feet: an element found a moment ago can be stale.
        ignored = (NoSuchElementException, StaleElementReferenceException)
        wait = WebDriverWait(self.driver, timeout, poll_frequency=0.5, ignored_exceptions=ignored)
        try:
            return wait.until(condition)
        except TimeoutException:
            message = what() if callable(what) else what
            raise AssertionError(
                f"UI: {message} (after {timeout:.0f} s on {self.driver.current_url})"
            ) from None

    def expect(
        self,
        observe: Callable[[WebDriver], T | None],
        ok: Callable[[T], bool],
        what: str,
        timeout: float = PAGE_TIMEOUT,
    ) -> T:
        """What ``observe`` sees, once ``ok`` with it: the UI draws placeholders first (a toggle
        off until the state has loaded), so a first look is no verdict. Fails with what it saw
        last."""
        last: list[T | None] = [None]

        def seen(driver: WebDriver) -> T | None:
            last[0] = observe(driver)
            return last[0] if last[0] is not None and ok(last[0]) else None

        return self.wait_for(seen, lambda: f"{what}; showed {last[0]!r}", timeout)

    def text(self, xpath: str, what: str, timeout: float = PAGE_TIMEOUT) -> str:
        """The text of the first element at ``xpath``, once there (found again at each poll)."""

        def found(driver: WebDriver) -> str | None:
            elements = driver.find_elements(By.XPATH, xpath)
            return text_of(elements[0]) if elements else None

        return self.wait_for(found, what, timeout)

    def click(self, xpath: str, what: str, timeout: float = PAGE_TIMEOUT) -> None:
        """Click the first enabled element at ``xpath``, found again until a click lands."""

        def clicked(driver: WebDriver) -> bool:
            elements = [e for e in driver.find_elements(By.XPATH, xpath) if e.is_enabled()]
            if not elements:
                return False
            try:
                elements[0].click()
            except (ElementClickInterceptedException, ElementNotInteractableException):
                return False
            return True

        self.wait_for(clicked, what, timeout)

    def scroll_to(self, xpath: str, what: str) -> None:
        """Scroll the first element at ``xpath`` to the middle of the view (for screenshots)."""

        def scrolled(driver: WebDriver) -> bool:
            elements = driver.find_elements(By.XPATH, xpath)
            if elements:
                driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", elements[0])
            return bool(elements)

        self.wait_for(scrolled, what)

    def save(self, name: str, page_source: bool = False) -> None:
        png = self.artefacts / f"{name}.png"
        self.driver.save_screenshot(str(png))
        print(f"UI screenshot: {png}")
        if page_source:
            html = self.artefacts / f"{name}.html"
            html.write_text(self.driver.page_source)
            print(f"UI page source: {html}")

    @contextmanager
    def check(self, name: str) -> Iterator[None]:
        """A screenshot of the check; on a failure, the page source too."""
        try:
            yield
        except BaseException:
            try:
                self.save(f"{name}-FAILED", page_source=True)
            except Exception as exc:  # the browser itself may be what failed
                print(f"UI: no screenshot of {name}: {exc}")
            raise
        self.save(name)


@pytest.fixture(scope="module")
def ui(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    """The webserver (and the daemon, when the instance queues runs) on a copy of the demo
    instance, and a headless chromium on it; all stopped at the end."""
    require_browser()  # before the demo fixture: no browser, no 80 s demo
    demo: DemoInstance = request.getfixturevalue("demo")
    work = tmp_path_factory.mktemp("ui")
    with pytest.MonkeyPatch.context() as mp, demo_copy(demo, work) as env:
        mp.setenv("SE_OFFLINE", "true")
        # The "Join the Dagster community" dialog opens on loopback until the instance has seen
        # it (``$DAGSTER_HOME/.nux/nux.yaml``); it would cover what the tests click.
        nux = Path(env["DAGSTER_HOME"]) / ".nux" / "nux.yaml"
        nux.parent.mkdir(parents=True, exist_ok=True)
        nux.write_text("seen: 1\n")
        with dg.DagsterInstance.get() as instance:
            queued = isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        webserver_cmd = [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1"]
        webserver_cmd += ["-p", str(port), "-w", str(WORKSPACE)]
        daemon_cmd = [sys.executable, "-m", "dagster._daemon", "run", "-w", str(WORKSPACE)]
        logs = work / "logs"
        with dagster_process("webserver", webserver_cmd, logs) as webserver:
            processes = [webserver]
            daemon_ctx = dagster_process("daemon", daemon_cmd, logs) if queued else nullcontext()
            with daemon_ctx as daemon:
                if daemon is not None:
                    processes.append(daemon)
                wait_for_webserver(url, webserver)
                with chrome(work / "chrome-profile") as driver:
                    yield UI(url, driver, artefacts_dir(), processes)


# --- virtualized lists --------------------------------------------------------------------------

# The catalog and the automation list render only the rows near the viewport: scroll their
# container from top to bottom, collecting links as the rows appear.
SCROLLABLE_ANCESTOR = """
let node = arguments[0].parentElement;
while (node && node !== document.body) {
  const style = getComputedStyle(node);
  if (/(auto|scroll)/.test(style.overflowY) && node.scrollHeight > node.clientHeight) return node;
  node = node.parentElement;
}
return null;
"""
SCROLL_STEP = """
const [box, done] = [arguments[0], arguments[arguments.length - 1]];
const before = box.scrollTop;
box.scrollTop = before + Math.max(box.clientHeight * 0.6, 50);
const atEnd = box.scrollTop === before;
requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(() => done(atEnd), 50)));
"""


def rendered_hrefs(driver: WebDriver, css: str) -> set[str]:
    return {e.get_dom_attribute("href") for e in driver.find_elements(By.CSS_SELECTOR, css)}


def hrefs_while_scrolling(driver: WebDriver, css: str) -> set[str]:
    seen = rendered_hrefs(driver, css)
    first = next(iter(driver.find_elements(By.CSS_SELECTOR, css)), None)
    box = driver.execute_script(SCROLLABLE_ANCESTOR, first) if first is not None else None
    if box is None:  # everything fits: nothing virtualized away
        return seen
    for _ in range(200):
        at_end = driver.execute_async_script(SCROLL_STEP, box)
        seen |= rendered_hrefs(driver, css)
        if at_end:
            break
    driver.execute_script("arguments[0].scrollTop = 0", box)
    return seen


def text_of(element: Any) -> str:
    return " ".join((element.get_attribute("textContent") or "").split())


def xpath_literal(text: str) -> str:
    return f"'{text}'" if "'" not in text else f'"{text}"'


# --- the checks -----------------------------------------------------------------------------------


def test_catalog_lists_every_asset(ui: UI):
    keys = asset_keys()
    assert keys, "the definitions hold no asset"
    with ui.check("01-catalog"):
        ui.open("/assets")
        first = asset_href(keys[0])  # the catalog is sorted by key: its first row renders
        ui.text(f"//a[@href={xpath_literal(first)}]", f"catalog row {first}")
        shown = hrefs_while_scrolling(ui.driver, "a[href^='/assets/']")
    missing = [k for k in keys if asset_href(k) not in shown]
    for key in missing:  # not found by scrolling: ask the catalog for that key alone
        selection = quote(f'key:"{key.to_user_string()}"', safe="")
        with ui.check(f"01-catalog-{key.to_python_identifier()}"):
            ui.open(f"/assets?asset-selection={selection}")
            ui.text(
                f"//a[@href={xpath_literal(asset_href(key))}]",
                f"asset {key.to_user_string()} in the catalog (selected by key)",
            )


def test_lineage_shows_every_group_and_its_assets(ui: UI):
    """The global lineage shows each asset group; each group's lineage graph shows its assets."""
    graph = asset_graph()
    groups: dict[str, list[str]] = {}
    for key in asset_keys():
        groups.setdefault(graph.get(key).group_name, []).append(key.to_user_string())
    node = "//*[local-name()='foreignObject']//*[normalize-space(text())={}]"

    def missing(names: list[str]) -> list[str]:
        find = ui.driver.find_elements
        return [n for n in names if not find(By.XPATH, node.format(xpath_literal(n)))]

    with ui.check("02-lineage"):
        ui.open("/asset-groups")
        names = sorted(groups)
        ui.wait_for(lambda _: not missing(names), lambda: f"group nodes {missing(names)}")
    location = location_name()
    for group, assets in sorted(groups.items()):
        with ui.check(f"02-lineage-{group}"):
            ui.open(f"/locations/{location}/asset-groups/{quote(group)}/lineage")
            ui.wait_for(
                lambda _, assets=assets: not missing(assets),
                lambda assets=assets, group=group: (
                    f"asset nodes {missing(assets)} in the lineage of group {group}"
                ),
            )


def test_automation_lists_every_schedule_and_sensor(ui: UI):
    repository = defs.get_repository_def()
    expected = {f"/schedules/{s.name}": s for s in repository.schedule_defs}
    expected |= {f"/sensors/{s.name}": s for s in repository.sensor_defs}
    assert any("/sensors/" in k for k in expected), "the definitions hold no sensor"
    assert any("/schedules/" in k for k in expected), "the definitions hold no schedule"
    prefix = f"/locations/{location_name()}"

    def row(suffix: str) -> tuple[str, list[bool]] | None:
        """The row's text and its toggles' states (found again at each poll)."""
        links = ui.driver.find_elements(By.XPATH, f"//a[@href={xpath_literal(prefix + suffix)}]")
        if not links:
            return None
        toggles = links[0].find_elements(
            By.XPATH, "./following-sibling::*//input[@type='checkbox']"
        )
        return text_of(links[0]), [t.is_selected() for t in toggles]

    def expect_row(suffix: str, definition: Any) -> None:
        kind = "Scheduled" if suffix.startswith("/schedules/") else "sensor"
        running = definition.default_status.value == "RUNNING"
        ui.expect(
            lambda _: row(suffix),
            lambda seen: definition.name in seen[0] and kind in seen[0] and seen[1] == [running],
            f"row {suffix}: its name, {kind!r} and one toggle {'on' if running else 'off'} "
            "(its default status) as (text, toggles)",
            timeout=30,
        )

    with ui.check("03-automation"):
        ui.open("/automation")
        first = min(expected, key=lambda k: expected[k].name)
        ui.wait_for(lambda _: row(first), f"automation row {prefix}{first}")
        shown = hrefs_while_scrolling(ui.driver, f"a[href^='{prefix}/']")
        missing = sorted(k for k in expected if prefix + k not in shown)
        assert not missing, f"not listed on /automation: {missing} (listed: {sorted(shown)})"
        # Each row says what it is and whether it runs: its toggle follows the default status.
        # Rows in the list's order (by name): the next one is rendered when the previous one is
        # scrolled into view.
        for suffix, definition in sorted(expected.items(), key=lambda item: item[1].name):
            ui.scroll_to(f"//a[@href={xpath_literal(prefix + suffix)}]", f"row {suffix}")
            expect_row(suffix, definition)


def latest_metadata(key: dg.AssetKey) -> dict[str, Any]:
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(key)
    assert event is not None, f"the demo never materialized {key.to_user_string()}"
    return dict(event.asset_materialization.metadata)


def shown_number(text: str) -> float:
    return float(text.replace(",", "").strip())


def test_asset_page_shows_metadata_plots_and_row_count(ui: UI, demo: DemoInstance):
    metadata = latest_metadata(STATS_ASSET)
    numeric = {
        k: v.value
        for k, v in metadata.items()
        if isinstance(v, dg.IntMetadataValue | dg.FloatMetadataValue)
    }
    texts = {k: v.value for k, v in metadata.items() if isinstance(v, dg.TextMetadataValue)}
    assert numeric, f"no numeric metadata on {STATS_ASSET.to_user_string()}: {sorted(metadata)}"
    value_cell = "//table//tr[td[1][normalize-space()={}]]/td[3]"

    def cells(driver: WebDriver) -> dict[str, str | None]:
        """The value cell of every metadata key (None: no row for the key)."""
        found = {
            k: driver.find_elements(By.XPATH, value_cell.format(xpath_literal(k))) for k in metadata
        }
        return {k: text_of(hits[0]) if hits else None for k, hits in found.items()}

    def as_stored(shown: dict[str, str | None]) -> bool:
        """Every key has its row; numbers and texts are the materialization's."""
        if any(v is None for v in shown.values()):
            return False
        try:
            numbers = all(
                shown_number(shown[k]) == pytest.approx(v, rel=1e-3, abs=0.01)
                for k, v in numeric.items()
            )
        except ValueError:
            return False
        return numbers and all(shown[k] == " ".join(str(v).split()) for k, v in texts.items())

    with ui.check("04-asset-metadata"):
        ui.open(asset_href(STATS_ASSET))
        shown = ui.expect(
            cells,
            as_stored,
            f"the metadata of the latest materialization: numbers {numeric}, texts {texts}",
        )
        # The figure is the warehouse's: the UI shows what the demo loaded.
        loaded = demo.summary.table_counts["ml_training_data"]
        assert shown_number(shown["total_records"]) == loaded, (
            f"total_records {shown['total_records']} in the UI, {loaded} rows of "
            "ml_training_data in the demo's warehouse"
        )
        ui.scroll_to("//span[normalize-space()='Metadata']", "the Metadata section")

    plot = "//div[span[normalize-space()={}]]/following-sibling::div//canvas"

    def unplotted() -> list[str]:
        find = ui.driver.find_elements
        return [k for k in numeric if not find(By.XPATH, plot.format(xpath_literal(k)))]

    with ui.check("05-asset-plots"):
        ui.click("//button[normalize-space()='Plots']", "the metadata's Plots button")
        ui.wait_for(lambda _: not unplotted(), lambda: f"plots of {unplotted()}")

    rows = latest_metadata(ROW_COUNT_ASSET)["dagster/row_count"].value
    row_count = "//span[normalize-space()='Row count']/following-sibling::*[1]"

    def shown_rows(driver: WebDriver) -> str | None:
        found = driver.find_elements(By.XPATH, row_count)
        return text_of(found[0]) if found else None

    with ui.check("06-asset-row-count"):
        ui.open(asset_href(ROW_COUNT_ASSET))
        ui.expect(
            shown_rows,
            lambda text: text.replace(",", "") == str(rows),
            f"'Row count' {rows} (dagster/row_count) on {ROW_COUNT_ASSET.to_user_string()}",
        )


def test_materialize_from_the_ui_succeeds(ui: UI):
    with ui.check("07-materialize-launched"):
        ui.open(asset_href(STATS_ASSET))
        # The asset's data first: a click while the page still loads may launch nothing.
        ui.text("//span[normalize-space()='Latest materialization']", "the asset's status")
        ui.click("//button[normalize-space()='Materialize']", "the Materialize button")
        launched = ui.wait_for(
            lambda d: re.search(
                r"Launched run ([0-9a-f]{8})", d.find_element(By.TAG_NAME, "body").text
            ),
            "the 'Launched run' toast",
        )
    short_id = launched.group(1)
    with dg.DagsterInstance.get() as instance:
        runs = [r for r in instance.get_runs(limit=50) if r.run_id.startswith(short_id)]
    assert len(runs) == 1, f"run {short_id} not in the instance"
    run_id = runs[0].run_id
    assert runs[0].asset_selection == {STATS_ASSET}, runs[0].asset_selection

    def run_status() -> dg.DagsterRunStatus:
        with dg.DagsterInstance.get() as instance:
            return instance.get_run_by_id(run_id).status

    def final_status(driver: WebDriver) -> str | None:
        """SUCCESS once the run page shows it; a failure as soon as the instance has one."""
        if driver.find_elements(By.CSS_SELECTOR, "div[role='img'][aria-label='run_success']"):
            return "SUCCESS"
        status = run_status()
        failed = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
        return status.value if status in failed else None

    def logs() -> str:
        return "\n".join(p.tail() for p in ui.processes)

    with ui.check("08-run-success"):
        # Follow the toast to the run, as a user would (or go there, if it has gone).
        try:
            ui.click(TOAST_VIEW_BUTTON, "the toast's View button", timeout=5)
            ui.wait_for(lambda d: f"/runs/{run_id}" in d.current_url, "the run page", timeout=15)
        except AssertionError:
            ui.open(f"/runs/{run_id}")
        status = ui.wait_for(
            final_status,
            lambda: f"run {run_id} shown as a success (instance: {run_status().value})\n{logs()}",
            timeout=RUN_TIMEOUT,
        )
        assert status == "SUCCESS", f"run {run_id} ended {status}\n{logs()}"
        ui.text(
            "//*[@aria-label='run_success']/following-sibling::*[normalize-space()='Success']",
            "the run's Success tag",
        )
    assert run_status() == dg.DagsterRunStatus.SUCCESS
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(STATS_ASSET)
    assert event is not None and event.run_id == run_id

    with ui.check("09-asset-events"):
        ui.open(asset_href(STATS_ASSET) + "?view=events")
        ui.text(
            f"//a[contains(@href, '/runs/{run_id}')]",
            f"the materialization of run {short_id} in the asset's events",
        )

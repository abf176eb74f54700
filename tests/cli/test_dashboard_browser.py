"""The dashboard in a real browser: headless Chromium opens it as a user would.

Debian's ``chromium`` and ``chromium-driver`` (installed by ``.ci/run`` when
missing), driven with selenium. The browser opens the one-time address,
lands on ``/`` with the token gone from the address bar, shows the figures
the CLI prints, pages through the transactions, and never sends a request
anywhere but the dashboard's own address. Screenshots of each page go to
``TEST_ARTIFACTS_DIR`` (``.ci/run`` sets it) or the test's own folder.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import respx
from simplefin_bridge import Bridge, BridgeAccount, BridgeTxn

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import CliCall

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)
CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def vault(cli: CliCall, master_key: bytes) -> None:
    """A vault synced from a SimpleFIN Bridge: a checking account (150 transactions) and a card."""
    del master_key
    checking = BridgeAccount("ACT-checking-0001", "Total Checking", "2520.33")
    checking.transactions = [
        BridgeTxn(f"c{i}", f"-{10 + i}.25", f"Coffee shop {i}", NOW - i * DAY)
        for i in range(1, 150)
    ]
    checking.transactions.append(BridgeTxn("pay", "3000.00", "PAYROLL ACME", NOW - 3 * DAY))
    card = BridgeAccount("ACT-card-0002", "Sapphire Visa", "-310.10", conn_id="CON-2")
    card.transactions = [BridgeTxn("k1", "-310.10", "Airline", NOW - 2 * DAY)]
    bridge = Bridge(
        now=NOW, accounts=[checking, card], connections={"CON-1": "Chase", "CON-2": "Amex"}
    )
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        bridge.install(router)
        token = bridge.setup_token()
        assert cli("connect", "simplefin", "--name", "banks", input=f"{token}\n").exit_code == 0
        assert cli("sync", "--quiet").exit_code == 0


@contextlib.contextmanager
def _dashboard() -> Iterator[str]:
    """The real `dashtam dashboard --no-browser` in a subprocess; yields the address it prints."""
    command = [sys.executable, "-m", "dashtam_cli", "dashboard", "--no-browser"]
    env = {**os.environ, "PYDANTIC_DISABLE_PLUGINS": "__all__"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stderr is not None
        url = None
        for line in process.stderr:
            if line.startswith("dashboard: "):
                url = line.removeprefix("dashboard: ").strip()
                break
        assert url is not None, f"no address printed; exit {process.wait()}"
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def _browser() -> Iterator[Any]:
    """Headless Chromium with its network log on; a clear failure when it is not installed."""
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.fail(
            "chromium and chromium-driver are needed for the dashboard's browser test: "
            "sudo apt-get install chromium chromium-driver (.ci/run installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1600"):
        options.add_argument(flag)
    # Nothing of Chromium's own (updates, suggestions) may blur the network check.
    options.add_argument("--disable-background-networking")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _requested(driver: Any) -> list[str]:
    """Every URL the pages asked for since the last call (Chrome's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("TEST_ARTIFACTS_DIR") or tmp_path) / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.usefixtures("vault")
def test_a_browser_sees_the_cli_figures_and_nothing_leaves_127_0_0_1(
    cli: CliCall, tmp_path: Path
) -> None:
    """Open, land on / without the token, see networth's total, page transactions, stay local."""
    from selenium.webdriver.common.by import By

    total = json.loads(cli("networth", "-f", "json").stdout)[0]["total"]
    assert total == "2210.23"
    shots = _artifacts(tmp_path)
    with _dashboard() as url, _browser() as driver:
        origin = re.sub(r"/\?token=.*$", "", url)
        driver.get(url)
        assert driver.current_url == f"{origin}/"  # the token left the address bar
        cookies = driver.get_cookies()
        assert [c["httpOnly"] for c in cookies] == [True]
        assert [c["sameSite"] for c in cookies] == ["Strict"]
        figure = driver.find_element(By.CSS_SELECTOR, '[data-currency="USD"]')
        assert figure.text == total
        # The charts are drawn: the month's net worth as a dot, the cash flow as bars.
        assert driver.find_elements(By.CSS_SELECTOR, "svg circle.dot")
        bars = driver.find_elements(By.CSS_SELECTOR, "svg rect.rect")
        assert len(bars) >= 2
        assert sum(1 for bar in bars if bar.size["height"] > 1) >= 2  # visible, not flat
        driver.save_screenshot(str(shots / "overview.png"))
        driver.get(f"{origin}/transactions")
        rows = driver.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert len(rows) == 100  # the first page of 151
        driver.save_screenshot(str(shots / "transactions.png"))
        driver.get(f"{origin}/transactions?page=2")
        assert len(driver.find_elements(By.CSS_SELECTOR, "tbody tr")) == 51
        driver.get(f"{origin}/transactions?q=payroll")
        (row,) = driver.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert "PAYROLL ACME" in row.text
        requested = _requested(driver)
        assert requested, "the network log is empty: the check would be blind"
        elsewhere = [u for u in requested if not u.startswith((f"{origin}/", "data:"))]
        assert elsewhere == []
    assert (shots / "overview.png").stat().st_size > 10_000  # a page, not a blank

"""Fixtures of the browser tests: the system tests' (tests/system/conftest.py: a private
PostgreSQL and RabbitMQ per session, clusters on free loopback ports) and a headless Chromium.

    browser    per test: a Selenium driver of Debian's chromium and chromedriver, quit at the end
    shots      per test: shots("name") saves a screenshot under the build folder
"""

import importlib.util
import os
import re
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SYSTEM = os.path.join(os.path.dirname(HERE), "system")
sys.path.insert(0, SYSTEM)

# The system tests' conftest under another name, so both folders may be collected in one run.
_spec = importlib.util.spec_from_file_location("calc_system_conftest", os.path.join(SYSTEM, "conftest.py"))
_system = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_system)
calc_session = _system.calc_session
bare_cluster = _system.bare_cluster
cluster = _system.cluster
pytest_configure = _system.pytest_configure
pytest_runtest_setup = _system.pytest_runtest_setup
pytest_runtest_makereport = _system.pytest_runtest_makereport

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def screenshot_dir():
    """CALC_SCREENSHOT_DIR, else build/<type>/screenshots beside CALC_BIN_DIR."""
    d = os.environ.get("CALC_SCREENSHOT_DIR")
    if not d:
        bin_dir = os.environ.get("CALC_BIN_DIR") or os.path.join(HERE, "..", "..", "build", "release", "bin")
        d = os.path.join(os.path.dirname(os.path.abspath(bin_dir)), "screenshots")
    os.makedirs(d, exist_ok=True)
    return d


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            raise AssertionError(f"{path} is missing: apt-get install chromium chromium-driver")
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    # The browser's console, to tell a policy violation or a script error from a slow server.
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shots(request, browser):
    prefix = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
    folder = screenshot_dir()
    n = [0]

    def take(name):
        n[0] += 1
        path = os.path.join(folder, f"{prefix}-{n[0]:02d}-{name}.png")
        browser.save_screenshot(path)
        return path

    yield take
    take("last")  # what the page showed at the end, passed or failed

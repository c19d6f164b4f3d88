"""A real browser moves notebook 01's slider: served to a class (``make class``, Voila) and inside
JupyterLab (``make lab``, Restart Kernel and Run All Cells from the Kernel menu). Both times the
figure's image data must change and the browser console must stay free of errors; in the class app,
nothing may be loaded from outside the server (it works with no internet).

Headless Chromium and its driver are Debian's ``chromium`` and ``chromium-driver``; selenium is always
given their paths, so that it never downloads a browser or a driver (Selenium Manager is never run).
Without them the tests skip, except where ``SWIFTLIB_REQUIRE_BROWSER=1`` (CI, ``.ci/run``): then a
missing browser fails. Everything the servers and the browser write goes to pytest's ``tmp_path``.
"""
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.selenium_manager import SeleniumManager
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = "01_attention_zoo.ipynb"
SLIDER = "tokens N"  # the label of notebook 01's token slider (swiftlib.viz.attention_cost_widget)
TOKEN = "swiftlib-browser-test"

pytestmark = pytest.mark.browser

#: SEVERE console entries (errors, failed requests) to let pass: {text in the message: why it is harmless}.
#: None so far. Lower levels are not errors and pass: Voila's "Unsatisfied version 4.2.5 from
#: _JUPYTERLAB.CORE_OUTPUT of shared singleton module ..." warnings (its widget manager is built against a
#: newer JupyterLab than the core it ships; the widgets work) and JupyterLab's "Connection lost,
#: reconnecting" warning while the kernel restarts.
HARMLESS: dict[str, str] = {}

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000")


def _browser_paths():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    reason = "no browser installed: the browser tests need Debian's chromium and chromium-driver on PATH"
    if os.environ.get("SWIFTLIB_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + " (SWIFTLIB_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sandbox(tmp_path):
    """The environment of the servers and the browser: every file they write lands in ``tmp_path``;
    JupyterLab never autosaves (the notebook under test stays as committed) and never calls home."""
    settings = tmp_path / "jupyter_config" / "lab" / "user-settings" / "@jupyterlab"
    (settings / "docmanager-extension").mkdir(parents=True)
    (settings / "docmanager-extension" / "plugin.jupyterlab-settings").write_text('{"autosave": false}')
    (settings / "apputils-extension").mkdir()
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        '{"checkForUpdates": false, "fetchNews": "false"}')
    env = dict(os.environ, TMPDIR=str(tmp_path), JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter_config"),
               JUPYTER_DATA_DIR=str(tmp_path / "jupyter_data"), JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter_runtime"),
               IPYTHONDIR=str(tmp_path / "ipython"), PYTHONUNBUFFERED="1")
    return tmp_path, env


@pytest.fixture
def driver(sandbox, monkeypatch):
    """Headless Chromium through the system chromedriver, console logged; Selenium Manager may not run."""
    chromium, chromedriver = _browser_paths()

    def no_download(*_args, **_kwargs):
        raise AssertionError("Selenium Manager was asked for a browser or driver")

    monkeypatch.setattr(SeleniumManager, "binary_paths", no_download)
    tmp_path, env = sandbox
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + (f"--user-data-dir={tmp_path / 'chromium'}",):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=chromedriver, env=env), options=options)
    try:
        yield browser
    finally:
        browser.quit()


@contextmanager
def _serving(make_args, env, log: Path, probe: str, timeout: float = 240):
    """Run ``make <make_args>`` until the block ends; wait until ``probe`` answers. Afterwards the server,
    its kernels and every other process it started are stopped (SIGTERM, then SIGKILL)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(["make", "--no-print-directory", *make_args], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"make {make_args[0]} exited:\n{log.read_text()[-3000:]}"
            try:
                urllib.request.urlopen(probe, timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, f"no answer from {probe}:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
        yield proc
    finally:
        _stop_tree(proc)


def _stop_tree(proc):
    try:
        family = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for p in family:  # kernels run in sessions of their own: signal every process, not only the group
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=30)
    for p in alive:
        p.kill()
    proc.wait(timeout=30)


def _kernel_processes(proc):
    family = psutil.Process(proc.pid).children(recursive=True)
    return [p for p in family if "ipykernel_launcher" in " ".join(p.cmdline())]


def _figure_src(browser):
    """The data URI of the figure in the widget's Output (None while there is none)."""
    return browser.execute_script(
        "const img = document.querySelector('.widget-output img:not([data-stale])'); return img ? img.src : null;")


def _move_slider(browser, label: str):
    """Click the slider called ``label`` at 80 % of its track, the way a student drags it (one change)."""
    sliders = [s for s in browser.find_elements(By.CSS_SELECTOR, ".widget-slider")
               if s.find_element(By.CSS_SELECTOR, ".widget-label").text == label]
    assert sliders, f"no slider labelled {label!r}"
    track = sliders[0].find_element(By.CSS_SELECTOR, ".noUi-target")
    readout = sliders[0].find_element(By.CSS_SELECTOR, ".widget-readout").text
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", track)
    ActionChains(browser).move_to_element_with_offset(track, int(track.size["width"] * 0.3), 0).click().perform()
    WebDriverWait(browser, 10).until(lambda b: sliders[0].find_element(By.CSS_SELECTOR, ".widget-readout").text
                                     != readout)


def _redraws_on_slider(browser, timeout: float = 240):
    """Wait for the widget's figure, move the token slider, wait for different image data."""
    WebDriverWait(browser, timeout).until(_figure_src)
    before = _figure_src(browser)
    assert before.startswith("data:image/png;base64,")
    _move_slider(browser, SLIDER)
    WebDriverWait(browser, 60).until(lambda b: _figure_src(b) not in (None, before))


def _console_errors(browser):
    entries = browser.get_log("browser")
    return [e["message"] for e in entries if e["level"] == "SEVERE" and not any(k in e["message"] for k in HARMLESS)]


def _wait_kernel_idle(base: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"{base}/api/kernels?token={TOKEN}", timeout=5) as r:
            kernels = json.load(r)
        if kernels and all(k["execution_state"] == "idle" for k in kernels):
            return
        assert time.monotonic() < deadline, f"kernels not idle: {kernels}"
        time.sleep(0.5)


def _restart_and_run_all(browser):
    """Kernel menu -> "Restart Kernel and Run All Cells…" -> Restart, as a teacher does. Figures already on
    the page are marked stale first, so that only the re-run's figure counts."""
    browser.execute_script("document.querySelectorAll('.widget-output img').forEach(i => i.dataset.stale = 1)")
    menus = [m for m in browser.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-itemLabel") if m.text == "Kernel"]
    menus[0].click()
    items = WebDriverWait(browser, 10).until(lambda b: [
        i for i in b.find_elements(By.CSS_SELECTOR, ".lm-Menu-item .lm-Menu-itemLabel")
        if i.text.startswith("Restart Kernel and Run All Cells")])
    items[0].click()
    WebDriverWait(browser, 10).until(lambda b: b.find_element(By.CSS_SELECTOR, ".jp-Dialog .jp-mod-accept")).click()


def test_class_app_redraws_the_figure_when_a_slider_moves(driver, sandbox, record_property):
    tmp_path, env = sandbox
    port, start = _free_port(), time.monotonic()
    base, log = f"http://127.0.0.1:{port}", tmp_path / "class.log"
    app = f"{base}/voila/render/{NOTEBOOK}?token={TOKEN}"
    with _serving(["class", f"PORT={port}", "IP=127.0.0.1", f"TOKEN={TOKEN}"], env, log,
                  f"{base}/?token={TOKEN}") as proc:
        assert app in log.read_text()  # the URL make class prints for the class
        with urllib.request.urlopen(f"{base}/voila/render/{NOTEBOOK}", timeout=30) as r:
            assert "/login" in r.url  # without the token: sent to the login page
        driver.get(app)
        _redraws_on_slider(driver)
        seconds = time.monotonic() - start
        rss = max(p.memory_info().rss for p in _kernel_processes(proc)) / 2**20
        record_property("make_class_to_redrawn_slider_s", round(seconds, 1))
        record_property("class_kernel_rss_mib", round(rss))
        print(f"make class -> slider redrawn: {seconds:.0f} s; one visitor's kernel after notebook 01: {rss:.0f} MiB")
        resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert [r for r in resources if not r.startswith(base + "/")] == []  # nothing from a CDN: works offline
        assert _console_errors(driver) == []


def test_lab_restart_and_run_all_then_a_slider_redraws(driver, sandbox):
    tmp_path, env = sandbox
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    notebook = REPO / "notebooks" / NOTEBOOK
    committed = hashlib.sha256(notebook.read_bytes()).hexdigest(), sorted(os.listdir(notebook.parent))
    lab_args = (f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} --ServerApp.port_retries=0 "
                f"--IdentityProvider.token={TOKEN} --LabApp.news_url=None "
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate")
    with _serving(["lab", f"LAB_ARGS={lab_args}"], env, tmp_path / "lab.log", f"{base}/api/status?token={TOKEN}"):
        driver.get(f"{base}/lab/tree/{NOTEBOOK}?token={TOKEN}")
        WebDriverWait(driver, 120).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Cell"))
        _wait_kernel_idle(base)
        _restart_and_run_all(driver)
        _redraws_on_slider(driver)
        assert _console_errors(driver) == []
    # nothing saved: the notebook is byte for byte as committed and notebooks/ holds no new file
    assert (hashlib.sha256(notebook.read_bytes()).hexdigest(), sorted(os.listdir(notebook.parent))) == committed

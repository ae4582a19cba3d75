"""The notebooks as a reader uses them: JupyterLab in headless Chromium (Debian's ``chromium``, driven by
Playwright for Python). Notebook 01: run every cell, no cell shows an error, the tau slider redraws its figure,
and reopened it still shows a figure. Notebook 02 at small parameters: the tqdm progress bar renders as a widget.

JupyterLab's kernel indicator can read "Idle" while notebook 02 trains: any request on the kernel's control
channel (the debugger's ``debug_request`` when a notebook tab is switched, a ``kernel_info_request`` when the
page reconnects) publishes busy then idle while the training cell still runs, and JupyterLab shows the last
status it got (jupyterlab/jupyterlab#10701, ipykernel#799). Neither tqdm nor the library causes it; the
cell's ``[*]`` prompt and the progress bar are the signals to trust.

Skips, saying why, only when no browser can be had (``apt-get install -y chromium``; ``.ci/run`` installs it
when it runs as root)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from s2r2lib import reproduce

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a free loopback port with a token, serving copies of the notebooks (so that a save never
    touches the sources), and a headless Chromium page; yields (page, base url, notebook folder)."""
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine: apt-get install -y chromium (as root; .ci/run does it)")
    from playwright import sync_api as playwright  # the [test] extra installs it: missing, this fails, not skips
    folder, settings = tmp_path_factory.mktemp("lab"), tmp_path_factory.mktemp("lab-settings")
    for path in reproduce.notebook_paths(only=["01", "02"]):
        shutil.copy(path, folder / path.name)
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))  # every cell in the page, not only the visible ones
    port, token = free_port(), os.urandom(16).hex()
    log = (folder / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}", "--LabApp.news_url=",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
         f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={settings / 'workspaces'}",
         f"--KernelManager.transport_encryption={reproduce.kernel_encryption()}"],  # as `make lab`
        stdout=log, stderr=subprocess.STDOUT,
        # inline figures, not Agg; runs in a folder of the lab's own, away from the session's that nbval and the
        # tests after it share (conftest.AFTER_NOTEBOOKS: notebook 03 probes the run notebook 02 made last)
        env={**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline",
             "S2R2_RUNS_DIR": str(tmp_path_factory.mktemp("lab-runs"))})
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"JupyterLab did not answer within a minute; its log: {(folder / 'jupyterlab.log').read_text()[-2000:]}")
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab?token={token}")  # logs in: the cookie carries the token from here on
            yield page, base, folder
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def open_notebook(page, base, name):
    page.goto(f"{base}/lab/workspaces/{Path(name).stem}/tree/{name}?reset")  # a workspace with this notebook alone
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_function("() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
                           ".some(e => e.textContent.includes('| Idle'))", timeout=120_000)  # the kernel is up


def prompts(page):
    return page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()


def run_all_and_save(page, folder, name, timeout_s=300):
    """Run every cell from the Run menu, wait until every cell has run, save; the saved notebook."""
    for _ in range(3):  # a click that lands while the page still settles is repeated
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        started = time.time() + 20
        while time.time() < started and not any("*" in p or any(c.isdigit() for c in p) for p in prompts(page)):
            time.sleep(0.5)
        if any("*" in p or any(c.isdigit() for c in p) for p in prompts(page)):
            break
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if all(any(c.isdigit() for c in p) for p in prompts(page)):
            break
        time.sleep(1)
    else:
        pytest.fail(f"{name}: cells not run after {timeout_s} s: {prompts(page)}")
    page.keyboard.press("Control+s")
    time.sleep(2)
    return json.loads((folder / name).read_text())


def errors_in(notebook):
    return [output.get("ename", "") + ": " + output.get("evalue", "")
            for cell in notebook["cells"] if cell["cell_type"] == "code"
            for output in cell.get("outputs", []) if output["output_type"] == "error"]


def test_notebook_01_runs_in_jupyterlab_and_its_slider_redraws_the_figure(lab):
    page, base, folder = lab
    name = "01_loss_derivation.ipynb"
    open_notebook(page, base, name)
    saved = run_all_and_save(page, folder, name)
    assert errors_in(saved) == []
    assert page.locator(".jp-OutputArea-output", has_text="Error displaying widget").count() == 0
    assert page.locator(".jp-OutputArea-output", has_text="Traceback").count() == 0
    if reproduce.kernel_encryption() == "auto":  # the cells above ran over the kernel's encrypted sockets
        assert "without encryption" not in (folder / "jupyterlab.log").read_text()

    interact = page.locator(".widget-interact").first
    interact.scroll_into_view_if_needed()
    figure = interact.locator("img").first
    figure.wait_for(timeout=30_000)
    before = figure.get_attribute("src")
    handle = interact.locator(".noUi-handle").first  # ipywidgets 8 draws the slider with noUiSlider
    handle.focus()
    for _ in range(10):
        page.keyboard.press("ArrowRight")
    deadline = time.time() + 30
    while time.time() < deadline and interact.locator("img").first.get_attribute("src") == before:
        time.sleep(0.5)
    assert interact.locator("img").first.get_attribute("src") != before, "moving tau did not redraw the figure"
    readout = interact.locator(".widget-readout").first.inner_text()
    assert float(readout) > 0.01  # the slider moved right from tau = 0.01

    # Reopened, a widget has no model in the new page; the slider cell's still figure is still there.
    page.keyboard.press("Control+s")
    time.sleep(2)
    open_notebook(page, base, name)
    slider_cell = page.locator(".jp-CodeCell", has_text="plots.interactive_relaxation").first
    slider_cell.scroll_into_view_if_needed()
    still = slider_cell.locator(".jp-Cell-outputArea > .jp-OutputArea-child > .jp-RenderedImage img")  # not the widget's
    assert still.count() == 1


def test_notebook_02_trains_with_a_tqdm_widget_in_jupyterlab(lab):
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    page, base, folder = lab
    name = "02_training.ipynb"
    small = {"images_per_batch": 8, "views_per_image": 4, "max_steps": 60, "data_options": {"n": 512}, "previews": {}}
    notebook = parameterize_notebook(load_notebook_node(str(folder / name)), small)
    nbformat.write(notebook, folder / name)
    open_notebook(page, base, name)
    saved = run_all_and_save(page, folder, name)
    assert errors_in(saved) == []
    bars = page.locator(".jp-OutputArea-output .widget-hprogress, .jp-OutputArea-output .progress-bar")
    assert bars.count() >= 1, "tqdm drew no progress widget"
    assert any("60/60" in text for text in page.locator(".jp-OutputArea-output .widget-html-content").all_inner_texts())

"""Real JupyterLab 4 in headless Chromium (Debian's /usr/bin/chromium via python playwright).

One JupyterLab server is shared by a module's tests (``lab``); each test opens its own
notebook (own kernel) in a fresh browser context.  Pitfalls handled here (see TESTING.md):
config/data/runtime dirs in a tmp dir, the news toast switched off, the kernelspec in the
notebook metadata, waiting for the status bar's "Idle" before Shift+Enter, retrying the run
when keys were dropped.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from labkit import REPO, shoot

KERNEL = "hx-python"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]


def _chromium() -> str | None:
    for c in (os.environ.get("HX_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
              shutil.which("chromium-browser")):
        if c and os.path.exists(c):
            return c
    return None


def _missing() -> str | None:
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return "jupyterlab is not installed (pip install -e '.[test]')"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if _chromium() is None:
        return ("no chromium binary (apt-get install -y --no-install-recommends chromium); "
                "playwright's own browser downloads are not used")
    return None


def pytest_addoption(parser):
    parser.addoption("--hx-streams", default="1", help="cancel-latency benchmark: seconds of streaming before each cancel")


def pytest_collection_modifyitems(config, items):
    reason = _missing()
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    def __init__(self, root: Path, url: str, token: str, proc: subprocess.Popen, log: Path, app: str = "lab"):
        self.root, self.url, self.token, self.proc, self.log = root, url, token, proc, log
        self.app = app      # "lab" (JupyterLab) or "notebook" (Notebook 7)

    def notebook(self, name: str, cells: list[str]) -> str:
        nb = {
            "cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {},
                       "outputs": [], "source": src} for i, src in enumerate(cells)],
            "metadata": {"kernelspec": {"name": KERNEL, "display_name": "hessexplore test kernel",
                                        "language": "python"},
                         "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5,
        }
        (self.root / name).write_text(json.dumps(nb), encoding="utf-8")
        if self.app == "notebook":
            return f"{self.url}/notebooks/{name}?token={self.token}"
        return f"{self.url}/lab/tree/{name}?reset&token={self.token}"

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def _start(tmp_path_factory, app: str):
    """Start ``python -m <app>`` (jupyterlab or notebook 7) on a free port in a tmp dir; yields a Lab."""
    tmp = tmp_path_factory.mktemp(app)
    root, settings = tmp / "root", tmp / "settings"
    for d in (root, settings, tmp / "config", tmp / "data" / "kernels" / KERNEL, tmp / "runtime", tmp / "ipython",
              tmp / "workspaces", settings / "@jupyterlab" / "apputils-extension"):
        d.mkdir(parents=True, exist_ok=True)
    if app == "jupyterlab":      # (Notebook 7 has no news toast; a settings file of a plugin it lacks throws there)
        (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    (tmp / "data" / "kernels" / KERNEL / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "hessexplore test kernel", "language": "python", "metadata": {"debugger": False}}))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_DATA_DIR=str(tmp / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), IPYTHONDIR=str(tmp / "ipython"),
               PYTHONPATH=os.pathsep.join([str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    env.pop("JUPYTER_PATH", None)
    port, token = _free_port(), secrets.token_hex(16)
    log = tmp / f"{app}.log"
    cls = "LabApp" if app == "jupyterlab" else "JupyterNotebookApp"
    cmd = [sys.executable, "-m", app, "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
           "--port-retries=0", f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
           f"--{cls}.workspaces_dir={tmp / 'workspaces'}", f"--{cls}.user_settings_dir={settings}",
           "--ServerApp.open_browser=False"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    lab = Lab(root, url, token, proc, log, app="notebook" if app == "notebook" else "lab")
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{app} exited with {proc.returncode}:\n{lab.log_tail()}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{app} did not start within 90 s:\n{lab.log_tail()}")
            time.sleep(0.25)
        yield lab
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    yield from _start(tmp_path_factory, "jupyterlab")


@pytest.fixture(scope="module", params=["lab", "notebook7"])
def frontend(request, tmp_path_factory):
    """JupyterLab and Notebook 7 in turn (one server per module and front end)."""
    if request.param == "notebook7":
        try:
            import notebook  # noqa: F401
        except ImportError:
            pytest.skip("notebook 7 is not installed (pip install -e '.[test]')")
    yield from _start(tmp_path_factory, "jupyterlab" if request.param == "lab" else "notebook")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _shutdown_kernels(lab: Lab) -> None:
    """Stop every kernel the test started (a cancelled job's kernel stays otherwise)."""
    import urllib.request as rq
    try:
        with rq.urlopen(f"{lab.url}/api/kernels?token={lab.token}", timeout=5) as r:
            kernels = json.loads(r.read())
        for k in kernels:
            rq.urlopen(rq.Request(f"{lab.url}/api/kernels/{k['id']}?token={lab.token}", method="DELETE"), timeout=10)
    except OSError:
        pass


@pytest.fixture
def page(browser, request):
    lab = request.getfixturevalue("frontend" if "frontend" in request.fixturenames else "lab")
    ctx = browser.new_context(viewport={"width": 1400, "height": 1800})
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    errors: list[str] = []
    stacks: list[str] = []

    def on_error(e):
        # Notebook 7.6 itself throws this at start-up (its shortcut extension reads the schema of
        # a plugin it has not loaded; it happens with no widget at all): not ours, not counted.
        stack = str(getattr(e, "stack", "") or "")
        if "reading 'schema'" in str(e) and "notebook_core" in stack and "hessexplore" not in stack:
            pg.hx_upstream_errors.append(str(e))
            return
        errors.append(str(e))
        stacks.append(stack)
    pg.hx_upstream_errors = []
    pg.on("pageerror", on_error)
    pg.hx_errors = errors
    pg.hx_error_stacks = stacks
    yield pg
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        try:
            shoot(pg, f"{request.node.name}-FAILED")
        except Exception:  # noqa: BLE001 - best effort
            pass
    ctx.close()
    _shutdown_kernels(lab)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)

"""Helpers for driving JupyterLab in playwright (see conftest.py)."""
from __future__ import annotations

import re
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"


def shoot(page, name: str, widget: bool = True) -> Path:
    """Screenshot of the page (``<name>.png``) and of the whole widget (``<name>-widget.png``,
    status line included), with the mouse moved off the graph so no tooltip hides it."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    page.mouse.move(2, 2)
    path = SCREENSHOTS / f"{stem}.png"
    page.screenshot(path=str(path))
    root = page.locator(".hx-root")
    if widget and root.count():
        root.first.screenshot(path=str(SCREENSHOTS / f"{stem}-widget.png"))
    return path


def wait_idle(page, timeout: float = 90) -> None:
    """The kernel is up: JupyterLab's status bar (not only the toolbar indicator) reads "Idle";
    Notebook 7 (no status bar) shows an idle kernel indicator in its toolbar."""
    if page.locator("#jp-main-statusbar").count():
        page.locator("#jp-main-statusbar").get_by_text(re.compile(r"\bIdle\b")).first.wait_for(timeout=timeout * 1000)
        return
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle'], "
                 ".jp-DebuggerBugButton, .jp-KernelStatus-success").first.wait_for(timeout=timeout * 1000)


def run_cell(page, index: int, *, wait_done: bool = True, timeout: float = 120) -> None:
    """Run cell ``index`` with Shift+Enter; retried when the keys were dropped (prompt stays "[ ]")."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    prompt = cell.locator(".jp-InputArea-prompt")
    before = prompt.inner_text().strip()
    deadline = time.monotonic() + timeout
    for _attempt in range(4):
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10:
            text = prompt.inner_text().strip()
            if text != before and text not in ("[ ]:", ""):
                break
            time.sleep(0.1)
        else:
            continue
        break
    else:
        raise AssertionError(f"cell {index} did not start after 4 tries (prompt {prompt.inner_text()!r})")
    if wait_done:
        while "*" in prompt.inner_text():
            assert time.monotonic() < deadline, f"cell {index} still running after {timeout} s"
            time.sleep(0.1)


def open_notebook(page, lab, name: str, cells: list[str]) -> None:
    page.goto(lab.notebook(name, cells))
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    # Notebook 7 may still ask which kernel to start (the kernelspec is preselected): accept it
    accept = page.locator(".jp-Dialog .jp-mod-accept")
    deadline = time.monotonic() + (4 if getattr(lab, "app", "lab") == "notebook" else 0)
    while time.monotonic() < deadline:
        if accept.count():
            accept.first.click()
            break
        time.sleep(0.2)
    wait_idle(page)


def cell_errors(page) -> list[str]:
    return [t for t in page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            .all_inner_texts() if "Traceback" in t or "Error" in t]

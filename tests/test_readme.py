"""Follow the README literally, as a newcomer would, on a fresh clone in a fresh venv.

What it does:

1. ``git clone`` this repository's HEAD into a temporary folder.  A clone holds *committed* files
   only, so this test checks the state that will be pushed: it passes once the work is committed.
2. Runs the README's two set-up commands (the first two ```bash blocks that create a venv) in the
   clone, unchanged, with no virtual environment active.  The first ends in ``hessexplore analyze``:
   its report folder must appear.  The second ends in the README's test command; to keep it quick
   and to stop it from running this test again (it would recurse), the environment variable
   ``PYTEST_ADDOPTS`` — which pytest reads on top of its command line — limits it to
   ``$HX_README_PYTEST_ARGS`` (default: the fast tests of tests/test_cli.py), and
   ``HX_README_INNER=1`` makes this test skip itself if it is selected anyway.
3. Runs the README's ``hessexplore demo`` line (``--no-browser`` added if missing) inside the
   clone's venv, waits for the URL it prints, checks the server answers ``/api/status`` with that
   token, then presses Ctrl+C (SIGINT to its process group) and checks that everything stopped.

Needs git, the package registries (pip, npm for the widget bundle) and this machine's torch wheel.
Slow: a few minutes.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_cli import check_demo_server, jupyter_env, port_closed, start_demo, stop_demo

REPO = Path(__file__).resolve().parents[1]
QUICK = os.environ.get("HX_README_PYTEST_ARGS", "tests/test_cli.py -m 'not slow and not browser'")


def bash_blocks(markdown: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"```(?:bash|sh|console)\n(.*?)```", markdown, re.S)]


def clean_env(tmp: Path) -> dict:
    """A shell as a newcomer has it: no venv active, nothing of this checkout on the path."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTEST_ADDOPTS", "PYTHONHOME")}
    venvs = [v for v in (os.environ.get("VIRTUAL_ENV"), sys.prefix if sys.prefix != sys.base_prefix else None) if v]
    path = [p for p in env.get("PATH", "").split(os.pathsep)
            if p and not any(p.startswith(v) for v in venvs) and not p.startswith(str(REPO))]
    env["PATH"] = os.pathsep.join(path)
    env.update(PYTEST_ADDOPTS=QUICK, HX_README_INNER="1", OMP_NUM_THREADS="1", PIP_NO_INPUT="1",
               MPLCONFIGDIR=str(tmp / "mpl"))
    env.update(jupyter_env(tmp / "jupyter"))
    return env


def run(cmd: str, cwd: Path, env: dict, timeout: int = 1800) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", "-e", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"README command failed ({r.returncode}): {cmd}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


@pytest.mark.slow
def test_readme_on_a_fresh_clone(tmp_path):
    if os.environ.get("HX_README_INNER"):
        pytest.skip("already inside the README test")
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout with commits")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=300)
    blocks = bash_blocks((clone / "README.md").read_text(encoding="utf-8"))
    setup = [b for b in blocks if "python3 -m venv" in b]
    assert len(setup) >= 2, "the README must show two set-up commands in ```bash blocks"
    env = clean_env(tmp_path)

    # 1. the main job
    r = run(setup[0], clone, env)
    assert "hessexplore analyze" not in setup[0] or (clone / "hessexplore-report" / "report.json").is_file(), \
        r.stdout[-2000:]

    # 2. the tests (limited by PYTEST_ADDOPTS to a quick subset; see the module docstring)
    r = run(setup[1], clone, env)
    assert re.search(r"\b\d+ passed\b", r.stdout), r.stdout[-3000:]

    # 3. the demo, headless
    lines = [ln.strip() for b in blocks for ln in b.splitlines() if "hessexplore demo" in ln]
    assert lines, "the README must show the `hessexplore demo` command"
    lines = [re.sub(r"\s+#.*$", "", ln).lstrip("$ ").strip() for ln in lines]      # drop prompts and comments
    line = next((ln for ln in lines if "--no-browser" in ln), lines[0] + " --no-browser")
    proc, url, _ = start_demo(["bash", "-c", f". .venv/bin/activate && {line}"], clone, env, timeout=300)
    try:
        check_demo_server(url)
    finally:
        code, out = stop_demo(proc)
    assert code == 0, out
    assert "Traceback" not in out
    assert port_closed(url)

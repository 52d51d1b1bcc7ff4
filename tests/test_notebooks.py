"""The teaching notebooks: committed clean, registered, and every one runs headless.

Each notebook checks its own claims with ``assert``, so executing it is a test of the science it
teaches.  Execution uses nbclient with a ``python3`` kernelspec written into a temporary
JUPYTER_PATH that points at the interpreter under test (this venv's, or a fresh one built the way
binder/ says), so a user-level kernel can never be picked up by mistake.  No JavaScript runs: the
notebooks drive the explorer widget from Python (``w.select``, ``w.wait``, ``w.result``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hessexplore import demos

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))


def _nbformat():
    return pytest.importorskip("nbformat", reason="the notebook tests need nbformat and nbclient "
                                                  "(pip install -e '.[test]')")


def kernel_env(tmp: Path, python: str, pythonpath: str | None) -> dict:
    """Environment in which the kernelspec ``python3`` runs ``python``; Jupyter files under ``tmp``."""
    spec = tmp / "jupyter_path" / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test)", "language": "python", "metadata": {"debugger": False}}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JUPYTER_PATH", "VIRTUAL_ENV")}
    env.update(JUPYTER_PATH=str(tmp / "jupyter_path"), JUPYTER_DATA_DIR=str(tmp / "jupyter_data"),
               JUPYTER_RUNTIME_DIR=str(tmp / "jupyter_runtime"), JUPYTER_CONFIG_DIR=str(tmp / "jupyter_config"),
               IPYTHONDIR=str(tmp / "ipython"), MPLCONFIGDIR=str(tmp / "mpl"), OMP_NUM_THREADS="1")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def execute_notebook(path: Path, workdir: Path, env: dict, timeout: int = 600) -> tuple[float, object]:
    """Run every cell with nbclient (cwd = workdir); raises CellExecutionError on the first error."""
    nbformat = _nbformat()
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    workdir.mkdir(parents=True, exist_ok=True)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)        # the kernel inherits this process's environment
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(workdir)}})
        t0 = time.perf_counter()
        client.execute()
        elapsed = time.perf_counter() - t0
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return elapsed, nb


def check_outputs(nb) -> None:
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, "\n".join(f"{e['ename']}: {e['evalue']}" for e in errors)
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.get("execution_count") is not None, c.source[:80]


# ---------------------------------------------------------------------------------------------
# committed form
# ---------------------------------------------------------------------------------------------

def test_notebooks_are_the_registered_six():
    assert NOTEBOOKS == sorted(demos.NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_clean(name):
    nbformat = _nbformat()
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    for c in code:
        assert c.outputs == [] and c.execution_count is None, f"{name}: outputs committed in {c.source[:60]!r}"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert sum("assert " in c.source for c in code) >= 2, f"{name} must check its claims with assert"
    assert any("plt.show()" in c.source or "display(" in c.source for c in code), f"{name} has no figure"


# ---------------------------------------------------------------------------------------------
# execution
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_headless(name, tmp_path):
    pytest.importorskip("nbclient", reason="pip install -e '.[test]'")
    pytest.importorskip("ipykernel", reason="pip install -e '.[test]'")
    env = kernel_env(tmp_path, sys.executable, str(REPO))
    elapsed, nb = execute_notebook(NOTEBOOK_DIR / name, tmp_path / "work", env)
    check_outputs(nb)
    print(f"{name}: {elapsed:.1f} s")


def _binder_requirements(tmp: Path) -> Path:
    """binder/requirements.txt without the CPU wheel index (this machine has torch==2.13.0 on disk)."""
    lines = (REPO / "binder" / "requirements.txt").read_text().splitlines()
    kept = [ln for ln in lines if not ln.strip().startswith("--extra-index-url")]
    assert len(kept) == len(lines) - 1, "binder/requirements.txt must name the CPU wheel index exactly once"
    out = tmp / "requirements.txt"
    out.write_text("\n".join(kept) + "\n")
    return out


def test_binder_files_are_consistent():
    reqs = [ln.split("#")[0].strip() for ln in (REPO / "binder" / "requirements.txt").read_text().splitlines()]
    reqs = [r for r in reqs if r]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in reqs
    assert "torch==2.13.0" in reqs and "ipykernel>=7.1" in reqs and "." in reqs
    assert any(r.startswith("jupyterlab") for r in reqs)
    post = REPO / "binder" / "postBuild"
    assert post.is_file() and os.access(post, os.X_OK) and post.read_text().startswith("#!")
    # repo2docker ignores requirements.txt when an environment.yml is present
    assert not (REPO / "binder" / "environment.yml").exists()


@pytest.mark.slow
def test_binder_environment_runs_the_quickstart_and_imports_every_notebook(tmp_path):
    """A fresh venv installed exactly as binder/ says (torch from this machine's disk), postBuild run,
    every notebook's imports resolved there, and the quickstart executed with that venv's kernel and the
    *installed* package.  (Every notebook runs in full in test_notebook_runs_headless; running them all
    again here would only repeat the same code in a second venv, minutes of CI for nothing new.)"""
    pytest.importorskip("nbclient", reason="pip install -e '.[test]'")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(tmp_path / "home")           # postBuild writes JupyterLab user settings under $HOME
    reqs = _binder_requirements(tmp_path)
    # repo2docker runs pip from the repository root, where "." is this package
    r = subprocess.run([py, "-m", "pip", "install", "-q", "--no-input", "-r", str(reqs)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = subprocess.run(["bash", str(REPO / "binder" / "postBuild")], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (Path(env["HOME"]) / ".jupyter/lab/user-settings/@jupyterlab/apputils-extension/"
            "notification.jupyterlab-settings").is_file()
    # the installed package (not this checkout) with its widget bundle and the CPU torch
    probe = ("import hessexplore, torch, sklearn; from hessexplore.widget import BUNDLE; "
             "print(hessexplore.__file__); print(BUNDLE.is_file()); print(torch.__version__)")
    r = subprocess.run([py, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    path, bundle, torch_version = r.stdout.split()
    assert str(venv) in path and bundle == "True" and torch_version.startswith("2.13.0")
    # every module any notebook imports (bar the notebook's own helper files) imports in that venv
    modules = sorted(_notebook_imports() - {"my_model"})
    r = subprocess.run([py, "-c", "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]",
                        *modules], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"binder venv cannot import {modules}: {r.stderr[-2000:]}"
    kenv = kernel_env(tmp_path / "k", py, None)
    kenv["PATH"], kenv["HOME"] = env["PATH"], env["HOME"]
    name = "01_quickstart.ipynb"
    elapsed, nb = execute_notebook(NOTEBOOK_DIR / name, tmp_path / "work" / name.removesuffix(".ipynb"), kenv)
    check_outputs(nb)
    print(f"binder {name}: {elapsed:.1f} s")


def _notebook_imports() -> set[str]:
    """Top-level names of the modules the notebooks' code cells import (``import a.b`` -> ``a.b``)."""
    import ast
    nbformat = _nbformat()
    names: set[str] = set()
    for nb_name in NOTEBOOKS:
        nb = nbformat.read(NOTEBOOK_DIR / nb_name, as_version=4)
        for c in nb.cells:
            if c.cell_type != "code":
                continue
            src = "\n".join(ln for ln in c.source.splitlines() if not ln.lstrip().startswith(("%", "!")))
            for node in ast.walk(ast.parse(src)):
                if isinstance(node, ast.Import):
                    names.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names.add(node.module)
    return names


def test_notebook_imports_are_found():
    got = _notebook_imports()
    assert {"torch", "hessexplore", "matplotlib.pyplot", "numpy"} <= got, got

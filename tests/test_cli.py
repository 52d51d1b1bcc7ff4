"""The ``hessexplore`` command line: analyze (built-in and module:factory models), the report it
writes, one-line errors with exit status 2, ``python -m hessexplore``, and ``demo``."""
from __future__ import annotations

import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import torch

import hessexplore as hx
from hessexplore import cli, demos, report

REPO = Path(__file__).resolve().parents[1]
REPORT_FILES = ("report.json", "summary.txt", "coupling.png", "distance.png", "spectra.png")


def _env(**extra) -> dict:
    """Environment for a CLI subprocess: this checkout first on the path, one intra-op thread."""
    env = dict(os.environ, OMP_NUM_THREADS="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [extra.get("PYTHONPATH")] if p])
    return env


def run_cli(*args, cwd=None, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hessexplore", *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=600)


def main_code(argv, capsys) -> tuple[int, str, str]:
    """Run cli.main in-process; argparse's own exits count as return codes."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _close(a, b, rtol=1e-9, atol=1e-15) -> bool:
    """Equality of a JSON value (None for NaN) and a library value, elementwise."""
    if isinstance(b, torch.Tensor):
        b = b.tolist()
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close(x, y, rtol, atol) for x, y in zip(a, b))
    if a is None:
        return b is None or (isinstance(b, float) and not math.isfinite(b))
    return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)


def check_report_matches(folder: Path, session: hx.Session, nodes, space="activation", spectra=True):
    """Every file is there, and the JSON numbers equal a fresh Session's."""
    for name in REPORT_FILES if spectra else REPORT_FILES[:4]:
        path = folder / name
        assert path.is_file() and path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    rep = json.loads((folder / "report.json").read_text())
    assert rep["format"] == report.FORMAT and rep["space"] == space and rep["dtype"] == "float64"
    assert rep["nodes"] == list(nodes)
    cm = session.coupling_map(list(nodes), space=space)
    for key, val in [("R", cm.R), ("C", cm.C), ("D", cm.D), ("gap", cm.gap), ("norm_gn", cm.norm_gn),
                     ("norm_tensor", cm.norm_tensor), ("distance", cm.distance)]:
        assert _close(rep["coupling"][key], val), key
    assert _close(rep["global_gap"], cm.global_gap())
    assert rep["by_distance"] == json.loads(json.dumps(report._clean(cm.by_distance())))
    assert rep["groups"] == session.groups
    assert _close(rep["phi"], session.phi())
    if spectra:
        assert sorted(rep["spectra"]) == sorted(session.groups)
        g = session.groups[-1]
        sp = session.spectrum(g)
        assert _close(rep["spectra"][g]["eigenvalues"], sp.eigenvalues, rtol=1e-9, atol=1e-12)
        for k in ("lambda_max", "lambda_min", "trace", "negative_mass", "effective_rank"):
            assert _close(rep["spectra"][g]["stats"][k], sp.stats[k], rtol=1e-9, atol=1e-12), k
    return rep


# ---------------------------------------------------------------------------------------------
# help, models
# ---------------------------------------------------------------------------------------------

def test_python_m_hessexplore_help():
    r = run_cli("--help")
    assert r.returncode == 0, r.stderr
    for word in ("analyze", "demo", "models"):
        assert word in r.stdout
    r = run_cli("analyze", "--help")
    assert r.returncode == 0 and "module:factory" in r.stdout and "--out" in r.stdout


def test_models_lists_every_builtin(capsys):
    code, out, _ = main_code(["models"], capsys)
    assert code == 0
    for name in demos.DEMOS:
        assert name in out and demos.DESCRIPTIONS[name] in out


# ---------------------------------------------------------------------------------------------
# built-in models and data
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(demos.DEMOS))
def test_every_builtin_model_is_ready_to_analyse(name):
    model, loss_fn, batch, nodes = demos.demo(name)
    assert not any(m.training for m in model.modules())
    s = hx.Session(model, loss_fn, batch)
    assert all(s.dim(n) > 0 for n in nodes) and name in demos.DESCRIPTIONS
    assert cli.resolve_model(name)[0] == name


def test_builtin_data_are_generated_locally_and_deterministic(monkeypatch):
    from hessexplore import data

    def no_network(*args, **kwargs):
        raise AssertionError("hessexplore.data must not touch the network")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    for make in (data.blobs, data.spirals, data.teacher_student, data.sequences, data.images):
        (x1, y1), (x2, y2) = make(seed=5), make(seed=5)
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    pytest.importorskip("sklearn", reason="data.digits() needs scikit-learn (optional)")
    x, y = data.digits(seed=1)
    assert x.shape == (1797, 64) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0 and set(y.tolist()) == set(range(10))
    xi, yi = data.digits(n=100, image=True, classes=3, seed=1)
    assert xi.shape == (100, 1, 8, 8) and int(yi.max()) <= 2
    assert torch.equal(data.digits(n=50, seed=1)[0], x[:50]) and not torch.equal(data.digits(n=50, seed=2)[0], x[:50])


def test_digits_without_scikit_learn_says_how_to_get_it(monkeypatch):
    from hessexplore import data
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)     # import fails as if not installed
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        data.digits()


# ---------------------------------------------------------------------------------------------
# analyze: built-in model
# ---------------------------------------------------------------------------------------------

def test_analyze_builtin_writes_report_equal_to_library(tmp_path, capsys):
    out_dir = tmp_path / "rep"
    code, out, err = main_code(["analyze", "relu-mlp", "--out", str(out_dir)], capsys)
    assert code == 0, err
    # the table and the progress bar
    assert "Hessian blocks between 4 nodes" in out and "GN-Gap" in out and "Φ over" in out
    assert "Local Hessian spectra" in out and f"wrote {out_dir}" in out
    for stage in ("coupling map", "Φ (parameter map)", "layer spectra"):
        assert stage in err
    model, loss_fn, batch, nodes = demos.demo("relu-mlp")
    s = hx.Session(model, loss_fn, batch, dtype=torch.float64)
    rep = check_report_matches(out_dir, s, nodes)
    assert rep["name"] == "relu-mlp" and rep["source"] == "built-in"
    # ReLU MLP: the activation-space tensor part vanishes (SCIENCE.md §3), and the table says so
    assert max(max(abs(v) for v in row) for row in rep["coupling"]["gap"]) < 1e-10


def test_analyze_parameter_space_and_model_option(tmp_path, capsys):
    code, out, err = main_code(["analyze", "--model", "diamond", "--space", "parameter", "--no-spectra",
                                "--out", str(tmp_path)], capsys)
    assert code == 0, err
    model, loss_fn, batch, _ = demos.demo("diamond")
    s = hx.Session(model, loss_fn, batch, dtype=torch.float64)
    rep = check_report_matches(tmp_path, s, s.groups, space="parameter", spectra=False)
    assert rep["spectra"] == {} and not (tmp_path / "spectra.png").exists()


def test_analyze_no_report_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = main_code(["analyze", "relu-mlp", "--no-report", "--no-spectra", "--no-phi", "-q"], capsys)
    assert code == 0 and "Φ over 5 parameter groups skipped" in out
    assert list(tmp_path.iterdir()) == []


def test_progress_bar_on_a_terminal_and_in_a_log():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    tty, log = Tty(), io.StringIO()
    for stream in (tty, log):
        bar = cli.Progress(stream)
        for i in range(1, 4):
            bar("coupling", i, 3)
    assert tty.getvalue().count("\r") == 3 and "[" + "#" * 24 + "] 3/3" in tty.getvalue()
    assert log.getvalue().count("\n") == 1 and "\r" not in log.getvalue() and "3/3" in log.getvalue()


def test_a_stage_is_timed_from_the_end_of_the_one_before(monkeypatch):
    """An estimate's first report comes after its first round: the bar's time must include that round."""
    # created; coupling 1/1 and its end; phi 1/2 (its first report); phi 2/2 and its end
    clock = iter([0.0, 50.0, 60.0, 100.0, 130.0, 131.0])
    monkeypatch.setattr(cli.time, "perf_counter", lambda: next(clock))
    log = io.StringIO()
    bar = cli.Progress(log)
    bar("coupling", 1, 1)           # at 50 s: done (its clock started at creation, 0 s)
    bar("phi", 1, 2)                # first report at 100 s; the stage began when coupling ended (60 s)
    bar("phi", 2, 2)
    lines = log.getvalue().splitlines()
    assert lines[0].endswith(" 50.0s") and lines[1].endswith(" 70.0s"), lines


# ---------------------------------------------------------------------------------------------
# analyze: module:factory
# ---------------------------------------------------------------------------------------------

FACTORY = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(5, 6)
        self.mid = nn.Sequential(nn.Linear(6, 6), nn.Tanh())
        self.drop = nn.Dropout(0.2)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        return self.out(self.drop(self.mid(h)) + h)


def _problem():
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    x = torch.randn(24, 5, generator=g)
    y = torch.randint(0, 3, (24,), generator=g)
    return Net(), nn.CrossEntropyLoss(), (x, y)


def make():
    model, loss_fn, batch = _problem()
    return {"model": model, "loss_fn": loss_fn, "batch": batch, "nodes": ["inp", "mid", "add"]}


def make_tuple():
    return _problem()


def make_xy():
    model, loss_fn, (x, y) = _problem()
    return {"model": model, "loss_fn": loss_fn, "x": x, "y": y, "name": "my net"}
'''


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    """A uniquely named module defining factories, in its own folder (not the cwd)."""
    name = f"hx_factory_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / f"{name}.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(folder))
    yield name, folder
    sys.modules.pop(name, None)


def test_analyze_module_factory_via_pythonpath(factory_module, tmp_path):
    name, folder = factory_module
    out_dir = tmp_path / "report"
    r = run_cli("analyze", f"{name}:make", "--out", str(out_dir), cwd=tmp_path, PYTHONPATH=str(folder))
    assert r.returncode == 0, r.stderr
    # Dropout was in train mode: analysed in eval mode, and the user is told
    assert "eval mode" in r.stderr and "Dropout 'drop'" in r.stderr
    import importlib
    mod = importlib.import_module(name)
    d = mod.make()
    s = hx.Session(d["model"].eval(), d["loss_fn"], d["batch"], dtype=torch.float64)
    rep = check_report_matches(out_dir, s, ["inp", "mid", "add"])
    assert rep["source"] == f"{name}:make" and rep["model"] == "Net"


def test_analyze_factory_forms_in_process(factory_module, tmp_path, capsys, monkeypatch):
    name, folder = factory_module
    monkeypatch.chdir(tmp_path)
    # a tuple without nodes: the outputs of the modules that own parameters are mapped
    code, out, err = main_code(["analyze", f"{name}:make_tuple", "--no-report", "-q", "--no-spectra"], capsys)
    assert code == 0, err
    assert "Hessian blocks between 3 nodes" in out and "inp / mid.0" in out and "out / out" in out
    # x and y keys, a name, and --nodes overriding
    code, out, err = main_code(["analyze", f"{name}:make_xy", "--nodes", "inp,out", "--no-report", "-q",
                                "--no-phi", "--no-spectra"], capsys)
    assert code == 0, err
    assert out.startswith("my net: Net") and "inp / out" in out
    # a file path instead of a module name
    code, out, err = main_code(["analyze", f"{folder / name}.py:make", "--no-report", "-q", "--no-spectra",
                                "--no-phi"], capsys)
    assert code == 0, err


# ---------------------------------------------------------------------------------------------
# bad input: one line on stderr, exit status 2, no traceback
# ---------------------------------------------------------------------------------------------

BAD_MODULE = '''
import torch
from torch import nn

NOT_CALLABLE = 3


def _ok():
    return nn.Linear(4, 3), nn.CrossEntropyLoss(), (torch.randn(8, 4), torch.randint(0, 3, (8,)))


def wrong_type():
    return [1, 2]


def wrong_key():
    m, l, b = _ok()
    return {"model": m, "loss": l, "batch": b}


def missing_key():
    m, l, b = _ok()
    return {"model": m, "batch": b}


def not_a_module():
    m, l, b = _ok()
    return "model", l, b


def bad_batch():
    m, l, b = _ok()
    return m, l, b[0]


def bad_nodes():
    m, l, b = _ok()
    return {"model": m, "loss_fn": l, "batch": b, "nodes": [1, 2]}


def raises():
    raise RuntimeError("the data folder is empty")


def sum_loss():
    m, l, b = _ok()
    return m, nn.CrossEntropyLoss(reduction="sum"), b


def needs_args(n):
    return _ok()
'''


@pytest.fixture
def bad_modules(tmp_path, monkeypatch):
    tag = uuid.uuid4().hex[:8]
    names = {"bad": f"hx_bad_{tag}", "broken": f"hx_broken_{tag}", "syntax": f"hx_syntax_{tag}"}
    (tmp_path / f"{names['bad']}.py").write_text(BAD_MODULE)
    (tmp_path / f"{names['broken']}.py").write_text("import hx_no_such_dependency_xyz\n")
    (tmp_path / f"{names['syntax']}.py").write_text("def f(:\n    pass\n")
    monkeypatch.chdir(tmp_path)      # the CLI imports user modules from the current folder
    monkeypatch.syspath_prepend(str(tmp_path))
    yield names
    for n in names.values():
        sys.modules.pop(n, None)


BAD_CASES = [
    (["analyze", "no-such-model"], "unknown model 'no-such-model'"),
    (["analyze", "residul"], "did you mean 'residual'?"),
    (["analyze", "a:b:c"], "bad model 'a:b:c'"),
    (["analyze", ":make"], "bad model ':make'"),
    (["analyze", "mod:"], "bad model 'mod:'"),
    (["analyze", "my-models:make"], "bad model 'my-models:make'"),
    (["analyze", "hx_no_such_module_xyz:make"], "cannot import module 'hx_no_such_module_xyz'"),
    (["analyze", "{broken}:make"], "ModuleNotFoundError: No module named 'hx_no_such_dependency_xyz'"),
    (["analyze", "{syntax}:make"], "SyntaxError"),
    (["analyze", "{bad}:nothere"], "has no attribute 'nothere'"),
    (["analyze", "{bad}:NOT_CALLABLE"], "is a int, not a function"),
    (["analyze", "{bad}:wrong_type"], "returned a list of 2 items; it must return (model, loss_fn, (x, y))"),
    (["analyze", "{bad}:wrong_key"], "unknown key 'loss' (did you mean 'loss_fn'?)"),
    (["analyze", "{bad}:missing_key"], "without 'loss_fn'"),
    (["analyze", "{bad}:not_a_module"], "the model must be a torch.nn.Module, got str"),
    (["analyze", "{bad}:bad_batch"], "the batch must be a pair (x, y)"),
    (["analyze", "{bad}:bad_nodes"], "nodes must be a non-empty list of node names"),
    (["analyze", "{bad}:raises"], "raised RuntimeError: the data folder is empty (at"),
    (["analyze", "{bad}:needs_args"], "raised TypeError"),
    (["analyze", "{bad}:sum_loss"], "reduction='sum'"),
    (["analyze", "relu-mlp", "--nodes", "blocks.0,blocks.9"], "unknown node 'blocks.9'"),
    (["analyze", "missing_file.py:make"], "no such file 'missing_file.py'"),
    (["analyze", "--space", "diagonal"], "invalid choice: 'diagonal'"),
    (["analyze", "--bogus"], "unrecognized arguments: --bogus"),
    (["analyze", "relu-mlp", "--model", "mlp"], "two models given"),
    ([], "the following arguments are required: COMMAND"),
    (["demo", "--notebook", "07_nothing"], "unknown notebook '07_nothing'"),
]


@pytest.mark.parametrize("argv,message", BAD_CASES, ids=[" ".join(a) or "(none)" for a, _ in BAD_CASES])
def test_bad_input_is_one_line_exit_2(argv, message, bad_modules, capsys):
    argv = [a.format(**bad_modules) for a in argv]
    code, out, err = main_code(argv + ["--no-report"] if argv[:1] == ["analyze"] else argv, capsys)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert lines[-1].startswith("hessexplore: error: "), err
    assert message in lines[-1], err
    assert "Traceback" not in err and len(lines) <= 2     # the error line (and at most one note before it)


@pytest.mark.parametrize("argv,message", [
    (["analyze", "nosuch"], "unknown model 'nosuch'"),
    (["analyze", "{broken}:make"], "importing"),
    (["analyze", "{bad}:wrong_type"], "returned a list"),
    (["analyze", "--bogus"], "unrecognized arguments"),
])
def test_bad_input_subprocess_exit_status(argv, message, bad_modules, tmp_path):
    r = run_cli(*[a.format(**bad_modules) for a in argv], cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("hessexplore: error: ") and message in r.stderr
    assert r.stdout == ""


def test_demo_without_jupyterlab_says_so(capsys, monkeypatch):
    real = cli.importlib.util.find_spec
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda n, *a: None if n == "jupyterlab" else real(n, *a))
    code, _, err = main_code(["demo", "--no-browser"], capsys)
    assert code == 2 and "JupyterLab is not installed" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------

def test_notebooks_are_found_and_copied_without_clobbering_edits(tmp_path):
    src = demos.notebooks_dir()
    assert src is not None and all((src / nb).is_file() for nb in demos.NOTEBOOKS)
    copied, kept = cli._copy_notebooks(tmp_path, reset=False)
    assert copied == list(demos.NOTEBOOKS) and kept == []
    edited = tmp_path / demos.NOTEBOOKS[0]
    edited.write_text("{}")
    copied, kept = cli._copy_notebooks(tmp_path, reset=False)
    assert copied == [] and kept == list(demos.NOTEBOOKS) and edited.read_text() == "{}"
    cli._copy_notebooks(tmp_path, reset=True)
    assert edited.read_bytes() == (src / demos.NOTEBOOKS[0]).read_bytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jupyter_env(tmp: Path) -> dict:
    """Keep a test's JupyterLab away from the user's configuration and runtime files."""
    dirs = {k: tmp / k.lower() for k in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR",
                                         "IPYTHONDIR")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    return {k: str(v) for k, v in dirs.items()}


def start_demo(cmd, cwd, env, timeout=180) -> tuple[subprocess.Popen, str, list[str]]:
    """Start a demo command; return the process, the URL it printed and its output so far."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "token=" in line and "http://" in line:
            return proc, line.strip(), lines
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("the demo printed no URL:\n" + "".join(lines))


def stop_demo(proc: subprocess.Popen) -> tuple[int, str]:
    """Ctrl+C: SIGINT to the demo's process group; returns its status and remaining output."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError("the demo did not stop on Ctrl+C:\n" + out) from None
    return proc.returncode, out


def check_demo_server(url: str) -> None:
    """The printed URL opens the quickstart in lab, with a token that the server accepts."""
    assert "/lab/tree/01_quickstart.ipynb?token=" in url
    base, token = url.split("/lab/tree/")[0], url.split("token=")[1]
    with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=10) as r:
        assert r.status == 200 and "started" in json.loads(r.read())
    with urllib.request.urlopen(f"{base}/api/contents/01_quickstart.ipynb?token={token}&content=0",
                                timeout=10) as r:
        assert json.loads(r.read())["type"] == "notebook"


def port_closed(url: str) -> bool:
    host_port = url.split("//")[1].split("/")[0]
    host, port = host_port.rsplit(":", 1)
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", int(port))) != 0


@pytest.mark.slow
def test_demo_no_browser_serves_the_quickstart_and_stops_on_ctrl_c(tmp_path):
    pytest.importorskip("jupyterlab", reason="hessexplore demo needs jupyterlab (pip install -e '.[test]')")
    port = _free_port()
    env = _env(**jupyter_env(tmp_path / "jupyter"))
    proc, url, _ = start_demo([sys.executable, "-m", "hessexplore", "demo", "--no-browser", "--port", str(port),
                               "--dir", str(tmp_path / "nb")], tmp_path, env)
    try:
        assert url.startswith(f"http://127.0.0.1:{port}/")
        check_demo_server(url)
        assert sorted(p.name for p in (tmp_path / "nb").glob("*.ipynb")) == sorted(demos.NOTEBOOKS)
    finally:
        code, out = stop_demo(proc)
    assert code == 0, out
    assert "stopping JupyterLab" in out and "JupyterLab stopped." in out and "Traceback" not in out
    assert port_closed(url)


# ---------------------------------------------------------------------------------------------
# nothing lost: the report folder is checked first, never clobbered, written atomically
# ---------------------------------------------------------------------------------------------
FAST = ["relu-mlp", "--no-spectra", "--no-phi", "-q"]


def _no_analysis(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the analysis ran before the destination was checked")
    monkeypatch.setattr(report, "analyze", refuse)


def test_analyze_out_keeps_files_it_did_not_write(tmp_path, capsys, monkeypatch):
    mine = tmp_path / "summary.txt"
    mine.write_text("my own notes")
    with monkeypatch.context() as m:
        _no_analysis(m)
        code, _, err = main_code(["analyze", *FAST, "--out", str(tmp_path)], capsys)
    assert code == 2 and "did not write" in err and "--force" in err and "summary.txt" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert mine.read_text() == "my own notes" and not (tmp_path / "report.json").exists()
    # its own earlier report is replaced without --force; --force overwrites the user's file
    code, _, err = main_code(["analyze", *FAST, "--out", str(tmp_path), "--force"], capsys)
    assert code == 0, err
    assert mine.read_text() != "my own notes"
    code, _, err = main_code(["analyze", *FAST, "--out", str(tmp_path)], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coupling.png", "distance.png", "report.json",
                                                           "summary.txt"]


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_analyze_bad_out_path_fails_before_the_analysis(tmp_path, capsys, monkeypatch, where):
    f = tmp_path / "taken"
    f.write_text("x")
    out = f if where == "a file" else f / "sub" / "report"
    _no_analysis(monkeypatch)
    code, _, err = main_code(["analyze", *FAST, "--out", str(out)], capsys)
    assert code == 2 and "report folder" in err and "is a file" in err and err.count("\n") == 1
    assert f.read_text() == "x"


def test_a_failed_report_write_keeps_the_previous_report(tmp_path):
    """A write that dies half-way (here: the file-size limit) leaves the previous report intact."""
    out = tmp_path / "rep"
    assert run_cli("analyze", *FAST, "--out", str(out)).returncode == 0
    before = {f: (out / f).read_bytes() for f in ("report.json", "summary.txt")}
    script = tmp_path / "limited.py"
    script.write_text(
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (600, resource.RLIM_INFINITY))\n"
        "from hessexplore.cli import main\n"
        f"sys.exit(main(['analyze', 'relu-mlp', '--no-spectra', '--no-phi', '-q', '--seed', '1', '--out', {str(out)!r}]))\n")
    r = subprocess.run([sys.executable, str(script)], env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "failed" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert {f: (out / f).read_bytes() for f in before} == before
    assert sorted(p.name for p in out.iterdir()) == ["coupling.png", "distance.png", "report.json", "summary.txt"]


def test_a_factory_file_named_like_a_stdlib_module_does_not_shadow_it(tmp_path, capsys):
    import json as real_json
    f = tmp_path / "json.py"
    f.write_text("import torch\nfrom torch import nn\n"
                 "def make():\n"
                 "    torch.manual_seed(0)\n"
                 "    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))\n"
                 "    return m, nn.CrossEntropyLoss(), (torch.randn(8, 3), torch.randint(0, 2, (8,)))\n")
    code, out, err = main_code(["analyze", f"{f}:make", "--no-report", "--no-spectra", "--no-phi", "-q"], capsys)
    assert code == 0, err
    assert sys.modules["json"] is real_json and json.dumps({"a": 1}) == '{"a": 1}'
    assert str(tmp_path) not in sys.path[:1]


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


@pytest.mark.slow
def test_demo_on_a_specific_address_is_found_ready(tmp_path):
    """--ip 127.0.0.2: the readiness check polls that address (not 127.0.0.1: a false timeout)."""
    pytest.importorskip("jupyterlab", reason="hessexplore demo needs jupyterlab (pip install -e '.[test]')")
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.2", 0))
        except OSError:
            pytest.skip("127.0.0.2 is not a local address here")
    port = _free_port()
    env = _env(**jupyter_env(tmp_path / "jupyter"))
    proc, url, _ = start_demo([sys.executable, "-m", "hessexplore", "demo", "--no-browser", "--port", str(port),
                               "--ip", "127.0.0.2", "--timeout", "90", "--dir", str(tmp_path / "nb")], tmp_path, env)
    try:
        assert url.startswith(f"http://127.0.0.2:{port}/")
        check_demo_server(url)
    finally:
        code, out = stop_demo(proc)
    assert code == 0 and "JupyterLab stopped." in out, out
    assert not _port_open("127.0.0.2", port)


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGHUP"])
def test_jupyterlab_dies_with_a_killed_demo(tmp_path, sig):
    """SIGKILL leaves the demo no chance to clean up, SIGHUP (terminal closed) would end it at once by
    default: either way the server must go too (no old token left running)."""
    pytest.importorskip("jupyterlab", reason="hessexplore demo needs jupyterlab (pip install -e '.[test]')")
    port = _free_port()
    env = _env(**jupyter_env(tmp_path / "jupyter"))
    proc, url, _ = start_demo([sys.executable, "-m", "hessexplore", "demo", "--no-browser", "--port", str(port),
                               "--dir", str(tmp_path / "nb")], tmp_path, env)
    try:
        check_demo_server(url)
        proc.send_signal(getattr(signal, sig))       # the demo only, not its process group
        proc.wait(30)
        deadline = time.monotonic() + 30
        while _port_open("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _port_open("127.0.0.1", port), "JupyterLab kept running after its demo was killed"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.close()


def test_analyze_counts_the_probes_of_estimates(monkeypatch):
    """Every round of an estimated map refines every pair: progress counts probes per node, not pairs
    (a bar full from the first round on, printed again each round, said nothing); an estimated Φ
    reports its rounds too."""
    model, loss_fn, batch, nodes = demos.demo("relu-mlp")
    s = hx.Session(model, loss_fn, batch, dtype=torch.float64, max_exact_dim=4)   # exact too big: estimate
    monkeypatch.setattr(report, "PHI_MAX_PARAMS", 0)
    calls = []
    res = report.analyze(s, nodes, spectra=False, phi=True, progress=lambda *a: calls.append(a))
    assert res.coupling.method == "estimate"
    maps = [c for c in calls if c[0] == "coupling-estimate"]
    phis = [c for c in calls if c[0] == "phi-estimate"]
    assert maps + phis == calls
    assert [c[1] for c in maps] == [2, 10, 18, 26, 34, 42, 50, 58, 64] and {c[2] for c in maps} == {64}
    assert [c[1] for c in phis] == [8, 16, 24, 32] and {c[2] for c in phis} == {report.PHI_PROBES}
    stream = io.StringIO()
    bar = cli.Progress(stream)
    for c in calls:
        bar(*c)
    assert stream.getvalue().count("\n") == 2 and "64/64 probes per node" in stream.getvalue()
    assert "32/32 probes per group" in stream.getvalue()

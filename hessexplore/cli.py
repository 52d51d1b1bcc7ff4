"""The ``hessexplore`` command line (also ``python -m hessexplore``).

    hessexplore analyze [MODEL] [--nodes A,B,..] [--space activation|parameter] [--out DIR] ...
    hessexplore demo [--no-browser] [--port N] [--dir DIR]
    hessexplore models

``analyze`` takes a built-in model name (``hessexplore models`` lists them) or ``module:factory``:
your own model and batch.  The factory is called with no arguments and returns
``(model, loss_fn, (x, y))`` or a dict with keys ``model``, ``loss_fn``, ``batch`` (or ``x`` and
``y``) and optionally ``nodes`` (the nodes to map) and ``name``.  ``module`` is imported from the
current folder or PYTHONPATH; ``path/to/file.py:factory`` loads a file.  It computes the exact
coupling map (R, C, stable rank, GN-Gap), Φ and the layer spectra, prints tables with a progress
bar on stderr, and writes a report folder (report.json, summary.txt, coupling.png, distance.png,
spectra.png).  The folder is checked before the analysis (a file, no permission, or files there that
hessexplore did not write: refused unless ``--force``); files are replaced atomically.

``demo`` opens JupyterLab on the quickstart notebook (installs nothing; copies the notebooks into
a working folder so the originals stay clean).  ``--no-browser`` prints the URL with its token
instead of opening a browser; Ctrl+C (or SIGTERM/SIGHUP) stops the server within
``DEMO_STOP_GRACE`` seconds, a second Ctrl+C at once, and on Linux the server also dies with the
demo if it is killed outright (SIGKILL).

Bad input (unknown model, malformed ``module:factory``, import errors, a factory returning the
wrong thing, a model hessexplore cannot analyse) prints one line ``hessexplore: error: ...`` on
stderr and exits with status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import importlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from . import __version__
from .demos import DEMOS, DESCRIPTIONS, NOTEBOOKS, demo, notebooks_dir
from .errors import BlockTooLargeError, HessExploreError

EXIT_USAGE = 2


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and still exit status 2)."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog.split()[0]}: error: {message} (see '{self.prog} --help')\n")


# ------------------------------------------------------------------------------------------------
# progress bar (stderr)
# ------------------------------------------------------------------------------------------------

class Progress:
    """A one-line bar per stage on a terminal; one line per finished stage otherwise."""

    LABELS = {"coupling": "coupling map", "coupling-estimate": "coupling map (est.)", "phi": "Φ (parameter map)",
              "phi-estimate": "Φ (estimate)", "spectra": "layer spectra"}
    UNITS = {"coupling": "pairs", "coupling-estimate": "probes per node", "phi": "pairs",
             "phi-estimate": "probes per group", "spectra": "groups"}

    def __init__(self, stream=None, enabled: bool = True):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = self.t_end = time.perf_counter()
        self.stage = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self.stage:     # a stage's clock starts when the one before ended, not at its first report
            self.stage, self.t0 = stage, self.t_end
        label = self.LABELS.get(stage, stage)
        width = 24
        fill = int(width * done / max(total, 1))
        line = (f"  {label:<18} [{'#' * fill}{'.' * (width - fill)}] {done}/{total} {self.UNITS.get(stage, '')}"
                f"  {time.perf_counter() - self.t0:5.1f}s")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done >= total else ""))
        elif done >= total:
            self.stream.write(line + "\n")
        if done >= total:
            self.t_end = time.perf_counter()
        self.stream.flush()


# ------------------------------------------------------------------------------------------------
# resolving MODEL: built-in name or module:factory
# ------------------------------------------------------------------------------------------------

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_DICT_KEYS = ("model", "loss_fn", "batch", "x", "y", "nodes", "name", "output")
_RETURN_HELP = ("(model, loss_fn, (x, y)) or a dict with keys model, loss_fn, batch "
                "(and optionally nodes, name, output: the key of a ModelOutput such as 'logits')")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _where(exc: BaseException, near: str | None = None) -> str:
    """' (at file.py:12)' for the innermost frame in the user's file (or the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if near:
        mine = [f for f in frames if os.path.abspath(f.filename) == os.path.abspath(near)]
        frames = mine or frames
    if isinstance(exc, SyntaxError) and exc.filename:
        return ""   # its message names the file and line already
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {os.path.basename(f.filename)}:{f.lineno})"


def _import(module: str):
    """Import ``module`` (dotted name, from cwd / PYTHONPATH) or a ``.py`` file path."""
    if module.endswith(".py"):
        path = Path(module)
        if not path.is_file():
            raise CLIError(f"no such file {module!r} (from MODEL {module}:...)")
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.append(folder)       # its sibling modules import; the standard library still wins
        # a private, unique module name: path/to/json.py must not become (and shadow) the module `json`
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        name = f"_hessexplore_user_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{digest}"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception as exc:  # noqa: BLE001 - any error in the user's file is reported, one line
            sys.modules.pop(name, None)
            raise CLIError(f"importing {module!r} failed: {type(exc).__name__}: {_one_line(exc)}"
                           f"{_where(exc, str(path))}") from None
        return mod
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())     # as `python -m` does: the current folder first
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module == missing or module.startswith(missing + ".")):
            raise CLIError(f"cannot import module {module!r}: no module named {missing!r} in the current folder "
                           "or on PYTHONPATH (run from the folder that holds it, or set PYTHONPATH)") from None
        raise CLIError(f"importing {module!r} failed: {type(exc).__name__}: {_one_line(exc)}{_where(exc)}") from None
    except Exception as exc:  # noqa: BLE001
        raise CLIError(f"importing {module!r} failed: {type(exc).__name__}: {_one_line(exc)}{_where(exc)}") from None


def _check_problem(spec: str, result):
    """Validate what a factory returned; (model, loss_fn, batch, nodes, name, output)."""
    import torch

    got = type(result).__name__
    nodes = name = output = None
    if isinstance(result, dict):
        unknown = [k for k in result if k not in _DICT_KEYS]
        if unknown:
            k = unknown[0]
            close = difflib.get_close_matches(str(k), _DICT_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CLIError(f"{spec} returned a dict with unknown key {k!r}{hint}; it must return {_RETURN_HELP}")
        missing = [k for k in ("model", "loss_fn") if k not in result]
        if "batch" not in result and not ("x" in result and "y" in result):
            missing.append("batch")
        if missing:
            raise CLIError(f"{spec} returned a dict without {', '.join(repr(m) for m in missing)}; "
                           f"it must return {_RETURN_HELP}")
        model, loss_fn = result["model"], result["loss_fn"]
        batch = result["batch"] if "batch" in result else (result["x"], result["y"])
        nodes, name = result.get("nodes"), result.get("name")
        output = result.get("output")
    elif isinstance(result, (tuple, list)) and len(result) in (3, 4):
        model, loss_fn, batch = result[:3]
        nodes = result[3] if len(result) == 4 else None
    else:
        what = f"a {got} of {len(result)} items" if isinstance(result, (tuple, list)) else f"a {got}"
        raise CLIError(f"{spec} returned {what}; it must return {_RETURN_HELP}")
    if not isinstance(model, torch.nn.Module):
        raise CLIError(f"{spec}: the model must be a torch.nn.Module, got {type(model).__name__}; "
                       f"the factory must return {_RETURN_HELP}")
    if not callable(loss_fn):
        raise CLIError(f"{spec}: loss_fn must be callable (e.g. torch.nn.CrossEntropyLoss()), "
                       f"got {type(loss_fn).__name__}")
    from .batches import is_one_batch
    if not is_one_batch(batch) and (isinstance(batch, (str, bytes, dict, torch.Tensor)) or
                                    not hasattr(batch, "__iter__") or
                                    (isinstance(batch, (tuple, list)) and len(batch) != 2 and
                                     not all(isinstance(b, (tuple, list)) and len(b) == 2 for b in batch))):
        what = f"a {type(batch).__name__}" + (f" of {len(batch)} items" if isinstance(batch, (tuple, list)) else "")
        raise CLIError(f"{spec}: the batch must be a pair (x, y) or a data loader of such batches, got {what}")
    if nodes is not None:
        if isinstance(nodes, str):
            nodes = [n.strip() for n in nodes.split(",") if n.strip()]
        if not (isinstance(nodes, (list, tuple)) and nodes and all(isinstance(n, str) for n in nodes)):
            raise CLIError(f"{spec}: nodes must be a non-empty list of node names, got {nodes!r}")
        nodes = list(nodes)
    return model, loss_fn, batch, nodes, name, output


def resolve_model(spec: str, seed: int = 0):
    """MODEL → (name, model, loss_fn, batch, nodes, source, output).  Raises :class:`CLIError`."""
    if spec in DEMOS:
        model, loss_fn, batch, nodes = demo(spec, seed=seed)
        return spec, model, loss_fn, batch, nodes, "built-in", None
    if ":" not in spec:
        close = difflib.get_close_matches(spec, list(DEMOS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise CLIError(f"unknown model {spec!r}: {hint}built-in models are {', '.join(DEMOS)}; "
                       "for your own model give module:factory (e.g. my_models:make)")
    module, _, attr = spec.rpartition(":")
    if not module or not (module.endswith(".py") or _DOTTED.match(module)) or not _DOTTED.match(attr):
        raise CLIError(f"bad model {spec!r}: expected a built-in name or module:factory, e.g. my_models:make, "
                       "package.module:build_model or path/to/file.py:make")
    mod = _import(module)
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CLIError(f"module {module!r} has no attribute {attr!r}{hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise CLIError(f"{spec} is a {type(obj).__name__}, not a function: the factory must be callable "
                       f"with no arguments and return {_RETURN_HELP}")
    try:
        result = obj()
    except Exception as exc:  # noqa: BLE001 - the user's code failed: say where, one line
        raise CLIError(f"{spec}() raised {type(exc).__name__}: {_one_line(exc)}"
                       f"{_where(exc, getattr(mod, '__file__', None))}") from None
    model, loss_fn, batch, nodes, name, output = _check_problem(spec, result)
    return name or spec, model, loss_fn, batch, nodes, spec, output


def _eval_mode(model) -> list[str]:
    """Put the model in eval mode; the BatchNorm/Dropout modules that were in train mode."""
    import torch

    stochastic = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.dropout._DropoutNd)
    changed = [f"{type(m).__name__} {name or '(the model)'!r}" for name, m in model.named_modules()
               if m.training and isinstance(m, stochastic)]
    model.eval()
    return changed


# ------------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------------

def cmd_models(args) -> int:
    width = max(len(n) for n in DEMOS)
    print("Built-in models (hessexplore analyze NAME):")
    for n in DEMOS:
        print(f"  {n:<{width}}  {DESCRIPTIONS.get(n, '')}")
    print("\nYour own: hessexplore analyze module:factory  (the factory returns " + _RETURN_HELP + ")")
    return 0


def _world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _launch(args) -> int:
    """Re-run this command under torchrun with ``--nproc`` processes (single node)."""
    argv = [a for a in (args.argv or sys.argv[1:])]
    out, skip = [], False
    for a in argv:                      # drop --nproc N / --nproc=N
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        out.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
           "-m", "hessexplore", *out]
    return subprocess.call(cmd)


def _init_distributed():
    import torch
    import torch.distributed as dist
    if _world() > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)


def cmd_analyze(args) -> int:
    import torch

    from . import report
    from .session import Session

    if args.nproc < 1:
        raise CLIError(f"--nproc must be at least 1, got {args.nproc}")
    if args.nproc > 1 and _world() == 1:
        return _launch(args)
    _init_distributed()
    if int(os.environ.get("RANK", "0")) != 0:      # one rank reports; the others compute quietly
        args.quiet, args.no_report = True, True
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115

    spec = args.model_opt or args.model or "residual"
    if args.model and args.model_opt and args.model != args.model_opt:
        raise CLIError(f"two models given ({args.model!r} and --model {args.model_opt!r}); give one")
    if not args.no_report:
        report.check_folder(args.out, force=args.force)     # before minutes of analysis, not after
    name, model, loss_fn, batch, nodes, source, output = resolve_model(spec, seed=args.seed)
    changed = _eval_mode(model)
    if changed:
        print(f"note: analysing the model in eval mode; {', '.join(changed[:3])}"
              f"{' ...' if len(changed) > 3 else ''} {'was' if len(changed) == 1 else 'were'} in train mode",
              file=sys.stderr)
    if args.nodes:
        nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
    dtype = getattr(torch, args.dtype)
    # under torchrun (--nproc): each rank takes every W-th batch unless the loader is already sharded
    shard = _world() > 1 and type(getattr(batch, "sampler", None)).__name__ != "DistributedSampler"
    s = Session(model, loss_fn, batch, dtype=dtype, output=output, shard=shard)
    if args.space == "parameter" and not args.nodes:
        nodes = None                     # parameter space: the groups (analyze's default)
    for n in nodes or []:
        s.dim(n, args.space)             # unknown names -> UnknownNameError (readable, exit 2)
    n_params = sum(p.numel() for p in s.model.parameters())
    print(f"{name}: {type(s.model).__name__} with {n_params:,} parameters, batch of {s.batch_size}, "
          f"{len(s.nodes)} nodes, {len(s.groups)} parameter groups; {args.space} space, "
          f"{str(s.dtype).replace('torch.', '')}, {s.device}")
    progress = Progress(enabled=not args.quiet)
    try:
        a = report.analyze(s, nodes, space=args.space, name=name, spectra=not args.no_spectra,
                           phi=not args.no_phi, progress=progress, source=source)
    except BlockTooLargeError as exc:
        raise CLIError(f"{_one_line(exc)} From the command line: map smaller nodes with --nodes "
                       "(see 'hessexplore analyze --help').") from None
    print()
    print(report.summary(a))
    if not args.no_report:
        paths = report.write(a, args.out, force=args.force)
        print(f"\nwrote {Path(args.out)}/: " + ", ".join(p.name for p in paths))
    return 0


def _free_port(ip: str, preferred: int | None) -> int:
    import socket

    def free(port):
        with socket.socket() as sock:
            try:
                sock.bind((ip if ip not in ("0.0.0.0", "") else "", port))
                return True
            except OSError:
                return False
    if preferred:
        if not free(preferred):
            raise CLIError(f"port {preferred} is in use; choose another with --port, or omit it")
        return preferred
    for port in range(8888, 8900):
        if free(port):
            return port
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _copy_notebooks(dest: Path, reset: bool) -> tuple[list[str], list[str]]:
    import shutil

    src = notebooks_dir()
    if src is None:
        raise CLIError("the teaching notebooks are not installed with this copy of hessexplore "
                       "(neither hessexplore/_notebooks nor a source checkout's notebooks/ was found)")
    dest.mkdir(parents=True, exist_ok=True)
    copied, kept = [], []
    for nb in NOTEBOOKS:
        s, d = src / nb, dest / nb
        if not s.is_file():
            continue
        if d.exists() and not reset:
            kept.append(nb)
            continue
        shutil.copyfile(s, d)
        copied.append(nb)
    return copied, kept


def cmd_demo(args) -> int:
    import secrets
    import subprocess
    import urllib.request

    nb = args.notebook if args.notebook.endswith(".ipynb") else args.notebook + ".ipynb"
    if nb not in NOTEBOOKS:
        close = difflib.get_close_matches(nb, NOTEBOOKS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CLIError(f"unknown notebook {args.notebook!r}{hint}; the notebooks are {', '.join(NOTEBOOKS)}")
    if importlib.util.find_spec("jupyterlab") is None:
        raise CLIError("JupyterLab is not installed in this environment (the demo installs nothing): "
                       "pip install jupyterlab, then run hessexplore demo again")
    dest = Path(args.dir).resolve()
    copied, kept = _copy_notebooks(dest, args.reset)
    if kept:
        print(f"keeping your edited copies in {dest} ({len(kept)} notebooks; --reset restores the originals)")
    port = _free_port(args.ip, args.port)
    token = secrets.token_hex(24)
    env = dict(os.environ, JUPYTER_TOKEN=token)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.ip={args.ip}",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={dest}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--ServerApp.allow_root=True")     # containers often run as root; the token still guards it
    log_path = dest / ".hessexplore-demo.log"
    log = None if args.verbose else open(log_path, "w", encoding="utf-8")  # noqa: SIM115
    # JupyterLab runs in its own process group (Ctrl+C in the terminal reaches only us; we stop it in
    # order) and dies with us even when we cannot clean up (SIGKILL): the kernel sends it SIGTERM
    # when this process ends (PR_SET_PDEATHSIG, Linux), so no server is left running with our token.
    old_handlers = {sig: signal.signal(sig, _raise_interrupt) for sig in _STOP_SIGNALS}
    proc = None
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT if log else None,
                                start_new_session=True, preexec_fn=_die_with_parent(os.getpid()))
        host = "127.0.0.1" if args.ip in ("0.0.0.0", "", "localhost") else args.ip
        if args.ip in ("0.0.0.0", ""):
            import socket
            host = socket.gethostname()
        base = f"http://{_url_host(host)}:{port}"
        url = f"{base}/lab/tree/{nb}?token={token}"
        probe = f"http://{_url_host(_probe_host(args.ip))}:{port}/api/status?token={token}"
        deadline = time.monotonic() + args.timeout
        while True:
            if proc.poll() is not None:
                tail = ""
                if log is not None:
                    log.flush()
                    tail = " | ".join(log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:])
                raise CLIError(f"JupyterLab exited with status {proc.returncode} before it was ready"
                               + (f": {_one_line(tail)}" if tail else "") + (f" (log: {log_path})" if log else ""))
            try:
                with urllib.request.urlopen(probe, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise CLIError(f"JupyterLab did not answer on {_url_host(_probe_host(args.ip))}:{port} within "
                               f"{args.timeout:.0f} s" + (f" (log: {log_path})" if log else ""))
            time.sleep(0.25)
        print(f"JupyterLab is running on the hessexplore notebooks in {dest}")
        print(f"    {url}")
        print("Open that URL in a browser" + (" (opening it now)" if not args.no_browser else "")
              + ". Press Ctrl+C to stop the server.", flush=True)
        if not args.no_browser:
            import webbrowser
            webbrowser.open(url)
        proc.wait()
        return 0 if proc.returncode == 0 else 1
    except KeyboardInterrupt:
        _say("\nstopping JupyterLab ...")
        return 0
    finally:
        # a second Ctrl+C (or SIGTERM/SIGHUP) while stopping must not leave the server behind: from
        # here on signals only shorten the wait
        hurry = _Hurry()
        for sig in _STOP_SIGNALS:
            signal.signal(sig, hurry)
        try:
            if proc is not None:
                _stop_group(proc, hurry)
            if log is not None:
                log.close()
            _say("JupyterLab stopped.")
        finally:
            for sig, h in old_handlers.items():
                signal.signal(sig, h)


def _say(text: str) -> None:
    """Print, unless the terminal is gone (SIGHUP): stopping the server matters more."""
    try:
        print(text, flush=True)
    except OSError:
        pass


def _raise_interrupt(*_):
    raise KeyboardInterrupt


_STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
#: seconds JupyterLab gets to shut down (kernels, sessions) after SIGTERM before SIGKILL
DEMO_STOP_GRACE = 10.0


class _Hurry:
    """Signal handler used while stopping: a further Ctrl+C skips the grace period."""

    def __init__(self):
        self.now = False

    def __call__(self, *_):
        self.now = True


def _stop_group(proc, hurry: _Hurry) -> None:
    """SIGTERM to JupyterLab's process group, up to DEMO_STOP_GRACE s, then SIGKILL."""
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + DEMO_STOP_GRACE
    while proc.poll() is None and time.monotonic() < deadline and not hurry.now:
        time.sleep(0.05)
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _probe_host(ip: str) -> str:
    """The address to poll for readiness: where the server listens (loopback for the wildcards)."""
    if ip in ("0.0.0.0", "", "localhost"):
        return "127.0.0.1"
    if ip in ("::", "[::]"):
        return "::1"
    return ip.strip("[]")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _die_with_parent(parent: int):
    """preexec_fn for the server: ask Linux to SIGTERM it when ``parent`` ends (a no-op elsewhere)."""
    def set_pdeathsig():
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except Exception:  # noqa: BLE001, S110 - not Linux: the parent's own cleanup still stops it
            return
        if os.getppid() != parent:       # the parent died before prctl took effect
            os._exit(1)
    return set_pdeathsig if sys.platform.startswith("linux") else None


# ------------------------------------------------------------------------------------------------
# parser and entry point
# ------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hessexplore", description="See the curvature of a neural network: Hessian blocks "
                "between nodes of a PyTorch model, split into Gauss-Newton and tensor parts.",
                epilog="Run 'hessexplore COMMAND --help' for a command's options.")
    p.add_argument("--version", action="version", version=f"hessexplore {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    a = sub.add_parser("analyze", help="coupling map, GN-Gaps, Φ and layer spectra of a model; writes a report",
                       description="Exact coupling map (R, C, stable rank, GN-Gap) among a model's nodes, Φ over "
                       "its parameter groups and the local Hessian spectrum of every group. MODEL is a built-in "
                       "name (see 'hessexplore models') or module:factory, where factory() returns "
                       f"{_RETURN_HELP}; module is imported from the current folder or PYTHONPATH, or give "
                       "path/to/file.py:factory.")
    a.add_argument("model", nargs="?", default=None, metavar="MODEL",
                   help="built-in model name or module:factory (default: residual)")
    a.add_argument("--model", dest="model_opt", default=None, metavar="MODEL", help=argparse.SUPPRESS)
    a.add_argument("--nodes", default=None, metavar="A,B,...",
                   help="comma-separated node names to map (default: the factory's nodes, else the outputs "
                        "of the modules that own parameters)")
    a.add_argument("--space", default="activation", choices=["activation", "parameter"],
                   help="blocks between activations (default) or between parameter groups")
    a.add_argument("--dtype", default="float64", choices=["float32", "float64"],
                   help="computation dtype (default float64: exact zeros look like zeros)")
    a.add_argument("--seed", type=int, default=0, help="seed of a built-in model and its data (default 0)")
    a.add_argument("--out", default="hessexplore-report", metavar="DIR",
                   help="report folder (default ./hessexplore-report)")
    a.add_argument("--force", action="store_true",
                   help="overwrite report.json, summary.txt or PNGs in --out that hessexplore did not write")
    a.add_argument("--no-report", action="store_true", help="print the tables only, write no files")
    a.add_argument("--no-spectra", action="store_true", help="skip the layer spectra")
    a.add_argument("--no-phi", action="store_true", help="skip Φ (the parameter-space map)")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    a.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="run on N processes (a torchrun launch; gloo on CPU, NCCL on GPUs): each takes its "
                        "shard of the factory's data loader and products are all-reduced (default 1)")
    a.set_defaults(func=cmd_analyze)

    d = sub.add_parser("demo", help="open JupyterLab on the quickstart notebook",
                       description="Copy the teaching notebooks into a working folder and open JupyterLab on "
                       "the quickstart. Installs nothing (needs jupyterlab in this environment).")
    d.add_argument("--no-browser", action="store_true",
                   help="do not open a browser; print the URL with its token (for servers)")
    d.add_argument("--port", type=int, default=None, help="port (default: the first free one from 8888)")
    d.add_argument("--ip", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    d.add_argument("--dir", default="hessexplore-notebooks", metavar="DIR",
                   help="working folder for the notebooks (default ./hessexplore-notebooks)")
    d.add_argument("--notebook", default=NOTEBOOKS[0], help=f"notebook to open (default {NOTEBOOKS[0]})")
    d.add_argument("--reset", action="store_true", help="overwrite edited copies with the original notebooks")
    d.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the server (default 120)")
    d.add_argument("--verbose", action="store_true", help="show JupyterLab's own log")
    d.set_defaults(func=cmd_demo)

    m = sub.add_parser("models", help="list the built-in models", description="List the built-in models.")
    m.set_defaults(func=cmd_models)

    from .exp6 import add_subparser as _add_exp6   # the paper's Exp 6 (issue 12); lives in its own module
    _add_exp6(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else None
    try:
        return args.func(args)
    except (CLIError, HessExploreError) as exc:
        print(f"hessexplore: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\nhessexplore: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:          # `hessexplore analyze | head`: the reader left; not an error
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0


if __name__ == "__main__":
    raise SystemExit(main())

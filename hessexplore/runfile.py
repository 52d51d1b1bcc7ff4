"""The tracker's run file: reading it safely, validating its schema, and the model fingerprint.

A run file is JSON (gzip-compressed for ``.gz``) written by :meth:`hessexplore.Run.save`:

    {"format": "hessexplore.tracker/1", "name": str, "config": {...}, "groups": [str],
     "parts": ["full" | "gn" | "tensor"], "space": "parameter" | "activation", "pairs": [[str, str]],
     "model": {"parameters": [[name, [size, ...]], ...], "sha256": hex}      (optional: older files)
     "records": [{"step": int, "train_loss": number | null, ..., "extra": {...},
                  "layers": {group: {part: {"stats": {...}, ...}}}, "coupling": {...}, "pairs": {...}}]}

:func:`read` turns every way a file can be broken — missing, a folder, truncated, not gzip, not
UTF-8, not JSON, nested too deeply, edited into the wrong shape — into one
:class:`~hessexplore.errors.RunFileError` that names the file, the place (``records[3].step``) and
what to do.  :func:`fingerprint` identifies a model by its parameter names and shapes, so a run
recorded on one model is not silently replayed on another (:func:`check_model`).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import numbers
import os
import zlib
from typing import Any

from .errors import RunFileError

__all__ = ["read", "validate", "fingerprint", "check_model"]

PARTS = ("full", "gn", "tensor")
SPACES = ("parameter", "activation")
NUMBER_KEYS = ("train_loss", "eval_loss", "eval_acc", "test_loss", "test_acc", "gap_loss", "gap_acc", "elapsed")
MATRIX_KEYS = ("R", "C", "gap", "norm_gn", "norm_tensor", "distance")
MAX_BYTES = 1 << 30      # a run file is plain numbers; more than 1 GiB is not one of ours


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------

def read(path) -> dict:
    """The parsed JSON of a run file at ``path`` (validated by :func:`validate`)."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise RunFileError(f"no run file at {p!r}: check the path (runs are written by tracker.save(path))")
    if os.path.isdir(p):
        raise RunFileError(f"{p!r} is a folder, not a run file: give the path of the .json or .json.gz file")
    if os.path.getsize(p) > MAX_BYTES:
        raise RunFileError(f"{p!r} is {os.path.getsize(p):,} bytes, too large to be a hessexplore run file")
    gz = p.endswith(".gz")
    try:
        with (gzip.open(p, "rb") if gz else open(p, "rb")) as f:
            raw = f.read(MAX_BYTES + 1)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise RunFileError(f"{p!r} is not a complete gzip file ({exc}); it may be truncated: save the run "
                           "again, or rename it without .gz if it is plain JSON") from None
    except OSError as exc:
        raise RunFileError(f"cannot read the run file {p!r}: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise RunFileError(f"{p!r} decompresses to more than {MAX_BYTES:,} bytes: not a hessexplore run file")
    if not raw.strip():
        raise RunFileError(f"the run file {p!r} is empty (an interrupted save of an older version?); "
                           "record the run again")
    if not gz and raw[:2] == b"\x1f\x8b":
        raise RunFileError(f"{p!r} is gzip-compressed but its name does not end in .gz: rename it to "
                           f"{os.path.basename(p)}.gz")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunFileError(f"{p!r} is not a text (UTF-8) file ({exc.reason} at byte {exc.start}): "
                           "not a hessexplore run file") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{p!r} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                           "it may be truncated or hand-edited: save the run again") from None
    except RecursionError:
        raise RunFileError(f"{p!r} is nested too deeply to be a hessexplore run file") from None
    except ValueError as exc:       # e.g. integers with too many digits
        raise RunFileError(f"{p!r} holds a value JSON cannot read ({exc})") from None
    validate(d, p)
    return d


# --------------------------------------------------------------------------------------------------
# schema
# --------------------------------------------------------------------------------------------------

def _bad(source: str, where: str, what: str) -> RunFileError:
    return RunFileError(f"{source}: {where} {what}; the file was edited or is damaged. Record the run again, "
                        "or fix that entry")


def _is_num(x) -> bool:
    return x is None or (isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x)))


def _strs(x) -> bool:
    return isinstance(x, list) and all(isinstance(s, str) for s in x)


def _check_dict_of_numbers(d, source: str, where: str, allow_lists: bool = False) -> None:
    if not isinstance(d, dict):
        raise _bad(source, where, f"must be an object, got {type(d).__name__}")
    for k, v in d.items():
        if isinstance(v, list) and allow_lists:
            if not (all(_is_num(e) for e in v) or all(isinstance(e, str) for e in v)):
                raise _bad(source, f"{where}.{k}", "must be a list of numbers (or of statistic names)")
        elif not _is_num(v):
            raise _bad(source, f"{where}.{k}", f"must be a number or null, got {_show(v)}")


def _show(v: Any) -> str:
    text = json.dumps(v) if isinstance(v, (str, bool)) or v is None else type(v).__name__
    return text if len(text) <= 40 else text[:39] + "…"


def _check_matrix(m, k: int, source: str, where: str) -> None:
    if not (isinstance(m, list) and len(m) == k and all(isinstance(r, list) and len(r) == k for r in m)):
        raise _bad(source, where, f"must be a {k}×{k} table (one row per name)")
    if not all(_is_num(x) for r in m for x in r):
        raise _bad(source, where, "must hold numbers or null")


def _check_layers(layers, source: str, where: str) -> None:
    if not isinstance(layers, dict):
        raise _bad(source, where, "must be an object {group: {part: spectrum}}")
    for g, per in layers.items():
        if not isinstance(per, dict):
            raise _bad(source, f"{where}.{g}", "must be an object {part: spectrum}")
        for part, sp in per.items():
            w = f"{where}.{g}.{part}"
            if part not in PARTS:
                raise _bad(source, w, f"is not a part (one of {', '.join(PARTS)})")
            if not isinstance(sp, dict):
                raise _bad(source, w, "must be an object")
            for sect in ("stats", "normalized"):
                if sect in sp:
                    _check_dict_of_numbers(sp[sect], source, f"{w}.{sect}", allow_lists=True)
            for key in ("eigenvalues", "grid", "density", "top", "bottom"):
                v = sp.get(key)
                if v is not None and not (isinstance(v, list) and all(_is_num(e) for e in v)):
                    raise _bad(source, f"{w}.{key}", "must be a list of numbers")


def _check_coupling(cm, source: str, where: str) -> None:
    if not isinstance(cm, dict):
        raise _bad(source, where, "must be an object")
    names = cm.get("names")
    if not _strs(names):
        raise _bad(source, f"{where}.names", "must be a list of names")
    if "skipped" in cm:
        return
    for key in MATRIX_KEYS:
        if key in cm:
            _check_matrix(cm[key], len(names), source, f"{where}.{key}")
    if not _is_num(cm.get("phi")):
        raise _bad(source, f"{where}.phi", "must be a number or null")


def _check_record(r, i: int, source: str) -> None:
    where = f"records[{i}]"
    if not isinstance(r, dict):
        raise _bad(source, where, f"must be an object, got {type(r).__name__}")
    step = r.get("step")
    if "step" not in r:
        raise _bad(source, where, "has no 'step'")
    if isinstance(step, bool) or not isinstance(step, int):
        raise _bad(source, f"{where}.step", f"must be an integer, got {_show(step)}")
    for key in NUMBER_KEYS:
        if key in r and not _is_num(r[key]):
            raise _bad(source, f"{where}.{key}", f"must be a number or null, got {_show(r[key])}")
    if "extra" in r and not isinstance(r["extra"], dict):
        raise _bad(source, f"{where}.extra", "must be an object")
    if "layers" in r:
        _check_layers(r["layers"], source, f"{where}.layers")
    if r.get("coupling") is not None:
        _check_coupling(r["coupling"], source, f"{where}.coupling")
    if "pairs" in r:
        if not isinstance(r["pairs"], dict):
            raise _bad(source, f"{where}.pairs", "must be an object")
        for key, p in r["pairs"].items():
            if not isinstance(p, dict):
                raise _bad(source, f"{where}.pairs.{key}", "must be an object")
            for k in ("R", "C", "gn_gap"):
                if k in p and not _is_num(p[k]):
                    raise _bad(source, f"{where}.pairs.{key}.{k}", "must be a number or null")


def validate(d, source: str = "run") -> None:
    """Raise :class:`RunFileError` naming the first entry of ``d`` that breaks the run-file schema."""
    from .tracker import FORMAT

    if not isinstance(d, dict):
        raise RunFileError(f"{source}: not a hessexplore tracker file (a JSON {type(d).__name__}, "
                           "expected an object)")
    if d.get("format") != FORMAT:
        raise RunFileError(f"{source}: not a hessexplore tracker file (format {_show(d.get('format'))}, "
                           f"expected {FORMAT!r})")
    checks = (("name", lambda v: isinstance(v, str), "must be a string"),
              ("config", lambda v: isinstance(v, dict), "must be an object"),
              ("groups", _strs, "must be a list of group names"),
              ("parts", lambda v: _strs(v) and all(p in PARTS for p in v), f"must list parts among {PARTS}"),
              ("space", lambda v: v in SPACES, f"must be one of {SPACES}"),
              ("pairs", lambda v: isinstance(v, list) and all(_strs(p) and len(p) == 2 for p in v),
               "must be a list of [name, name] pairs"),
              ("records", lambda v: isinstance(v, list), "must be a list"))
    for key, ok, what in checks:
        if key in d and not ok(d[key]):
            raise _bad(source, key, what)
    if "model" in d and d["model"] is not None:
        m = d["model"]
        ps = m.get("parameters") if isinstance(m, dict) else None
        if not (isinstance(ps, list) and all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                                             and isinstance(p[1], list) and all(isinstance(n, int) for n in p[1])
                                             for p in ps)):
            raise _bad(source, "model", "must be {parameters: [[name, shape], ...], sha256}")
    for i, r in enumerate(d.get("records", [])):
        _check_record(r, i, source)


# --------------------------------------------------------------------------------------------------
# which model a run belongs to
# --------------------------------------------------------------------------------------------------

def fingerprint(model) -> dict:
    """{parameters: [[name, shape]], sha256}: the model's parameter names and shapes (not values)."""
    params = [[name, list(p.shape)] for name, p in model.named_parameters()]
    digest = hashlib.sha256(json.dumps(params, separators=(",", ":")).encode()).hexdigest()
    return {"parameters": params, "sha256": digest}


def check_model(saved: dict | None, groups, model, source: str = "this run") -> None:
    """Raise :class:`RunFileError` if a run (its ``saved`` fingerprint, or for older files its
    ``groups``) was not recorded on a model shaped like ``model``."""
    if saved:
        mine = fingerprint(model)
        if saved.get("sha256") == mine["sha256"]:
            return
        theirs = {n: s for n, s in saved.get("parameters", [])}
        here = {n: s for n, s in mine["parameters"]}
        missing = [n for n in theirs if n not in here]
        extra = [n for n in here if n not in theirs]
        changed = [n for n in theirs if n in here and theirs[n] != here[n]]
        if changed:
            n = changed[0]
            why = f"parameter {n!r} has shape {tuple(theirs[n])} in the run but {tuple(here[n])} in this model"
        elif missing:
            why = f"the run's parameter {missing[0]!r} is not in this model"
        elif extra:
            why = f"this model's parameter {extra[0]!r} is not in the run"
        else:
            why = "the parameters are in a different order"
        raise RunFileError(f"{source} was recorded on a different model: {why}. Load it with the model it "
                           "was recorded on (same architecture and sizes)")
    names = {name for name, _ in model.named_modules()}
    unknown = [g for g in groups if g not in names]
    if unknown:
        raise RunFileError(f"{source} was recorded on a different model: its group {unknown[0]!r} is not a "
                           "module of this model. Load it with the model it was recorded on")

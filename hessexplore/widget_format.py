"""The explorer's one number format, on the Python side (the status line).

The page writes numbers with ``js/src/codec.js`` (``formatNumber``, ``formatValueErr``); the
status messages the kernel writes use these mirrors, so a value reads the same in a card, a
tooltip and the status line: ``0.532 ± 0.014``, ``(3.477 ± 0.056)×10⁻⁴``, ``2.080×10⁻⁴``.
The cases in ``js/test/format-cases.json`` are checked against both implementations.

Rules (value ± stderr): the stderr keeps 2 significant digits and the value is rounded to
the same decimal; fixed notation while it needs at most 6 decimals and 10⁻⁴ ≤ |x| < 10⁶,
else a shared power of ten; when the stderr is tiny next to the value (more than 6 digits of
the value would show) the value gets 6 significant digits and the stderr its own notation.
"""
from __future__ import annotations

import math

_SUP = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def pow10(exp: int) -> str:
    """``×10⁻⁴`` for exp = -4."""
    return "×10" + str(int(exp)).translate(_SUP)


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def format_number(x, sig: int = 4) -> str:
    """``sig`` significant digits: fixed for 10⁻³ ≤ |x| < 10⁵, else ``2.080×10⁻⁴``; "—" when missing."""
    if _missing(x):
        return "—"
    x = float(x)
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == 0:
        return "0"
    a = abs(x)
    s = None
    if 1e-3 <= a < 1e5:
        s = f"{x:#.{sig}g}"
        if "e" in s:
            s = None
        elif s.endswith("."):
            s = s[:-1]
    if s is None:
        m, e = f"{x:.{max(0, sig - 1)}e}".split("e")
        s = m + pow10(int(e))
    return s.replace("-", "−")


def _round_half_up(x: float) -> float:
    return math.floor(x + 0.5)


def value_err_parts(value, stderr, sig: int = 2, max_decimals: int = 6, max_sig: int = 6):
    """``(value_text, err_text | None, exp | None)`` as the page's cards split them."""
    if _missing(value):
        return "—", (None if _missing(stderr) else format_number(stderr, sig)), None
    v = float(value)
    if not math.isfinite(v):
        return format_number(v), None, None
    if stderr is not None and not _missing(stderr) and float(stderr) == 0:
        return format_number(v, 4), "0", None
    if _missing(stderr) or not math.isfinite(float(stderr)) or float(stderr) < 0:
        return format_number(v, 4), None, None
    e = float(stderr)
    d = math.floor(math.log10(e)) - (sig - 1)
    if _round_half_up(e / 10 ** d) >= 10 ** sig:
        d += 1
    mag = math.floor(math.log10(max(abs(v), e)))
    if mag - d + 1 > max_sig:
        return format_number(v, max_sig), format_number(e, sig), None
    if -d <= max_decimals and -4 <= mag < 6:
        dec = max(0, -d)
        q = 10.0 ** d
        rv = _round_half_up(v / q) * q
        re = _round_half_up(e / q) * q
        vs = f"{0.0:.{dec}f}" if rv == 0 else f"{rv:.{dec}f}"
        return vs.replace("-", "−", 1), f"{re:.{dec}f}", None
    scale = 10.0 ** mag
    dec = max(0, mag - d)
    return f"{v / scale:.{dec}f}".replace("-", "−", 1), f"{e / scale:.{dec}f}", mag


def format_value_err(value, stderr) -> str:
    """``0.532 ± 0.014``, ``(5.32 ± 0.14)×10⁻⁷``, ``0.5000`` (no stderr) or "—"."""
    v, e, exp = value_err_parts(value, stderr)
    if e is None:
        return v
    if exp is None:
        return f"{v} ± {e}"
    return f"({v} ± {e}){pow10(exp)}"

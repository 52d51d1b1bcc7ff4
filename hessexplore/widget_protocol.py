"""Validation of the explorer's page → kernel messages (docs/widget-protocol.md).

Pure functions over the decoded JSON ``content`` of a custom message: each returns the
field's value or raises :class:`ProtocolError` with a message that says what was wrong in
the user's terms.  Nothing here may be slow or echo unbounded input: a message can carry
anything a page (or a script poking at the comm) puts in it — a 5 MB "node name", a list
where a string belongs — so every value that goes into an error message is shortened with
:func:`short` first, and names are length-checked *before* any lookup (a fuzzy "did you
mean" over a 5 MB string would freeze the kernel).
"""
from __future__ import annotations

import math
import numbers

from .errors import HessExploreError

PROTOCOL = 1
MESSAGE_TYPES = ("compute", "cancel", "coupling_map", "spectrum", "export")
MODES = ("exact", "stream")
SPACES = ("activation", "parameter")
MAX_PROBES = 1_000_000
#: longest node / group name accepted (real qualified names are far shorter)
MAX_NAME = 512
#: most names in a coupling_map's ``nodes``
MAX_NODES = 4096
#: longest status message written to the page (characters)
MAX_MESSAGE = 600
#: largest exported file accepted from the page (bytes)
MAX_EXPORT_BYTES = 32 * 1024 * 1024


class ProtocolError(HessExploreError):
    """A message from the page that does not follow docs/widget-protocol.md."""


def short(x, limit: int = 80) -> str:
    """``repr(x)`` cut to ``limit`` characters (with its full length said when cut).

    Safe for anything a message may hold: a huge string is sliced before repr, so the cost
    does not grow with the input."""
    if isinstance(x, str):
        if len(x) <= limit:
            return repr(x)
        return repr(x[:limit]) + f"… ({len(x):,} characters)"
    if isinstance(x, (list, tuple, dict)):
        kind = type(x).__name__
        return f"a {kind} of {len(x):,} items" if len(x) > 8 else _cut(repr(x), limit)
    return _cut(repr(x), limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def clip_message(message: str, limit: int = MAX_MESSAGE) -> str:
    """A status message no longer than ``limit`` characters (an ellipsis marks the cut)."""
    message = str(message)
    return message if len(message) <= limit else message[:limit - 1] + "…"


def message_type(content) -> str | None:
    """The ``type`` of a message when it is one of :data:`MESSAGE_TYPES`, else None (never
    raises: a list or dict there is not hashable)."""
    if not isinstance(content, dict):
        return None
    t = content.get("type")
    return t if isinstance(t, str) and t in MESSAGE_TYPES else None


def kind_of(content) -> str | None:
    """The job kind a message would start ("block", "estimate", "map", "spectrum") or None."""
    t = message_type(content)
    if t == "compute":
        return "block" if content.get("mode") == "exact" else "estimate"
    return {"coupling_map": "map", "spectrum": "spectrum"}.get(t) if t else None


def check_envelope(content) -> str:
    """Check ``protocol`` and ``type``; returns the type."""
    if not isinstance(content, dict):
        raise ProtocolError(f"a message must be a JSON object, got {type(content).__name__}")
    if "protocol" not in content:
        raise ProtocolError(f"message has no 'protocol' field; this kernel's hessexplore speaks protocol {PROTOCOL}")
    p = content["protocol"]
    if isinstance(p, bool) or not isinstance(p, int) or p != PROTOCOL:
        raise ProtocolError(
            f"unsupported protocol version {short(p)}: this kernel's hessexplore speaks protocol "
            f"{PROTOCOL}. The page and the Python package come from different versions: reinstall "
            "(`pip install -e .`), restart the kernel and reload the page.")
    t = content.get("type")
    if not isinstance(t, str) or t not in MESSAGE_TYPES:
        raise ProtocolError(f"unknown message type {short(t)}; expected one of {', '.join(MESSAGE_TYPES)}")
    return t


def name(content: dict, key: str, what: str, optional: bool = False) -> str | None:
    """A node / group name: a non-empty string of at most :data:`MAX_NAME` characters."""
    x = content.get(key)
    if x is None and optional:
        return None
    if not isinstance(x, str) or not x:
        raise ProtocolError(f"{content.get('type')} needs {key!r}, {what} (a non-empty string), got {short(x)}")
    if len(x) > MAX_NAME:
        raise ProtocolError(f"{key!r} is {len(x):,} characters long ({short(x, 40)}); names of nodes and "
                            f"parameter groups are at most {MAX_NAME} characters")
    return x


def space(content: dict) -> str:
    x = content.get("space", "activation")
    if x is None:
        x = "activation"
    if not isinstance(x, str) or x not in SPACES:
        raise ProtocolError(f"space must be 'activation' or 'parameter', got {short(x)}")
    return x


def mode(content: dict) -> str:
    x = content.get("mode", "stream") or "stream"
    if not isinstance(x, str) or x not in MODES:
        raise ProtocolError(f"mode must be 'exact' or 'stream', got {short(x)}")
    return x


def integer(content: dict, key: str, default: int, lo: int, hi: int) -> int:
    x = content.get(key, default)
    if x is None:
        x = default
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x) or int(x) != x:
        raise ProtocolError(f"{key!r} must be an integer, got {short(x)}")
    x = int(x)
    if not lo <= x <= hi:
        raise ProtocolError(f"{key!r} must be between {lo:,} and {hi:,}, got {x:,}")
    return x


def rel_ci(content: dict) -> float | None:
    x = content.get("rel_ci")
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not (0 < x <= 1):
        raise ProtocolError(f"'rel_ci' must be null or a fraction in (0, 1] (0.05 = ±5 %), got {short(x)}")
    return float(x)


def boolean(content: dict, key: str, default: bool = False) -> bool:
    x = content.get(key, default)
    if x is None:
        return default
    if not isinstance(x, bool):
        raise ProtocolError(f"{key!r} must be true or false, got {short(x)}")
    return x


def choice(content: dict, key: str, options, default: str) -> str:
    x = content.get(key) or default
    if not isinstance(x, str) or x not in options:
        raise ProtocolError(f"{key} must be one of {', '.join(options)}, got {short(x)}")
    return x


def names(content: dict, key: str = "nodes") -> list[str] | None:
    """Null, or a non-empty list of distinct names (at most :data:`MAX_NODES`)."""
    x = content.get(key)
    if x is None:
        return None
    if not isinstance(x, (list, tuple)):
        raise ProtocolError(f"{key!r} must be null or a list of node names, got {short(x)}")
    if len(x) > MAX_NODES:
        raise ProtocolError(f"{key!r} lists {len(x):,} names; at most {MAX_NODES:,} (pass null for all nodes)")
    for i, n in enumerate(x):
        if not isinstance(n, str) or not n or len(n) > MAX_NAME:
            raise ProtocolError(f"{key!r} must be null or a list of node names (non-empty strings of at most "
                                f"{MAX_NAME} characters); item {i} is {short(n, 40)}")
    out = list(dict.fromkeys(x))
    if not out:
        raise ProtocolError(f"{key!r} is an empty list; pass null for all nodes")
    return out

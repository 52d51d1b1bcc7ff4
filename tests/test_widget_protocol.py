"""Hostile and odd messages from the page (issue 9 / 10): unhashable fields, huge names, the
Export message writing files next to the notebook.  Driven through the comm path (see
test_widget.py's ``send``); jobs run synchronously."""
from __future__ import annotations

import time
import zlib
import struct

import pytest
import torch

import hessexplore as hx
from hessexplore import widget_protocol as proto

from test_widget import compute, make, problem, send

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def session():
    return hx.Session(*problem(), dtype=torch.float64)


@pytest.fixture
def widget(session, monkeypatch, tmp_path):
    w = make(session, monkeypatch, export_dir=tmp_path)
    yield w
    w.close()


def send_raw(w, content, buffers=()):
    w._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": list(buffers)})


@pytest.mark.parametrize("bad", [["compute"], {"a": 1}, 3, None, ["export"]])
def test_unhashable_or_odd_type_is_a_readable_error(widget, bad, capfd):
    send(widget, {"protocol": 1, "type": bad, "v": "blocks.0"})
    st = widget.status
    assert st["state"] == "error" and "unknown message type" in st["message"], st
    assert capfd.readouterr() == ("", "")
    send(widget, compute("blocks.0", "blocks.1", probes=8))
    assert widget.status["state"] == "done"


@pytest.mark.parametrize("field", ["v", "w"])
def test_a_5mb_name_is_refused_fast_and_never_echoed(widget, field, capfd):
    huge = "n" * 5_000_000
    t0 = time.perf_counter()
    send(widget, {**compute("blocks.0", "blocks.1"), field: huge})
    took = time.perf_counter() - t0
    st = widget.status
    assert st["state"] == "error" and "5,000,000 characters" in st["message"], st["message"][:300]
    assert len(st["message"]) <= proto.MAX_MESSAGE
    # the fuzzy "did you mean" lookup never ran on it (it would take minutes): a generous bound
    assert took < 30, took
    assert capfd.readouterr() == ("", "")


def test_huge_values_in_other_fields_are_shortened(widget):
    send(widget, {**compute("blocks.0"), "space": "s" * 100_000})
    assert widget.status["state"] == "error" and len(widget.status["message"]) < 400
    send(widget, {"protocol": 1, "type": "coupling_map", "nodes": ["blocks.0"] * (proto.MAX_NODES + 1)})
    assert "at most 4,096" in widget.status["message"]
    send(widget, {"protocol": 1, "type": "coupling_map", "nodes": ["blocks.0", "x" * 10_000]})
    assert widget.status["state"] == "error" and len(widget.status["message"]) < 400
    send(widget, {"protocol": ["x"] * 1000, "type": "compute"})
    assert "unsupported protocol version a list of 1,000 items" in widget.status["message"]


def test_status_messages_are_clipped(widget):
    widget._reject({"protocol": 1, "type": "compute"}, "word " * 10_000)
    msg = widget.status["message"]
    assert len(msg) == proto.MAX_MESSAGE and msg.endswith("…")


def test_short_is_bounded():
    assert proto.short("abc") == "'abc'"
    s = proto.short("x" * 1_000_000, 10)
    assert s.startswith("'xxxxxxxxxx'") and "1,000,000 characters" in s
    assert proto.short(list(range(100))) == "a list of 100 items"
    assert proto.short([1, 2]) == "[1, 2]"


# ---- export --------------------------------------------------------------------------------
def tiny_png() -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"\x00\xff\x00\x00"
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def wait_exported(w, seq, timeout=10.0):
    deadline = time.monotonic() + timeout
    while w.exported.get("seq") != seq:
        assert time.monotonic() < deadline, w.exported
        time.sleep(0.01)
    return w.exported


def test_export_writes_files_next_to_the_notebook(widget, tmp_path):
    png, svg = tiny_png(), b'<svg xmlns="http://www.w3.org/2000/svg"></svg>'
    (tmp_path / "hessexplore-graph.svg").write_bytes(b"old")
    send_raw(widget, {"protocol": 1, "type": "export", "seq": 7,
                      "files": [{"name": "hessexplore-graph.svg"}, {"name": "hessexplore-panels.png"}]},
             [memoryview(svg), png])
    out = wait_exported(widget, 7)
    assert out["error"] is None and out["dir"] == str(tmp_path.resolve())
    assert [p.split("/")[-1] for p in out["files"]] == ["hessexplore-graph.svg", "hessexplore-panels.png"]
    assert (tmp_path / "hessexplore-graph.svg").read_bytes() == svg
    assert (tmp_path / "hessexplore-panels.png").read_bytes() == png
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hessexplore-graph.svg", "hessexplore-panels.png"]
    assert widget.status["state"] == "idle"          # an export never touches the job status


@pytest.mark.parametrize("files,buffers,needle", [
    ([{"name": "../evil.png"}], [tiny_png()], "is not allowed"),
    ([{"name": "hessexplore-x.exe"}], [b"MZ"], "is not allowed"),
    ([{"name": "hessexplore-x.png"}], [b"not a png"], "is not a PNG"),
    ([{"name": "hessexplore-x.svg"}], [b"<html>"], "is not an SVG"),
    ([{"name": "hessexplore-x.png"}], [], "carries 0 buffers"),
    ("all", [], "'export' needs 'files'"),
])
def test_bad_exports_say_why_and_write_nothing(widget, tmp_path, files, buffers, needle):
    send_raw(widget, {"protocol": 1, "type": "export", "seq": 3, "files": files}, buffers)
    out = wait_exported(widget, 3)
    assert needle in out["error"] and out["files"] == []
    assert list(tmp_path.iterdir()) == []


def test_export_into_a_missing_folder_reports_the_error(session, monkeypatch, tmp_path):
    w = make(session, monkeypatch, export_dir=tmp_path / "gone")
    send_raw(w, {"protocol": 1, "type": "export", "seq": 1, "files": [{"name": "hessexplore-p.png"}]}, [tiny_png()])
    out = wait_exported(w, 1)
    assert out["files"] == [] and "could not write hessexplore-p.png" in out["error"]
    w.close()


def test_graph_carries_the_kernels_limits(widget):
    lim = widget.graph["limits"]
    assert lim["probes"] == [1, proto.MAX_PROBES] == [1, 1_000_000]
    assert lim["rel_ci"] == [0, 1] and lim["max_exact_dim"] == widget.session.max_exact_dim


def test_a_converged_lanczos_stage_counts_as_complete():
    from types import SimpleNamespace
    from hessexplore.widget import _spectrum_progress
    sp = SimpleNamespace(done=False, converged=True, lanczos_iterations=10, method="lanczos+slq", stage="lanczos",
                         slq=None)
    assert _spectrum_progress(sp, 200, 16) == 0.5             # not 10/200 of the first half
    assert _spectrum_progress(SimpleNamespace(**{**vars(sp), "method": "lanczos"}), 200, 16) == 1.0
    busy = SimpleNamespace(**{**vars(sp), "converged": False})
    assert _spectrum_progress(busy, 200, 16) == pytest.approx(0.5 * 10 / 200)


def test_status_line_uses_the_pages_number_format(widget):
    send(widget, compute("blocks.0", "blocks.1", probes=16))
    msg = widget.status["message"]
    R = widget.result.resonance
    from hessexplore.widget_format import format_value_err
    assert msg.endswith(f"R = {format_value_err(R.value, R.stderr)}") and "e-0" not in msg


def test_a_cancel_reports_where_its_time_went(session, monkeypatch):
    from hessexplore.jobs import ThreadExecutor
    w = make(session, monkeypatch, executor=ThreadExecutor())
    try:
        send(w, compute("blocks.0", "blocks.1", probes=1_000_000))
        deadline = time.monotonic() + 30
        while (w.estimate.get("probes") or 0) < 16:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        send(w, {"protocol": 1, "type": "cancel", "sent_at": time.time() * 1000 - 250})   # sent 0.25 s ago
        w.wait(30)
        st = w.status
        assert st["state"] == "cancelled", st
        lat = st["latency"]
        assert lat["message_s"] >= 0.25 and lat["message_s"] < 30          # the page's clock, 0.25 s back
        assert 0 <= lat["worker_s"] < 30
        # without a page timestamp only the worker's part is known; a bad one is ignored
        send(w, compute("blocks.0", "blocks.1", probes=1_000_000))
        while (w.estimate.get("probes") or 0) < 8 or w.status["state"] != "running":
            time.sleep(0.01)
        send(w, {"protocol": 1, "type": "cancel", "sent_at": "soon"})
        w.wait(30)
        assert w.status["latency"]["message_s"] is None and w.status["latency"]["worker_s"] >= 0
    finally:
        w.close()

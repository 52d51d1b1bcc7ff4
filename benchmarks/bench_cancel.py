"""Where a cancel's latency goes, in a real JupyterLab in headless Chromium.

Streams a long estimate (1,000,000 probes) for 1, 4 and 8 s, clicks Cancel, and splits the
time from the click to the page showing "cancelled" into: page → kernel handler (the cancel
message's `sent_at` against the kernel's clock), handler → worker stopped (the job runner's
timestamps), and the way back (the rest: the final status queued behind the stream's trait
updates in the kernel's iopub, the server and the page). Prints a table; asserts nothing.

    python benchmarks/bench_cancel.py [--history-points N]     (after `cd js && npm run build`)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", default="1,4,8", help="seconds of streaming before each cancel")
    args = ap.parse_args()
    # reuse the browser tests' fixtures (server, browser) through pytest itself
    sys.exit(pytest.main(["-q", "-s", "-p", "no:cacheprovider", str(ROOT / "tests" / "browser" / "test_cancel_latency.py"),
                          "--hx-streams", args.streams]))


if __name__ == "__main__":
    main()

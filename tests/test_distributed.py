"""Two gloo processes, each with its shard of the data, give every rank the single-process result."""
from __future__ import annotations

import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

import dist_worker
import hessexplore as hx
import oracles as O
import test_datasets as D


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process_on_the_union_of_their_shards(tmp_path):
    ctx = mp.start_processes(dist_worker.run, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + 120
    try:
        while not ctx.join(timeout=max(1.0, deadline - time.monotonic())):   # False while a rank still runs
            assert time.monotonic() < deadline, "the two ranks did not finish within 120 s"
    finally:
        for p in ctx.processes:        # never leave a rank behind
            if p.is_alive():
                p.kill()
    x, y = D._data()
    ref = dist_worker.compute(hx.Session(D._model(), D.CE, D._batches(x, y, [6, 6, 8, 3])))
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["n"] == 23
        for key in ("act", "act_gn", "par"):
            O.assert_rel(got[key], ref[key], 1e-10, scale=O.fro(ref[key]), what=f"rank {rank} {key}")
        for a, b in zip(got["est"], ref["est"]):
            assert abs(a - b) <= 1e-10 * abs(b)
        assert abs(got["phi"] - ref["phi"]) <= 1e-10


@pytest.mark.slow
def test_analyze_nproc_2_reports_what_one_process_reports(tmp_path):
    """`hessexplore analyze factory --nproc 2`: a torchrun launch, each rank every 2nd batch of the loader."""
    import json
    import os
    import subprocess
    import sys
    (tmp_path / "dsfactory.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from torch.utils.data import DataLoader, TensorDataset\n"
        "import test_datasets as D\n"
        "def make():\n"
        "    x, y = D._data()\n"
        "    return D._model(), D.CE, DataLoader(TensorDataset(x, y), batch_size=5, shuffle=False)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, extra in (("one", []), ("two", ["--nproc", "2"])):
        r = subprocess.run([sys.executable, "-m", "hessexplore", "analyze", "dsfactory.py:make", "--out", name,
                            "--quiet", "--no-spectra", *extra], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=240)
        assert r.returncode == 0, r.stderr[-2000:]
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    assert abs(one["phi"] - two["phi"]) <= 1e-9 * max(abs(one["phi"]), 1e-300)
    ra, rb = one["coupling"]["R"], two["coupling"]["R"]
    assert len(ra) == len(rb) and all(abs(a - b) <= 1e-9 * max(abs(a), 1e-12) for ra_, rb_ in zip(ra, rb)
                                      for a, b in zip(ra_, rb_))

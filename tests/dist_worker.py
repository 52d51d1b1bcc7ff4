"""One rank of the 2-process gloo test (tests/test_distributed.py): its shard of the data, results saved."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

import hessexplore as hx
import test_datasets as D

SHARDS = {0: [6, 6], 1: [8, 3]}      # uneven: 12 and 11 of the 23 samples


def shard(rank: int):
    x, y = D._data()
    start = 0 if rank == 0 else sum(SHARDS[0])
    sizes = SHARDS[rank]
    xs, ys = x[start:start + sum(sizes)], y[start:start + sum(sizes)]
    return D._batches(xs, ys, sizes)


def compute(s) -> dict:
    est = list(s.estimate("1", "3", probes=16, seed=3, batch_size=8))[-1]
    return {
        "act": s.block("1", "3").full, "act_gn": s.block("1", "3").gn,
        "par": s.block("0", "5", space="parameter").full,
        "est": (est.resonance.value, est.resonance.stderr, est.norm_gn.value),
        "phi": float(s.phi()), "n": s.num_samples,
    }


def run(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        s = hx.Session(D._model(), D.CE, shard(rank))
        torch.save(compute(s), os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()

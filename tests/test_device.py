"""CUDA path: results computed on the GPU match the CPU, stay on the device, and the
probe products never synchronise with the host.  Skipped without a GPU."""
import pytest
import torch
from torch import nn

import hessexplore as hx
from hessexplore import data, models

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _problem(device):
    torch.manual_seed(0)
    m = models.ResidualMLP(8, 12, 3, 3, activation="gelu", norm="layernorm").eval().to(device)
    x, y = data.blobs(16, 8, 3)
    return m, nn.CrossEntropyLoss(), (x.to(device), y.to(device))


@cuda
@pytest.mark.parametrize("space,v,w", [("activation", "blocks.0", "blocks.2"),
                                       ("parameter", "blocks.0.f.0", "head")])
def test_cuda_block_matches_cpu(space, v, w):
    cpu = hx.Session(*_problem("cpu"), dtype=torch.float64)
    gpu = hx.Session(*_problem("cuda"), dtype=torch.float64)
    assert gpu.device.type == "cuda"
    bc, bg = cpu.block(v, w, space=space), gpu.block(v, w, space=space)
    assert bg.full.device.type == "cuda" and bg.gn.device.type == "cuda"
    for part in ("full", "gn", "tensor"):
        ref = getattr(bc, part)
        err = torch.linalg.norm(getattr(bg, part).cpu() - ref) / torch.linalg.norm(ref).clamp_min(1e-300)
        assert float(err) < 1e-10, part


@cuda
def test_cuda_products_do_not_sync():
    s = hx.Session(*_problem("cuda"))
    va, wa = s._atoms("blocks.0", "activation"), s._atoms("blocks.2", "activation")
    op = s.operator(va + wa, "activation")
    Z = torch.ones(4, op.dim(wa), device="cuda")
    op.products(wa, Z, va + wa)           # warm-up (builds the cached pull-back)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        res = op.products(wa, Z, va + wa)
        res.rows("tensor", va)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@cuda
def test_cuda_estimate_matches_exact():
    s = hx.Session(*_problem("cuda"), dtype=torch.float64)
    exact = s.block("blocks.0", "blocks.2")
    snap = None
    for snap in s.estimate("blocks.0", "blocks.2", probes=400, seed=1):
        pass
    assert abs(snap.resonance.value - exact.resonance) < 4 * snap.resonance.stderr + 1e-12
    assert abs(snap.spectral_norm.value - exact.spectral_norm) <= snap.spectral_norm.stderr + 1e-9

"""P2's layer-wise observations (SCIENCE.md §5), reproduced at small scale on CPU with the Tracker.

Synthetic data only (hessexplore.data), tiny tanh MLPs (8 → 16 → 16 → 3: groups of 144, 272 and 51
parameters, exact dense spectra in float64), full-batch Adam (lr 1e-2) for 400 steps on 128 training
points, checkpoints every 50 steps, curvature on the whole training set.

Why tanh: for a ReLU MLP (no LayerNorm) every layer's local Hessian equals its GN block (the map from
one layer's parameters to the output is piecewise linear), so it is PSD and has no negative mass at
all (pinned in test_spectra.py); negative curvature in a layer's own parameters needs a curved
activation.  The numbers quoted in comments are what this code produced on torch 2.13 / CPU; the
assertions use margins of several × around them.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import hessexplore as hx
from hessexplore import data, models
from hessexplore.tracker import gap_correlation

pytestmark = pytest.mark.usefixtures("single_thread")

HIDDEN = ["blocks.0.0", "blocks.1.0"]
_RUNS: dict = {}


def train(noise: float, dataset: str = "spirals", seed: int = 0, steps: int = 400, every: int = 50,
          parts=("full",), loss: str = "ce") -> hx.Run:
    """Train a tanh MLP with the Tracker; cached per configuration (several tests share runs)."""
    key = (noise, dataset, seed, steps, every, tuple(parts), loss)
    if key in _RUNS:
        return _RUNS[key]
    torch.manual_seed(seed)
    n = 128
    if dataset == "spirals":
        x, y = data.spirals(n + 512, 3, d=8, seed=seed)
    elif dataset == "blobs":
        x, y = data.blobs(n + 512, 8, 3, seed=seed)
    else:
        x, y = data.teacher_student(n + 512, 8, 3, seed=seed)
    xtr, ytr, xte, yte = x[:n], y[:n], x[n:], y[n:]
    if noise:
        ytr = data.with_label_noise(ytr, noise, 3, seed=seed + 1)
    model = models.MLP(8, 16, 2, 3, activation="tanh")
    loss_fn = nn.CrossEntropyLoss() if loss == "ce" else nn.MSELoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    tracker = hx.Tracker(model, loss_fn, (xtr, ytr), every=every, test_batch=(xte, yte), parts=parts,
                         coupling=False, name=f"{dataset} noise={noise}", config={"noise": noise})
    for step in range(steps + 1):
        opt.zero_grad()
        L = loss_fn(model(xtr), ytr)
        tracker.step(step, train_loss=L)
        L.backward()
        opt.step()
    _RUNS[key] = tracker.run
    return tracker.run


def test_linear_output_layer_is_psd_under_ce_and_mse():
    """The head's local Hessian is a GN matrix (z is linear in the head's parameters, the loss convex
    in z): PSD at every checkpoint, equal to its GN part — while hidden layers are not PSD at init."""
    ce = train(0.0, "spirals", parts=("full", "gn"))
    mse = train(0.0, "teacher", steps=100, loss="mse")
    for run in (ce, mse):
        for rec in run.records:
            head = rec["layers"]["head"]["full"]["stats"]
            assert head["lambda_min"] >= -head["tol"], (run.name, rec["step"], head["lambda_min"])
            assert head["negative_mass"] == 0.0
        # observed negative mass of blocks.0.0 at init: 0.36 (CE, spirals), 0.4-0.5 (MSE, teacher)
        assert run.records[0]["layers"]["blocks.0.0"]["full"]["stats"]["negative_mass"] > 0.05
    for rec in ce.records:
        full = np.array(rec["layers"]["head"]["full"]["eigenvalues"])
        gn = np.array(rec["layers"]["head"]["gn"]["eigenvalues"])
        assert np.abs(full - gn).max() <= 1e-9 * np.abs(full).max()


def test_hidden_layers_lose_their_negative_mass_during_training():
    """Observed (spirals, clean): negative mass 0.36 → 0.001 (blocks.0.0), 0.20 → 0.001 (blocks.1.0);
    most of it is gone by step 100.  The GN parts never have any."""
    run = train(0.0, "spirals", parts=("full", "gn"))
    for g in HIDDEN:
        _, nm = run.series("negative_mass", g)
        assert nm[0] > 0.1, (g, nm)
        assert nm[-1] < 0.25 * nm[0], (g, nm)
        assert nm[-1] < 0.05, (g, nm)
        _, nm_gn = run.series("negative_mass", g, part="gn")
        assert np.all(nm_gn == 0.0)
    _, loss = run.series("train_loss")
    assert loss[-1] < 0.1 * loss[0]                      # observed 1.12 → 0.007


def test_label_noise_keeps_curvature_high_while_the_loss_falls():
    """Observed (spirals, 50 % noise vs clean, seed 0) at step 400: hidden-layer traces 29.9 vs 3.0
    (blocks.0.0) and 12.9 vs 0.44 (blocks.1.0); the noisy run's traces are still at their maximum
    while its training loss fell 1.10 → 0.37, whereas the clean run's blocks.1.0 trace fell to 17 %
    of its peak.  (Seeds 1-3: ratios 4-10× and 12-46×, same pattern.)"""
    clean, noisy = train(0.0, "spirals", parts=("full", "gn")), train(0.5, "spirals")
    _, loss = noisy.series("train_loss")
    assert loss[-1] < 0.6 * loss[0]
    for g in HIDDEN:
        _, tc = clean.series("trace", g)
        _, tn = noisy.series("trace", g)
        assert tn[-1] > 3 * tc[-1], (g, tn[-1], tc[-1])
        assert tn[-1] >= 0.8 * tn.max(), (g, tn)         # still (near) its peak
    _, tc = clean.series("trace", "blocks.1.0")
    assert tc[-1] <= 0.5 * tc.max()                      # the clean run's curvature falls from its peak
    # the normalised statistic is printed beside the raw one and is finite throughout
    assert np.isfinite(noisy.series("lambda_max/trace", "blocks.1.0")[1]).all()


def test_label_noise_sweep_statistic_vs_generalisation_gap():
    """4 noise levels × 1 seed (blobs).  Observed at step 400: trace of blocks.0.0 = 0.04, 1.3, 4.2,
    5.3 and gap_loss = 0.03, 0.42, 1.89, 3.36 → Spearman ρ = 1.0 (seeds 1, 2: 1.0, 1.0); λ_max gives
    ρ = 1.0, 0.8, 1.0.  The partial rank correlation on the training loss is often undefined with 4
    runs (the ranks of the loss and of the gap coincide); the raw partial correlation is reported."""
    runs = [train(noise, "blobs", every=400) for noise in (0.0, 0.2, 0.4, 0.6)]
    res = gap_correlation(runs, "trace", "blocks.0.0")
    assert res["n"] == 4 and np.isfinite(res["x"]).all() and np.isfinite(res["y"]).all()
    assert math.isfinite(res["spearman"]) and math.isfinite(res["partial"])
    assert res["spearman"] > 0                           # robust across seeds 0-2 (all ρ = 1.0)
    nres = gap_correlation(runs, "lambda_max/trace", "blocks.0.0")
    assert math.isfinite(nres["spearman"])
    from hessexplore import plots
    fig = plots.plot_gap_scatter(runs, "trace", "blocks.0.0")
    assert len(fig.axes[0].collections[0].get_offsets()) == 4

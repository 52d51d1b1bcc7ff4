"""Tracker (recording in a training loop, save/load), plots (figures with the expected artists, no
display), and the correlation helpers against hand computations."""
from __future__ import annotations

import inspect
import io
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import hessexplore as hx
from hessexplore import data, models, plots
from hessexplore.tracker import (Run, gap_correlation, partial_correlation, partial_spearman, rankdata,
                                 spearman)

pytestmark = pytest.mark.usefixtures("single_thread")

GROUPS = ["blocks.0.0", "blocks.1.0", "head"]
PAIR = ("blocks.0.0", "blocks.1.0")


def _train(every=3, steps=7, **kw):
    torch.manual_seed(0)
    model = models.MLP(4, 6, 2, 3, activation="tanh")
    x, y = data.blobs(96, 4, 3, seed=1)
    xtr, ytr, xte, yte = x[:48], y[:48], x[48:], y[48:]
    lf = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    tracker = hx.Tracker(model, lf, (xtr, ytr), every=every, test_batch=(xte, yte), pairs=[PAIR],
                         name="tiny", config={"lr": 0.2}, **kw)
    returned = []
    for step in range(steps):
        opt.zero_grad()
        loss = lf(model(xtr), ytr)
        returned.append(tracker.step(step, train_loss=loss, lr=0.2))
        loss.backward()
        opt.step()
    return tracker, model, (xtr, ytr), returned


@pytest.fixture(scope="module")
def tracked():
    return _train()


def test_records_at_checkpoints_only(tracked):
    tracker, _, _, returned = tracked
    assert [r is not None for r in returned] == [True, False, False, True, False, False, True]
    run = tracker.run
    assert run.steps.tolist() == [0, 3, 6] and len(tracker.records) == 3
    assert run.groups == GROUPS and run.parts == ["full", "gn"] and run.pairs == [PAIR]
    rec = run.records[0]
    for key in ("train_loss", "eval_loss", "eval_acc", "test_loss", "test_acc", "gap_loss", "gap_acc", "elapsed"):
        assert isinstance(rec[key], float), key
    assert rec["extra"] == {"lr": 0.2}
    assert rec["gap_loss"] == pytest.approx(rec["test_loss"] - rec["eval_loss"])
    for g in GROUPS:
        for part in ("full", "gn"):
            lay = rec["layers"][g][part]
            assert lay["method"] == "exact" and len(lay["eigenvalues"]) == lay["n"]
            assert {"lambda_max", "negative_mass", "trace", "tol", "trace_share"} <= set(lay["stats"])
            assert {"lambda_max/trace", "lambda_min/lambda_max", "negative_mass"} <= set(lay["normalized"])
    shares = [rec["layers"][g]["full"]["stats"]["trace_share"] for g in GROUPS]
    assert sum(shares) == pytest.approx(1.0)
    cm = rec["coupling"]
    assert cm["names"] == GROUPS and cm["space"] == "parameter"
    C = np.array(cm["C"], dtype=float)
    assert np.allclose(np.diag(C), 1.0) and np.allclose(C, C.T)
    assert 0.0 <= cm["phi"] < 1.0
    assert set(rec["pairs"]) == {"blocks.0.0|blocks.1.0"}


def test_last_record_matches_an_independent_session():
    tracker, model, batch, _ = _train(every=100, steps=3)
    rec = tracker.record(3)                               # forced, after training
    s = hx.Session(model.eval(), nn.CrossEntropyLoss(), batch, dtype=torch.float64)
    for g in GROUPS:
        ref = torch.linalg.eigvalsh(s.block(g, g, space="parameter").full)
        got = torch.tensor(rec["layers"][g]["full"]["eigenvalues"], dtype=torch.float64)
        assert float((got - ref).abs().max()) <= 1e-9 * float(ref.abs().max())
    pair = rec["pairs"]["blocks.0.0|blocks.1.0"]
    assert pair["method"] == "exact"
    assert pair["C"] == pytest.approx(s.coupling(*PAIR, space="parameter"), rel=1e-9)
    b = s.block(*PAIR, space="parameter")
    assert pair["R"] == pytest.approx(b.resonance, rel=1e-9)
    assert pair["gn_gap"] == pytest.approx(b.gn_gap, rel=1e-9)
    assert rec["coupling"]["phi"] == pytest.approx(s.phi(GROUPS), rel=1e-9)
    assert Run.value(rec, "C", pair=PAIR) == pytest.approx(pair["C"])


def test_tracking_does_not_disturb_training():
    torch.manual_seed(0)
    model = models.MLP(4, 6, 2, 3, activation="tanh")
    model.train()
    model.blocks[1].eval()                                # per-module flags must come back as they were
    x, y = data.blobs(32, 4, 3)
    tracker = hx.Tracker(model, nn.CrossEntropyLoss(), (x, y), every=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    rec = tracker.step(0)
    assert rec is not None and rec["train_loss"] is None
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and model.blocks[0].training and not model.blocks[1].training
    assert all(p.grad is None for p in model.parameters())
    assert Run.value(rec, "train_loss") == rec["eval_loss"]    # falls back when none was passed


def test_every_accepts_steps_and_predicates():
    x, y = data.blobs(16, 4, 3)
    model = models.MLP(4, 4, 1, 3, activation="tanh")
    t1 = hx.Tracker(model, nn.CrossEntropyLoss(), (x, y), every=[0, 2, 5], coupling=False, parts=("full",))
    t2 = hx.Tracker(model, nn.CrossEntropyLoss(), (x, y), every=lambda s: s in (1, 4), coupling=False,
                    parts=("full",))
    assert [s for s in range(6) if t1.due(s)] == [0, 2, 5]
    assert [s for s in range(6) if t2.due(s)] == [1, 4]
    with pytest.raises(hx.HessExploreError):
        hx.Tracker(model, nn.CrossEntropyLoss(), (x, y), every=0)
    with pytest.raises(hx.HessExploreError):
        hx.Tracker(model, nn.CrossEntropyLoss(), (x, y), parts=("hessian",))


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_save_load_round_trip(tracked, tmp_path, suffix):
    tracker = tracked[0]
    path = str(tmp_path / f"run{suffix}")
    tracker.save(path)
    run = hx.Run.load(path)
    assert run.to_json() == tracker.run.to_json()
    assert run.name == "tiny" and run.config == {"lr": 0.2} and run.pairs == [PAIR]
    steps, vals = run.series("negative_mass", "blocks.0.0")
    assert steps.tolist() == [0, 3, 6]
    assert vals.tolist() == [r["layers"]["blocks.0.0"]["full"]["stats"]["negative_mass"] for r in run.records]
    _, gap = run.series("gap_loss")
    assert np.isfinite(gap).all()
    if suffix == ".json":
        with open(path) as f:
            json.load(f)                                  # plain JSON, no NaN tokens
    with open(tmp_path / "bad.json", "w") as f:
        json.dump({"format": "something else"}, f)
    with pytest.raises(hx.HessExploreError, match="not a hessexplore tracker file"):
        hx.Run.load(str(tmp_path / "bad.json"))


# ------------------------------------------------------------------------------------------ plots
def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_plot_statistic_has_layers_and_losses_on_a_twin_axis(tracked):
    run = tracked[0].run
    fig = plots.plot_statistic(run, "negative_mass")
    main, twin = fig.axes
    assert [ln.get_label() for ln in main.get_lines()] == GROUPS
    assert len(twin.get_lines()) == 2                     # train and test loss
    assert np.array_equal(main.get_lines()[0].get_xdata(), run.steps)
    assert main.get_xlabel() == "step" and "negative mass" in main.get_ylabel()
    assert _png(fig).startswith(b"\x89PNG")
    fig2 = plots.plot_statistic(run, "lambda_max/trace", groups=["head"], part="gn", losses=("eval_loss",))
    assert len(fig2.axes[0].get_lines()) == 1 and len(fig2.axes[1].get_lines()) == 1


def test_plot_spectra_one_line_per_checkpoint(tracked):
    run = tracked[0].run
    fig = plots.plot_spectra(run, "blocks.1.0")
    ax = fig.axes[0]
    assert len(ax.get_lines()) == len(run.records)
    assert len(fig.axes) == 2                             # the step colorbar
    assert len({tuple(ln.get_color()) for ln in ax.get_lines()}) == len(run.records)
    _png(fig)


def test_plot_spectrum_and_coupling(tracked):
    s = tracked[0].session
    for sp in (s.spectrum("head"), s.spectrum("blocks.1.0", method="slq", num_probes=4, num_iter=8)):
        fig = plots.plot_spectrum(sp)
        ax = fig.axes[0]
        assert ax.patches or ax.get_lines()
        assert sum(1 for ln in ax.get_lines() if ln.get_linestyle() == "--") == 2   # λ_max, λ_min
        _png(fig)
    fig = plots.plot_spectrum(sp.to_json())               # records work too
    fig = plots.plot_coupling(tracked[0].run, "C")
    assert fig.axes[0].images and "Φ" in fig.axes[0].get_title()
    _png(fig)


def _fake_run(name, stat, gap, train_loss):
    rec = {"step": 10, "train_loss": train_loss, "gap_loss": gap,
           "layers": {"L": {"full": {"stats": {"trace": stat}, "normalized": {}}}}}
    return Run(name=name, groups=["L"], parts=["full"], records=[rec])


def test_gap_scatter_and_correlations_match_hand_computation():
    stat = [1.0, 3.0, 2.0, 5.0, 4.0, 7.0]
    gap = [0.1, 0.25, 0.3, 0.2, 0.5, 0.6]
    tl = [0.9, 0.4, 0.5, 0.3, 0.1, 0.35]
    runs = [_fake_run(f"r{i}", *v) for i, v in enumerate(zip(stat, gap, tl))]
    fig = plots.plot_gap_scatter(runs, "trace", "L")
    res = fig.hx_correlation
    assert len(fig.axes[0].collections[0].get_offsets()) == 6
    assert "Spearman ρ" in fig.axes[0].get_title()
    # Spearman without ties: 1 − 6 Σ d² / (n (n² − 1))
    rx, ry = rankdata(stat), rankdata(gap)
    n = len(stat)
    rho = 1 - 6 * float(((rx - ry) ** 2).sum()) / (n * (n * n - 1))
    assert res["spearman"] == pytest.approx(rho, abs=1e-12)
    # partial correlation = correlation of the residuals after regressing on [1, z]
    def resid(a, z):
        Z = np.column_stack([np.ones(len(z)), z])
        a = np.asarray(a, float)
        return a - Z @ np.linalg.lstsq(Z, a, rcond=None)[0]

    def corr(a, b):
        return float(np.corrcoef(a, b)[0, 1])

    rz = rankdata(tl)
    assert res["partial_spearman"] == pytest.approx(corr(resid(rx, rz), resid(ry, rz)), abs=1e-12)
    assert res["partial"] == pytest.approx(corr(resid(stat, tl), resid(gap, tl)), abs=1e-12)
    assert partial_correlation(stat, gap, tl) == pytest.approx(res["partial"])
    _png(fig)


def test_ranks_ties_and_degenerate_cases():
    scipy_stats = pytest.importorskip("scipy.stats")
    x = [3.0, 1.0, 3.0, 2.0, 2.0, 5.0]
    y = [1.0, 0.0, 2.0, 2.0, 1.0, 3.0]
    assert rankdata(x).tolist() == [4.5, 1.0, 4.5, 2.5, 2.5, 6.0]
    assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-12)
    assert math.isnan(spearman([1, 2], [2, 1]))
    assert math.isnan(partial_spearman([1, 2, 3], [1, 2, 3], [3, 2, 1]))
    assert math.isnan(partial_correlation([1, 2, 3, 4], [2, 1, 4, 3], [1, 2, 3, 4]))   # x = z
    assert spearman([1, 2, float("nan"), 4], [1, 2, 3, 5]) == pytest.approx(1.0)       # NaNs dropped
    res = gap_correlation([_fake_run("a", 1.0, 0.1, 0.5)], "trace", "L")
    assert res["n"] == 1 and math.isnan(res["spearman"])


def test_plots_do_not_use_pyplot():
    src = inspect.getsource(plots)
    assert "matplotlib.pyplot" not in src and "import pyplot" not in src


def test_activation_space_coupling_and_pairs():
    torch.manual_seed(0)
    model = models.MLP(4, 6, 2, 3, activation="tanh")
    x, y = data.blobs(32, 4, 3)
    tracker = hx.Tracker(model, nn.CrossEntropyLoss(), (x, y), every=1, space="activation", parts=("full",),
                         pairs=[("blocks.0", "blocks.1")])
    rec = tracker.step(0)
    s = hx.Session(model.eval(), nn.CrossEntropyLoss(), (x, y), dtype=torch.float64)
    assert rec["coupling"]["space"] == "activation" and rec["coupling"]["phi"] is None
    pair = rec["pairs"]["blocks.0|blocks.1"]
    assert pair["C"] == pytest.approx(s.coupling("blocks.0", "blocks.1"), rel=1e-9)
    assert pair["gn_gap"] < 1e-8        # the later node feeds the linear head: H^T = 0 (SCIENCE.md §3)


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_a_save_that_dies_half_way_keeps_the_previous_run(tracked, tmp_path, suffix):
    """Run.save is atomic: a write that fails mid-way (the file-size limit) leaves the old file."""
    import os
    import subprocess
    import sys

    path = tmp_path / f"run{suffix}"
    tracked[0].run.save(str(path))
    good = path.read_bytes()
    script = tmp_path / "save.py"
    script.write_text(
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({len(good) + 1}, resource.RLIM_INFINITY))\n"
        "import hessexplore as hx\n"
        f"run = hx.Run.load({str(path)!r})\n"
        "run.records = run.records * 40\n"
        "try:\n"
        f"    run.save({str(path)!r})\n"
        "except OSError as exc:\n"
        "    print('save failed:', exc)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=root))
    assert "save failed" in r.stdout, (r.stdout, r.stderr[-2000:])
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, "save.py"])   # no temp file left
    assert hx.Run.load(str(path)).to_json() == tracked[0].run.to_json()


def test_saved_file_keeps_the_permissions_of_the_one_it_replaces(tracked, tmp_path):
    import os
    path = tmp_path / "run.json"
    path.write_text("old")
    os.chmod(path, 0o640)
    tracked[0].run.save(str(path))
    assert os.stat(path).st_mode & 0o777 == 0o640


def test_a_coupling_map_over_the_memory_budget_is_skipped_not_fatal(monkeypatch):
    monkeypatch.setattr(hx.Session, "max_exact_bytes", 64)
    torch.manual_seed(0)
    model = models.MLP(4, 6, 2, 3, activation="tanh")
    x, y = data.blobs(24, 4, 3, seed=1)
    tracker = hx.Tracker(model, nn.CrossEntropyLoss(), (x, y), every=1, parts=("full",))
    rec = tracker.step(0)
    assert "budget" in rec["coupling"]["skipped"] and "R" not in rec["coupling"]
    assert rec["layers"]["head"]["full"]["stats"]["lambda_max"] > 0


def test_atomic_write_replaces_a_link_target_and_cleans_up_on_error(tmp_path):
    import os
    from hessexplore.fileio import atomic_write
    target = tmp_path / "real.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    os.symlink(target, link)
    atomic_write(link, "new")
    assert link.is_symlink() and target.read_text() == "new"

    def boom(f):
        f.write(b"partial")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, boom)
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["link.txt", "real.txt"]

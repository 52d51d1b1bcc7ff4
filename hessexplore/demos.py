"""Built-in demo problems: a model in eval mode, a mean-reduced loss, and a batch.

``demo(name)`` returns ``(model, loss_fn, (x, y), nodes)`` where ``nodes`` are
the nodes worth mapping (block outputs).  Everything is generated locally
from a seed: nothing is downloaded.  ``DESCRIPTIONS`` says in one line what
each is; :func:`notebooks_dir` finds the teaching notebooks that
``hessexplore demo`` opens.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import data, models


def _mlp(seed):
    torch.manual_seed(seed)
    m = models.MLP(8, 16, 4, 3, activation="gelu", norm="layernorm")
    return m, nn.CrossEntropyLoss(), data.blobs(64, 8, 3, seed=seed), [f"blocks.{i}" for i in range(4)]


def _relu_mlp(seed):
    torch.manual_seed(seed)
    m = models.MLP(8, 16, 4, 3, activation="relu")
    return m, nn.CrossEntropyLoss(), data.blobs(64, 8, 3, seed=seed), [f"blocks.{i}" for i in range(4)]


def _residual(seed):
    torch.manual_seed(seed)
    m = models.ResidualMLP(8, 16, 4, 3, activation="relu", norm="layernorm")
    return m, nn.CrossEntropyLoss(), data.spirals(64, 3, d=8, seed=seed), ["inp"] + [f"blocks.{i}" for i in range(4)]


def _diamond(seed):
    torch.manual_seed(seed)
    m = models.DiamondMLP(8, 16, 3, activation="tanh", merge="sum")
    return m, nn.CrossEntropyLoss(), data.blobs(64, 8, 3, seed=seed), ["stem", "branch_a", "branch_b", "add", "head"]


def _bottleneck(seed):
    torch.manual_seed(seed)
    m = models.BottleneckMLP(8, 32, 4, 3, activation="silu")
    x, y = data.teacher_student(64, 8, 3, seed=seed)
    return m, nn.MSELoss(), (x, y), ["blocks.0", "blocks.1", "blocks.2", "head"]


def _attention(seed):
    torch.manual_seed(seed)
    m = models.ToyAttention(8, 3)
    return m, nn.CrossEntropyLoss(), data.sequences(32, 4, 8, 3, seed=seed), ["norm", "W_Q", "W_K", "W_V", "softmax", "proj", "head"]


def _cnn(seed):
    torch.manual_seed(seed)
    m = models.randomize_batchnorm(models.SmallCNN(1, 8, 4, 3))
    return m, nn.CrossEntropyLoss(), data.images(32, 1, 8, 3, seed=seed), ["conv1", "bn1", "pool1", "conv2", "pool2", "head"]


DEMOS: dict[str, Callable] = {
    "mlp": _mlp, "relu-mlp": _relu_mlp, "residual": _residual, "diamond": _diamond,
    "bottleneck": _bottleneck, "attention": _attention, "cnn": _cnn,
}


DESCRIPTIONS: dict[str, str] = {
    "mlp": "plain MLP, 4 GELU blocks with LayerNorm, Gaussian blobs (cross-entropy)",
    "relu-mlp": "plain MLP, 4 ReLU blocks, Gaussian blobs: activation-space tensor part is exactly 0",
    "residual": "residual MLP, 4 ReLU+LayerNorm blocks on the stream, spirals (the default)",
    "diamond": "two tanh branches from a shared stem, summed, Gaussian blobs",
    "bottleneck": "wide-narrow-wide SiLU MLP, teacher-student regression (MSE)",
    "attention": "one softmax self-attention head with LayerNorm, planted-token sequences",
    "cnn": "two conv + eval-mode BatchNorm + max-pool stages, small synthetic images",
}

#: the teaching notebooks, in reading order (``notebooks/`` in the repository)
NOTEBOOKS = ("01_quickstart.ipynb", "02_relu_vs_smooth.ipynb", "03_skip_connections.ipynb",
             "04_branches_and_attention.ipynb", "05_spectra_through_training.ipynb",
             "06_your_own_model.ipynb", "07_resnet_exp6.ipynb")


def notebooks_dir() -> Path | None:
    """Where the teaching notebooks are: shipped in the wheel as ``hessexplore/_notebooks``, or
    ``notebooks/`` of a source checkout (editable install).  None if neither has them."""
    here = Path(__file__).resolve().parent
    for d in (here / "_notebooks", here.parent / "notebooks"):
        if (d / NOTEBOOKS[0]).is_file():
            return d
    return None


def demo(name: str = "residual", seed: int = 0):
    """(model.eval(), loss_fn, (x, y), nodes) for a built-in demo problem."""
    try:
        make = DEMOS[name]
    except KeyError:
        raise ValueError(f"unknown demo model {name!r}; choose one of {', '.join(DEMOS)}") from None
    model, loss_fn, batch, nodes = make(seed)
    return model.eval(), loss_fn, batch, nodes

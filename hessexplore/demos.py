"""Built-in demo problems: a model in eval mode, a mean-reduced loss, and a batch.

``demo(name)`` returns ``(model, loss_fn, (x, y), nodes)`` where ``nodes`` are
the nodes worth mapping (block outputs).  Everything is generated locally
from a seed: nothing is downloaded.
"""
from __future__ import annotations

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


def demo(name: str = "residual", seed: int = 0):
    """(model.eval(), loss_fn, (x, y), nodes) for a built-in demo problem."""
    try:
        make = DEMOS[name]
    except KeyError:
        raise ValueError(f"unknown demo model {name!r}; choose one of {', '.join(DEMOS)}") from None
    model, loss_fn, batch, nodes = make(seed)
    return model.eval(), loss_fn, batch, nodes

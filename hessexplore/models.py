"""Small built-in models for demos, teaching and tests.

Every model is torch.fx-traceable and names its parts so the curvature
questions read naturally: ``blocks.i`` is the output of block ``i``,
``head`` the logits, ``W_Q``/``W_K``/``W_V`` attention's projections.
"""
from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


def _block(d_in: int, d_out: int, activation: str, norm: str | None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(d_in, d_out)]
    if norm == "layernorm":
        layers.append(nn.LayerNorm(d_out))
    elif norm not in (None, "none"):
        raise ValueError(f"unknown norm {norm!r}; use None or 'layernorm'")
    layers.append(make_activation(activation))
    return nn.Sequential(*layers)


class MLP(nn.Module):
    """Plain MLP: ``blocks.i`` = act(norm(Linear(x))), then a linear ``head``.

    Input (B, d_in) → logits (B, d_out).
    """

    def __init__(self, d_in: int = 8, width: int = 16, depth: int = 3, d_out: int = 3,
                 activation: str = "relu", norm: str | None = None):
        super().__init__()
        dims = [d_in] + [width] * depth
        self.blocks = nn.ModuleList(_block(a, b, activation, norm) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(dims[-1], d_out)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class ResidualBlock(nn.Module):
    """x + f(x); the block's name addresses the residual stream after it, ``<name>.f`` the branch."""

    def __init__(self, width: int, activation: str = "relu", norm: str | None = None):
        super().__init__()
        self.f = _block(width, width, activation, norm)

    def forward(self, x):
        return x + self.f(x)


class ResidualMLP(nn.Module):
    """``inp`` Linear, ``depth`` residual blocks ``blocks.i`` on the stream, linear ``head``."""

    def __init__(self, d_in: int = 8, width: int = 16, depth: int = 3, d_out: int = 3,
                 activation: str = "relu", norm: str | None = None):
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(ResidualBlock(width, activation, norm) for _ in range(depth))
        self.head = nn.Linear(width, d_out)

    def forward(self, x):
        x = self.inp(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class DiamondMLP(nn.Module):
    """Two parallel branches from a shared ``stem``, merged by ``sum`` or ``concat``.

    stem → branch_a, branch_b → merge (fx node ``add`` or ``cat``) → ``head``.
    """

    def __init__(self, d_in: int = 8, width: int = 16, d_out: int = 3, activation: str = "relu",
                 merge: str = "sum", norm: str | None = None):
        super().__init__()
        if merge not in ("sum", "concat"):
            raise ValueError("merge must be 'sum' or 'concat'")
        self.merge = merge
        self.stem = _block(d_in, width, activation, norm)
        self.branch_a = nn.Sequential(_block(width, width, activation, norm), nn.Linear(width, width))
        self.branch_b = nn.Sequential(_block(width, width, activation, norm), nn.Linear(width, width))
        self.head = nn.Linear(width * (2 if merge == "concat" else 1), d_out)

    def forward(self, x):
        h = self.stem(x)
        a = self.branch_a(h)
        b = self.branch_b(h)
        m = a + b if self.merge == "sum" else torch.cat([a, b], dim=-1)
        return self.head(m)


class BottleneckMLP(nn.Module):
    """wide → narrow → wide MLP (``blocks.i``), linear ``head``."""

    def __init__(self, d_in: int = 8, wide: int = 32, narrow: int = 4, d_out: int = 3,
                 activation: str = "relu", norm: str | None = None):
        super().__init__()
        dims = [d_in, wide, narrow, wide]
        self.blocks = nn.ModuleList(_block(a, b, activation, norm) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(wide, d_out)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class ToyAttention(nn.Module):
    """Single-head softmax self-attention on (B, S, d) inputs, mean-pooled into a linear ``head``.

    ``W_Q``, ``W_K``, ``W_V`` are sibling projections of the (optionally
    layer-normed, ``norm``) input; scores = Q Kᵀ/√d, A = softmax(scores), out = A V.
    """

    def __init__(self, d_model: int = 8, d_out: int = 3, layernorm: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(d_model) if layernorm else nn.Identity()
        self.W_Q = nn.Linear(d_model, d_model, bias=False)
        self.W_K = nn.Linear(d_model, d_model, bias=False)
        self.W_V = nn.Linear(d_model, d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model)
        self.head = nn.Linear(d_model, d_out)
        self.scale = 1.0 / math.sqrt(d_model)

    def forward(self, x):
        h = self.norm(x)
        q, k, v = self.W_Q(h), self.W_K(h), self.W_V(h)
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        attn = torch.softmax(scores, dim=-1)
        out = self.proj(torch.matmul(attn, v)) + x
        return self.head(out.mean(dim=1))


class SmallCNN(nn.Module):
    """conv1 → bn1 → relu → pool → conv2 → bn2 → relu → pool → flatten → head.

    Input (B, C, H, W) with H, W divisible by 4.  Use in eval mode (BatchNorm).
    """

    def __init__(self, in_channels: int = 1, size: int = 8, channels: int = 4, d_out: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(channels * (size // 4) ** 2, d_out)

    def forward(self, x):
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))
        x = self.pool2(self.act2(self.bn2(self.conv2(x))))
        return self.head(self.flatten(x))


def randomize_batchnorm(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters, then eval()."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                n = m.num_features
                m.running_mean.copy_(0.3 * torch.randn(n, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                if m.affine:
                    m.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=generator))
                    m.bias.copy_(0.1 * torch.randn(n, generator=generator))
    return model.eval()

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


# ------------------------------------------------------------------------------------------------
# ResNet-18: a faithful replica of torchvision.models.resnet18 (torchvision cannot be imported
# beside the CPU torch wheel here), with the CIFAR stem and the switches of the paper's Exp 6.
# ------------------------------------------------------------------------------------------------

def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv3x3 → bn → act → conv3x3 → bn, (+ shortcut), act.

    As in torchvision one activation module ``relu`` is called twice (after ``bn1`` and after the
    sum); ``downsample`` (1×1 conv + BN) matches shapes when the stride or width changes.
    ``shortcut=False`` drops the identity/downsample path (a plain network of the same depth);
    ``activation`` replaces ReLU (the module keeps torchvision's name ``relu``).
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 activation: str = "relu", shortcut: bool = True):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = make_activation(activation)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride
        self.shortcut = shortcut

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.shortcut:
            if self.downsample is not None:
                identity = self.downsample(x)
            out = out + identity
        out = self.relu(out)
        return out


class ResNet18(nn.Module):
    """ResNet-18 as torchvision builds it (module names and layout), for CIFAR-sized inputs.

    Stem ``conv1``/``bn1``/``relu`` (CIFAR stem: 3×3 stride-1 conv and no max-pool; ``stem=
    "imagenet"`` gives torchvision's 7×7 stride-2 conv and 3×3 max-pool), stages ``layer1`` …
    ``layer4`` of two :class:`BasicBlock` each with widths (1, 2, 4, 8)·``width`` and strides
    (1, 2, 2, 2), ``avgpool``, ``fc``.  ``width=64`` is the real ResNet-18 (11.2 M parameters with
    10 classes); smaller widths are the same network, narrower, for CPU-sized experiments.
    ``shortcut=False`` removes every skip connection; ``activation`` "relu" or e.g. "silu".
    Use in eval mode (BatchNorm): train, then ``.eval()``, or :func:`randomize_batchnorm`.
    """

    def __init__(self, num_classes: int = 10, width: int = 64, in_channels: int = 3, activation: str = "relu",
                 shortcut: bool = True, stem: str = "cifar"):
        super().__init__()
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        self.inplanes = width
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = make_activation(activation)
        kw = dict(activation=activation, shortcut=shortcut)
        self.layer1 = self._make_layer(width, 2, 1, **kw)
        self.layer2 = self._make_layer(2 * width, 2, 2, **kw)
        self.layer3 = self._make_layer(4 * width, 2, 2, **kw)
        self.layer4 = self._make_layer(8 * width, 2, 2, **kw)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width, num_classes)
        for m in self.modules():      # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int, **kw) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample, **kw)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes, **kw) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


#: the stage outputs of :class:`ResNet18` compared in the paper's Exp 6
RESNET_STAGES = ("relu", "layer1", "layer2", "layer3", "layer4")

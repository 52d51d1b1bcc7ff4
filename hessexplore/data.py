"""Synthetic data sets generated on the fly (nothing is downloaded).

Every function is deterministic in ``seed`` and returns ``(x, y)`` tensors:
``y`` holds class indices (int64) for classification, targets (float) for
regression.  :func:`digits` is the one real data set: scikit-learn's bundled
8×8 handwritten digits, read from the files inside the scikit-learn package
(it is an optional dependency; nothing is downloaded either way).
"""
from __future__ import annotations

import math

import torch


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def blobs(n: int = 256, d: int = 8, classes: int = 3, spread: float = 1.0, seed: int = 0):
    """Gaussian blobs: class c is N(μ_c, spread² I) with μ_c ~ N(0, 4 I); x (n, d), y (n,)."""
    g = _gen(seed)
    centers = 2.0 * torch.randn(classes, d, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + spread * torch.randn(n, d, generator=g)
    return x, y


def spirals(n: int = 256, classes: int = 3, noise: float = 0.1, d: int = 2, seed: int = 0):
    """Interleaved 2-d spirals (padded with zeros to ``d`` features); x (n, d), y (n,)."""
    g = _gen(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    r = torch.rand(n, generator=g)
    theta = 4.0 * r + 2.0 * math.pi * y / classes + noise * torch.randn(n, generator=g)
    x2 = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)
    x = torch.zeros(n, max(d, 2))
    x[:, :2] = x2
    return x, y


def teacher_student(n: int = 256, d_in: int = 8, d_out: int = 3, width: int = 16, noise: float = 0.05,
                    seed: int = 0):
    """Regression targets from a random tanh teacher network plus Gaussian noise; x (n, d_in), y (n, d_out)."""
    g = _gen(seed)
    w1 = torch.randn(d_in, width, generator=g) / math.sqrt(d_in)
    w2 = torch.randn(width, d_out, generator=g) / math.sqrt(width)
    x = torch.randn(n, d_in, generator=g)
    y = torch.tanh(x @ w1) @ w2 + noise * torch.randn(n, d_out, generator=g)
    return x, y


def sequences(n: int = 128, seq: int = 4, d: int = 8, classes: int = 3, seed: int = 0):
    """Token-feature sequences whose class is set by a planted direction at a random position; x (n, seq, d)."""
    g = _gen(seed)
    dirs = torch.randn(classes, d, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    x = 0.5 * torch.randn(n, seq, d, generator=g)
    pos = torch.randint(0, seq, (n,), generator=g)
    x[torch.arange(n), pos] += dirs[y]
    return x, y


def images(n: int = 64, channels: int = 1, size: int = 8, classes: int = 3, seed: int = 0):
    """Small noisy images, class = which of ``classes`` planted patterns is present; x (n, C, size, size)."""
    g = _gen(seed)
    patterns = torch.randn(classes, channels, size, size, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    x = patterns[y] + 0.7 * torch.randn(n, channels, size, size, generator=g)
    return x, y


def digits(n: int | None = None, image: bool = False, classes: int = 10, seed: int = 0):
    """scikit-learn's bundled handwritten digits (1797 images, 8×8, 10 classes), shuffled by ``seed``.

    Read from the files shipped inside scikit-learn (``sklearn.datasets.load_digits``): nothing is
    downloaded.  Pixels are scaled from 0..16 to [0, 1].  Returns x (n, 64) float32, or
    (n, 1, 8, 8) with ``image=True``, and y (n,) int64; ``classes`` < 10 keeps digits 0..classes-1;
    ``n`` (default: all) takes the first n after shuffling.  Raises ImportError with an install hint
    when scikit-learn is missing.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError("data.digits() needs scikit-learn, which bundles the digits files "
                          "(pip install scikit-learn); the other data sets here need nothing") from exc
    if not 2 <= classes <= 10:
        raise ValueError(f"classes must be between 2 and 10, got {classes}")
    d = load_digits()
    x = torch.as_tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.as_tensor(d.target, dtype=torch.int64)
    keep = y < classes
    x, y = x[keep], y[keep]
    perm = torch.randperm(x.shape[0], generator=_gen(seed))
    x, y = x[perm], y[perm]
    if n is not None:
        if not 1 <= n <= x.shape[0]:
            raise ValueError(f"n must be between 1 and {x.shape[0]} for {classes} classes, got {n}")
        x, y = x[:n], y[:n]
    if image:
        x = x.reshape(-1, 1, 8, 8)
    return x, y


def with_label_noise(y: torch.Tensor, fraction: float, classes: int, seed: int = 0) -> torch.Tensor:
    """Replace a ``fraction`` of labels with uniformly random (possibly equal) classes."""
    g = _gen(seed)
    y = y.clone()
    flip = torch.rand(y.shape[0], generator=g) < fraction
    y[flip] = torch.randint(0, classes, (int(flip.sum()),), generator=g)
    return y

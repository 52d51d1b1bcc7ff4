"""Random probe vectors shared by every stochastic estimator (Hutchinson traces, streamed block metrics,
estimated maps, stochastic Lanczos quadrature)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def rademacher(m: int, n: int, *, generator: Optional[torch.Generator] = None,
               dtype: torch.dtype = torch.float64, device="cpu") -> Tensor:
    """m independent Rademacher vectors (entries ±1 with probability ½) as rows, shape (m, n).

    Drawn as ``randint(0, 2)`` straight into ``dtype`` and mapped to 2z − 1 in place: the same
    values as drawing integers and converting, at half the cost and without an int64 copy (on the
    CPU the probes cost about 3 % of a 64-probe trace otherwise).
    """
    z = torch.randint(0, 2, (m, n), generator=generator, dtype=dtype, device=device)
    return z.mul_(2).sub_(1)

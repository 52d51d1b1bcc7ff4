"""Any Hessian block as an open operator: a matvec object and a SciPy ``LinearOperator``.

    A = s.block_operator("blocks.0", "blocks.2", space="activation", part="full")
    A.shape                  # (d_v, d_w)
    A @ x                    # H_{v,w} x  for x (d_w,) or X (d_w, k)  →  (d_v,) / (d_v, k)
    A.T @ u                  # H_{w,v} u = H_{v,w}ᵀ u
    A.matmat_rows(T)         # rows: T (k, d_w) → (k, d_v), the batched form
    A.to_scipy()             # scipy.sparse.linalg.LinearOperator (float64 numpy in and out)

``part`` is "full" (H_{v,w}), "gn" (its Gauss–Newton part Σ_b J_vᵀ (∂²L/∂z_b²) J_w) or
"tensor" (H − GN).  Products use the session's recorded double-backward operator over
the atoms of v and w (forward and first backward recorded once), so every product is
one batched backward; only what ``part`` needs is computed.  Hᵀ is a product with a
direction in v's perturbation space (never a backward through an intermediate tensor).
scipy is imported only by :meth:`BlockOperator.to_scipy`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .errors import HessExploreError
from .operators import CurvatureOperator

PARTS = ("full", "gn", "tensor")


class BlockOperator:
    """The block H_{v,w} (or its GN / tensor part) of a session as a linear map R^{d_w} → R^{d_v}."""

    def __init__(self, op: CurvatureOperator, v_atoms: Sequence[str], w_atoms: Sequence[str], *,
                 v: str, w: str, space: str, part: str = "full"):
        if part not in PARTS:
            raise HessExploreError(f"part must be one of {PARTS}, got {part!r}")
        self.op, self.v_atoms, self.w_atoms = op, list(v_atoms), list(w_atoms)
        self.v, self.w, self.space, self.part = v, w, space, part
        ref = next(iter(op.problem.base.values()))
        self.dtype, self.device = ref.dtype, ref.device
        self.shape = (op.dim(self.v_atoms), op.dim(self.w_atoms))
        self.matvecs = 0

    # -- the batched product ------------------------------------------------------------------
    def matmat_rows(self, T: torch.Tensor) -> torch.Tensor:
        """Rows (H t_i)ᵀ for T (k, d_w): returns (k, d_v).  One batched product."""
        T = torch.as_tensor(T)
        if T.dim() != 2 or T.shape[1] != self.shape[1]:
            raise HessExploreError(f"expected directions of shape (k, {self.shape[1]}) for {self.w!r}, "
                                   f"got {tuple(T.shape)}")
        T = T.to(dtype=self.dtype, device=self.device)
        want_full, want_gn = self.part in ("full", "tensor"), self.part in ("gn", "tensor")
        P = self.op.products(self.w_atoms, T, self.v_atoms, full=want_full, gn=want_gn)
        self.matvecs += T.shape[0]
        return P.rows(self.part, self.v_atoms)

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        """H x for x (d_w,) → (d_v,), or H X for X (d_w, k) → (d_v, k)."""
        x = torch.as_tensor(x)
        if x.dim() == 1:
            return self.matmat_rows(x[None])[0]
        if x.dim() == 2:
            return self.matmat_rows(x.T).T
        raise HessExploreError(f"expected a vector ({self.shape[1]},) or matrix ({self.shape[1]}, k), "
                               f"got {tuple(x.shape)}")

    matvec = __matmul__

    @property
    def T(self) -> "BlockOperator":
        """Hᵀ = H_{w,v}: the same block seen from w (a product in v's space)."""
        return BlockOperator(self.op, self.w_atoms, self.v_atoms, v=self.w, w=self.v, space=self.space,
                             part=self.part)

    def dense(self, chunk: int = 256) -> torch.Tensor:
        """The dense (d_v, d_w) block from d_w unit-vector products (for small blocks and tests)."""
        cols = []
        n = self.shape[1]
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            E = torch.zeros(k, n, dtype=self.dtype, device=self.device)
            E[torch.arange(k), torch.arange(start, start + k)] = 1
            cols.append(self.matmat_rows(E))
        return torch.cat(cols).T

    # -- SciPy -------------------------------------------------------------------------------------
    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` of shape (d_v, d_w), float64 numpy in and out.

        ``matvec``/``matmat`` call :meth:`matmat_rows` (one batched product per call);
        ``rmatvec`` uses Hᵀ.  Needs scipy (``pip install scipy``).
        """
        try:
            from scipy.sparse.linalg import LinearOperator
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise HessExploreError("to_scipy() needs scipy: pip install scipy") from exc
        adj = self.T

        def to_np(t: torch.Tensor) -> np.ndarray:
            return t.detach().to("cpu", torch.float64).numpy()

        def mv(x):
            return to_np(self @ torch.from_numpy(np.asarray(x, dtype=np.float64).reshape(-1)))

        def mm(X):
            return to_np(self @ torch.from_numpy(np.asarray(X, dtype=np.float64)))

        def rmv(u):
            return to_np(adj @ torch.from_numpy(np.asarray(u, dtype=np.float64).reshape(-1)))

        def rmm(U):
            return to_np(adj @ torch.from_numpy(np.asarray(U, dtype=np.float64)))

        return LinearOperator(self.shape, matvec=mv, matmat=mm, rmatvec=rmv, rmatmat=rmm, dtype=np.float64)

    def __repr__(self) -> str:
        return (f"BlockOperator({self.v!r}, {self.w!r}, space={self.space!r}, part={self.part!r}, "
                f"shape={self.shape}, dtype={self.dtype})")

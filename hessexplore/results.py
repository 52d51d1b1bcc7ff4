"""Result objects of exact computations: a dense block and a coupling map."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import torch

from . import metrics


@dataclass
class Block:
    """The exact block H_{v,w} = ∂²L/∂u_v∂u_w (d_v, d_w), rows indexed by v, and its parts.

    ``full = gn + tensor``; ``gn`` is the Gauss–Newton part Σ_b J_vᵀ (∂²L/∂z_b²) J_w,
    ``tensor`` the rest.  Diagonal blocks (v = w) are symmetrised.
    """

    v: str
    w: str
    space: str
    full: torch.Tensor
    gn: torch.Tensor
    tensor: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.tensor = self.full - self.gn

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.full.shape)

    @property
    def diagonal(self) -> bool:
        return self.v == self.w

    @cached_property
    def resonance(self) -> float:
        """R = ‖H_{v,w}‖_F."""
        return metrics.resonance(self.full)

    @cached_property
    def norm_gn(self) -> float:
        return metrics.frobenius(self.gn)

    @cached_property
    def norm_tensor(self) -> float:
        return metrics.frobenius(self.tensor)

    @cached_property
    def spectral_norm(self) -> float:
        return metrics.spectral_norm(self.full)

    @cached_property
    def stable_rank(self) -> float:
        """D = ‖H‖_F² / ‖H‖₂² (NaN for a zero block)."""
        s = self.spectral_norm
        return self.resonance ** 2 / s ** 2 if s > 0 else float("nan")

    @property
    def tol(self) -> float:
        """Relative zero threshold of this block's dtype (see :func:`metrics.rel_tol`)."""
        return metrics.rel_tol(self.full.dtype)

    @cached_property
    def gn_gap(self) -> float:
        """‖H^T‖_F / ‖H^GN‖_F, scale-free; NaN (reason in :attr:`notes`) for a zero or pure-tensor block."""
        return metrics.gn_gap_from_norms(self.norm_tensor, self.norm_gn, self.tol)

    @property
    def notes(self) -> dict[str, str]:
        """Why a metric is NaN: {metric: reason} (empty when every metric is defined)."""
        out = {}
        why = metrics.gap_reason(self.norm_tensor, self.norm_gn, self.tol)
        if why:
            out["gn_gap"] = why
        if self.resonance == 0:
            out["stable_rank"] = "zero block"
            if self.diagonal:
                out["coupling"] = "zero block"
        return out

    @cached_property
    def trace(self) -> float | None:
        return float(torch.trace(self.full)) if self.diagonal else None

    @cached_property
    def eigenvalues(self) -> torch.Tensor | None:
        """Eigenvalues (ascending) of a diagonal block; None off the diagonal."""
        return torch.linalg.eigvalsh(self.full) if self.diagonal else None

    @property
    def metrics(self) -> dict[str, float]:
        out = {"resonance": self.resonance, "stable_rank": self.stable_rank, "gn_gap": self.gn_gap,
               "norm_full": self.resonance, "norm_gn": self.norm_gn, "norm_tensor": self.norm_tensor,
               "spectral_norm": self.spectral_norm}
        if self.diagonal:
            out["trace"] = self.trace
            out["coupling"] = 1.0 if self.resonance > 0 else float("nan")
        return out

    def transpose(self) -> "Block":
        """H_{w,v} = H_{v,w}ᵀ (bitwise)."""
        return Block(self.w, self.v, self.space, self.full.T, self.gn.T)

    def __repr__(self) -> str:
        return (f"Block({self.v!r}, {self.w!r}, space={self.space!r}, shape={self.shape}, "
                f"R={self.resonance:.4g}, gap={self.gn_gap:.3g})")


@dataclass
class CouplingMap:
    """Norms of all blocks among ``names`` (n nodes or groups), exact or estimated.

    ``R[i, j] = ‖H_ij‖_F``, ``norm_gn``/``norm_tensor`` likewise for the parts,
    ``C[i, j] = R_ij / sqrt(R_ii R_jj)``, ``gap[i, j]`` the GN-Gap,
    ``D[i, j]`` the stable rank, ``distance`` hops in the DAG contracted to
    these nodes (-1 if unconnected; parameter space uses the order of groups).
    ``filled[i, j]`` says which entries are computed (maps fill column by column).
    Ratios are NaN where undefined (relative threshold ``tol``, see :mod:`metrics`).

    ``method`` is "exact" or "estimate".  An estimated map (Hutchinson norms, see
    :mod:`hessexplore.maps`) also carries ``probes`` (per node) and ``stderr``:
    {"R", "C", "gap", "norm_gn", "norm_tensor"} → (k, k) standard errors;
    its ``D`` is NaN (no ‖H‖₂ per pair) and R is √ of an unbiased ‖H‖_F² (biased low
    by ≈ se²/(8R³), second order).  ``note`` says what ran.

    Exact maps stream within a node too: ``columns_done`` of ``columns_total`` unit
    vectors are swept, and ``partial`` {"R", "norm_gn", "norm_tensor"} holds every
    entry's norm over the columns swept so far (a lower bound; equal to the final
    value where ``filled``).  Unfilled entries of ``R`` etc. stay 0.
    """

    names: list[str]
    space: str
    R: torch.Tensor
    norm_gn: torch.Tensor
    norm_tensor: torch.Tensor
    D: torch.Tensor
    distance: torch.Tensor
    filled: torch.Tensor
    method: str = "exact"
    probes: int | None = None
    stderr: dict[str, torch.Tensor] | None = None
    tol: float = metrics.REL_TOL
    note: str = ""
    columns_done: int | None = None
    columns_total: int | None = None
    partial: dict[str, torch.Tensor] | None = None

    @property
    def C(self) -> torch.Tensor:
        """(k, k) couplings R_ij / sqrt(R_ii R_jj), NaN where a diagonal norm is (relatively) zero."""
        return metrics.coupling_matrix(self.R, self.tol)

    @property
    def gap(self) -> torch.Tensor:
        """(k, k) GN-Gaps ‖H^T‖_F / ‖H^GN‖_F, NaN for zero or pure-tensor blocks."""
        return metrics.gap_matrix(self.norm_tensor, self.norm_gn, self.tol)

    @property
    def done(self) -> bool:
        return bool(self.filled.all())

    def global_gap(self, include_diagonal: bool = True) -> float:
        """Σ‖H^T‖_F / Σ‖H^GN‖_F over pairs v ≤ w (v < w without the diagonal): a ratio of sums."""
        n = len(self.names)
        iu = torch.triu_indices(n, n, 0 if include_diagonal else 1)
        t = self.norm_tensor[iu[0], iu[1]]
        g = self.norm_gn[iu[0], iu[1]]
        return metrics.ratio_of_sums(t.tolist(), g.tolist())

    def by_distance(self) -> list[dict]:
        """Per-distance aggregates over pairs v < w: count, mean R, C and GN-Gap as ratios of sums.

        C(d) = Σ R_vw / Σ sqrt(R_vv R_ww);  gap(d) = Σ ‖H^T_vw‖ / Σ ‖H^GN_vw‖.
        """
        n = len(self.names)
        diag = self.R.diagonal()
        rows = []
        for d in sorted({int(x) for x in self.distance.unique().tolist() if x > 0}):
            pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if int(self.distance[i, j]) == d]
            if not pairs:
                continue
            R = [float(self.R[i, j]) for i, j in pairs]
            rows.append({
                "distance": d, "pairs": len(pairs), "mean_R": sum(R) / len(R),
                "C": metrics.ratio_of_sums(R, [math.sqrt(float(diag[i] * diag[j])) for i, j in pairs]),
                "gap": metrics.ratio_of_sums([float(self.norm_tensor[i, j]) for i, j in pairs],
                                             [float(self.norm_gn[i, j]) for i, j in pairs]),
            })
        return rows

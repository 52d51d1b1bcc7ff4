"""Shared test setup: import paths and a single-threaded torch fixture for tiny models."""
from __future__ import annotations

import os
import sys

import pytest
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
for _p in (os.path.dirname(_HERE), _HERE):  # repo root (hessexplore without an install), tests/ (oracles)
    if _p not in sys.path:
        sys.path.insert(0, _p)


@pytest.fixture(scope="session", autouse=True)
def _one_intra_op_thread():
    """Every test model is tiny: one intra-op thread avoids OpenMP contention on shared 2-core machines."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def single_thread():
    """Tiny float64 models are 10-100x faster on one intra-op thread than on contended cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

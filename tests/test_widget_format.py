"""The status line writes numbers exactly as the page's cards and tooltips do: the cases of
js/test/format-cases.json are checked here against hessexplore.widget_format and in
js/test/codec.test.js against js/src/codec.js."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hessexplore.widget_format import format_number, format_value_err, pow10

CASES = json.loads((Path(__file__).resolve().parents[1] / "js" / "test" / "format-cases.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("value,stderr,want", CASES["value_err"])
def test_value_err_matches_the_page(value, stderr, want):
    assert format_value_err(value, stderr) == want


@pytest.mark.parametrize("x,sig,want", CASES["number"])
def test_number_matches_the_page(x, sig, want):
    assert format_number(x, sig) == want


def test_specials():
    assert format_value_err(math.nan, math.nan) == "—"
    assert format_number(math.inf) == "∞" and format_number(-math.inf) == "−∞"
    assert pow10(-14) == "×10⁻¹⁴" and pow10(5) == "×10⁵"
    assert len(CASES["value_err"]) >= 15

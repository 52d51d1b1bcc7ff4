"""Run the widget's pure-JS unit tests (``node --test js/test/``) under pytest, so the one
test command of the README covers them.  Needs Node ≥ 20 and js/node_modules (the package
build runs ``npm install``)."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parents[1] / "js"


def test_js_unit_tests_pass():
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the widget bundle and its tests need Node >= 20")
    if not (JS / "node_modules").is_dir():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=JS, check=True,
                       capture_output=True, timeout=300)
    proc = subprocess.run([node, "--test", "test/"], cwd=JS, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    passed = re.search(r"^# pass (\d+)", out, re.M)
    failed = re.search(r"^# fail (\d+)", out, re.M)
    assert proc.returncode == 0 and failed and failed.group(1) == "0", out[-4000:]
    assert passed and int(passed.group(1)) >= 30, out[-2000:]

"""The repo layout must never shadow the standard library's `operator` module."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_numpy_and_torch_import_with_repo_root_first_on_sys_path():
    # A top-level `operator` package would shadow the stdlib module that numpy and torch import.
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "import operator, numpy, torch\n"
        "assert hasattr(operator, 'itemgetter'), operator.__file__\n"
        "import kpilot.observation, kpilot_operator\n"
        "print(operator.__file__)\n" % str(ROOT)
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "site-packages" not in out.stdout and "/operator/" not in out.stdout, out.stdout
    assert out.stdout.strip().endswith("operator.py")


def test_source_folders_are_not_packages():
    assert (ROOT / "operator").is_dir() and (ROOT / "rl").is_dir()
    assert not (ROOT / "operator" / "__init__.py").exists()
    assert not (ROOT / "rl" / "__init__.py").exists()

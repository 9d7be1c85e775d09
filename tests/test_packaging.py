"""The repo layout must never shadow the standard library's `operator` module."""

import os
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


def test_the_wheel_carries_the_shipped_policy_and_reports_its_version(tmp_path):
    # A plain (non-editable) install looked for the policy beside site-packages: `kpilot demo`
    # failed with "no such policy directory".
    import zipfile

    import kpilot

    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("kpilot-*.whl")
    assert wheel.name.startswith(f"kpilot-{kpilot.__version__}-")
    with zipfile.ZipFile(wheel) as zf:
        for name in ("policy.json", "manifest.json"):
            assert zf.read(f"kpilot/policies/default/{name}") == (ROOT / "policies/default" / name).read_bytes()


def test_version_and_a_missing_extra_are_one_line(tmp_path):
    import kpilot

    kpilot_cli = str(Path(sys.executable).with_name("kpilot"))
    out = subprocess.run([kpilot_cli, "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == f"kpilot {kpilot.__version__}\n"
    # An install without the train extra: --report's plots need matplotlib (was a traceback).
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from kpilot.cli import main\n"
            f"main(['evaluate', '--trace', 'synthetic:bursty:rate=2,duration=300,seed=1', '--baselines', 'kpa',"
            f" '--report', {str(tmp_path / 'report')!r}])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip() == ("kpilot: error: this needs matplotlib, which kpilot's train extra installs: "
                                  "pip install 'kpilot[train]'")


def test_make_demo_trains_only_when_asked():
    # The issue: `make demo` trains nothing by default; a flag trains a fresh policy.
    def demo_command(*args):
        proc = subprocess.run(["make", "-n", "demo", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "MAKEFLAGS": ""})
        assert proc.returncode == 0, proc.stderr
        return [line.split() for line in proc.stdout.splitlines() if "kpilot demo" in line][-1]
    assert demo_command()[1:] == ["demo"]
    assert demo_command("TRAIN=1")[1:] == ["demo", "--train"]

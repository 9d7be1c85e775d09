"""`kpilot train` end to end through the installed CLI: a tiny run, and a bad trace path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

KPILOT = Path(sys.executable).with_name("kpilot")
TINY_YAML = """\
name: cli
n_envs: 4
total_timesteps: 128
env:
  traces: [synthetic:poisson:rate=9,duration=900,seed=1]
  episode_s: 300
ppo: {n_steps: 32, batch_size: 64, n_epochs: 1, net_arch: [8]}
eval: {every_timesteps: 64, rule_grid: {hi_s: [1.0], down: [0.5], up: [1.5]}}
checkpoint: {every_timesteps: 1000}
"""


def test_train_cli_writes_an_artifact_from_trace_options(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_YAML)
    out = tmp_path / "policy"
    spec = "synthetic:onoff:rate=5,duration=1200,seed=7"
    proc = subprocess.run([str(KPILOT), "train", "-c", str(cfg), "--trace", spec, "--out", str(out),
                           "--no-progress"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["timesteps"] == 128 and summary["env_steps_per_s"] > 0
    assert "env steps/s" in proc.stderr and "validation at" in proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())["manifest"]
    # --trace replaced the config's traces: only the onoff workload was trained on.
    assert [t["source"].split(":")[1] for t in manifest["training_traces"]] == ["onoff"]
    assert "--trace" in manifest["command"]
    assert list((out / "runs" / "tb").iterdir())          # TensorBoard logs were written


def test_train_cli_bad_trace_is_one_line(tmp_path):
    proc = subprocess.run([str(KPILOT), "train", "--trace", str(tmp_path / "nope.csv"), "--out",
                           str(tmp_path / "o"), "--no-progress"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "nope.csv" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_train_cli_bad_overrides_name_their_option_not_the_config_file(tmp_path):
    # They were merged into the config first and reported as errors in ppo_default.yaml.
    for option, value in (("--timesteps", "0"), ("--n-envs", "0")):
        proc = subprocess.run([str(KPILOT), "train", option, value, "--out", str(tmp_path / "o")],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert f"Invalid value for '{option}'" in line and "ppo_default.yaml" not in line
    assert not (tmp_path / "o").exists()

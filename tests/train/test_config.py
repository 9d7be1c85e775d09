"""The YAML training config: the shipped default loads, and mistakes name the offending key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kpilot.errors import ConfigError
from kpilot.train.config import DEFAULT_CONFIG, load_config

KPILOT = Path(sys.executable).with_name("kpilot")


def test_shipped_default_config_loads(monkeypatch):
    monkeypatch.setenv("KPILOT_TRACES", "/some/traces")
    cfg = load_config()
    assert DEFAULT_CONFIG.is_file()
    assert cfg.split.test == (0.8, 1.0) and cfg.split.train[1] <= cfg.split.validation[0]
    specs = cfg.trace_specs()
    assert any(s.startswith("/some/traces/azure-functions-2019/") for s in specs)
    assert any(s.startswith("synthetic:") for s in specs)
    assert cfg.ppo.net_arch == (64, 64)


def test_step_limit_reaches_the_exported_action(tmp_path):
    from kpilot.policy import policy_from_bytes, policy_to_bytes
    from kpilot.observation import N_FEATURES
    import numpy as np

    assert load_config().action_spec.max_step_ratio is None            # 0 in YAML: no limit
    cfg = load_config(overrides={"env.max_step_ratio": 1.0})
    data = policy_to_bytes(layers=[(np.zeros((1, N_FEATURES)), np.zeros(1))], obs_mean=np.zeros(N_FEATURES),
                           obs_var=np.ones(N_FEATURES), action_spec=cfg.action_spec)
    spec = policy_from_bytes(data).action_spec
    assert spec.max_step_ratio == 1.0
    assert spec.decide([1.0, -1.0], [10.0, 10.0]) == pytest.approx([20.0, 5.0])


def test_smoothing_reaches_the_exported_action():
    from kpilot.policy import policy_from_bytes, policy_to_bytes
    from kpilot.observation import N_FEATURES
    import numpy as np

    assert load_config().action_spec.smoothing == 0.5                  # the shipped config's
    assert load_config(overrides={"env.smoothing": 1.0}).action_spec.smoothing is None
    cfg = load_config(overrides={"env.smoothing": 0.5, "env.max_step_ratio": 1.0, "env.immediate_cuts": False})
    data = policy_to_bytes(layers=[(np.zeros((1, N_FEATURES)), np.zeros(1))], obs_mean=np.zeros(N_FEATURES),
                           obs_var=np.ones(N_FEATURES), action_spec=cfg.action_spec)
    spec = policy_from_bytes(data).action_spec
    assert spec.smoothing == 0.5 and spec.max_step_ratio == 1.0
    # Half way on the log scale, then the step limit: 10 -> 200 asks for sqrt(2000) = 44.7, capped at 20.
    assert spec.follow([40.0, 2.5, 200.0], [10.0, 10.0, 10.0]) == pytest.approx([20.0, 5.0, 20.0])
    assert spec.follow([16.0], [4.0]) == pytest.approx([8.0])
    # A first decision (taking over a target the policy did not set) is not smoothed; limits hold.
    assert spec.follow([16.0, 40.0], [4.0, 10.0], first=True) == pytest.approx([8.0, 20.0])
    assert spec.follow([16.0, 16.0], [8.0, 8.0], first=[True, False]) == pytest.approx([16.0, np.sqrt(128.0)])
    assert not spec.immediate_cuts


def test_immediate_cuts_reach_the_exported_action():
    from kpilot.policy import policy_from_bytes, policy_to_bytes
    from kpilot.observation import N_FEATURES
    import numpy as np

    cfg = load_config(overrides={"env.smoothing": 0.5, "env.immediate_cuts": True})
    data = policy_to_bytes(layers=[(np.zeros((1, N_FEATURES)), np.zeros(1))], obs_mean=np.zeros(N_FEATURES),
                           obs_var=np.ones(N_FEATURES), action_spec=cfg.action_spec)
    spec = policy_from_bytes(data).action_spec
    assert spec.immediate_cuts and spec.smoothing == 0.5
    # A lower target (more pods) runs at once; a higher one is still reached half way (log scale).
    assert spec.follow([2.5, 40.0, 10.0], [10.0, 10.0, 10.0]) == pytest.approx([2.5, 20.0, 10.0])


def test_lateness_shaping_discounts_at_the_learners_gamma():
    # Potential-based shaping leaves the best policy unchanged only at the learner's own discount.
    from kpilot.train.trainer import env_config

    shaped = load_config(overrides={"env.lateness_shaping": True, "ppo.gamma": 0.97})
    assert env_config(shaped, []).shaping_gamma == 0.97
    assert env_config(load_config(overrides={"env.lateness_shaping": False}), []).shaping_gamma == 0.0


def _write(tmp_path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, key", [
    ("ppo:\n  learning_rat: 0.001\n", "ppo.learning_rat"),
    ("ppo:\n  learning_rate: fast\n", "ppo.learning_rate"),
    ("n_envs: 2.5\n", "n_envs"),
    ("total_timestep: 10\n", "unknown key total_timestep "),
    ("split:\n  test: [0.9, 0.8]\n", "split.test"),
    ("split:\n  train: [0.0, 0.95]\n", "split.validation must start where split.train ends"),
    ("split:\n  test: [0.75, 1.0]\n", "split.test must start where split.validation ends"),
    ("eval:\n  rule_calibration_s: -1\n", "eval.rule_calibration_s"),
    ("eval:\n  warmup_s: -600\n", "eval.warmup_s"),
    ("checkpoint:\n  every_timesteps: 0\n", "checkpoint.every_timesteps"),
    ("env:\n  service_scale: 3\n", "env.service_scale"),
    ("env:\n  reward_units: dollars\n", "env.reward_units"),
    ("eval:\n  select_after: 1.0\n", "eval.select_after"),
    ("env:\n  max_step_ratio: -1\n", "env.max_step_ratio"),
    ("env:\n  smoothing: 0\n", "env.smoothing"),
    ("env:\n  smoothing: 1.5\n", "env.smoothing"),
    ("env:\n  change_penalty: -0.1\n", "env.change_penalty"),
    ("env:\n  lateness_shaping: 1\n", "env.lateness_shaping"),
    ("env:\n  idle_start: 1.5\n", "env.idle_start"),
    ("env:\n  base_band: 0.5\n", "env.base_band"),
    ("env:\n  base_window_s: 0\n", "env.base_window_s"),
    ("eval:\n  band: 0.9\n", "eval.band"),
    ("sim:\n  kpa:\n    stable_window: 30\n", "kpa.stable_window"),
    ("normalize:\n  norm_obs: yes please\n", "normalize.norm_obs"),
    # Each of these once passed the config and failed later, some after training (session 16).
    ("seed: -1\n", "seed must be in [0, 2**32)"),
    ("ppo:\n  n_epochs: 0\n", "ppo.n_epochs must be at least 1"),
    ("ppo:\n  clip_range: -0.2\n", "ppo.clip_range must be positive"),
    ("ppo:\n  gae_lambda: 1.5\n", "ppo.gae_lambda must be in [0, 1]"),
    ("ppo:\n  learning_rate: 1e-3\n", "YAML reads a number without a dot, such as 1e-3, as text"),
    ("env:\n  max_target: .inf\n", "env.max_target must be a finite number, got inf"),
    ("reward:\n  cost_per_violation: .nan\n", "reward.cost_per_violation must be a finite number"),
    ("reward:\n  cost_per_pod_second: -1\n", "reward.cost_per_pod_second must be >= 0"),
    # Costs overflowed to inf: the rule's calibration found no best and crashed with a traceback.
    ("reward:\n  cost_per_violation: 1.0e+308\n", "reward.cost_per_violation must be >= 0 and at most 1e+06"),
    ("normalize:\n  clip_obs: 0\n", "normalize.clip_obs must be positive"),
    ("eval:\n  rule_grid: {bogus: [1]}\n", "eval.rule_grid.bogus is not a rule parameter"),
    ("eval:\n  rule_grid: {hi_s: 1.0}\n", "eval.rule_grid.hi_s must be a list of positive numbers"),
    ("eval:\n  seed: -1\n", "eval.seed must be in [0, 2**32)"),
    ("name: ../../x\n", "name must be letters, digits"),
])
def test_config_errors_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, "env:\n  synthetic: [synthetic:poisson]\n" + text
                           if not text.startswith("env:") else text + "  synthetic: [synthetic:poisson]\n"))
    assert key in str(err.value)


def test_observing_a_base_needs_a_window_before_validation(tmp_path):
    text = "env:\n  synthetic: [synthetic:poisson]\n  observe_base: true\nsplit:\n  validation: [0.0, 0.2]\n"
    with pytest.raises(ConfigError, match="split.validation must start after"):
        load_config(_write(tmp_path, text))
    assert load_config(_write(tmp_path, text.replace("[0.0, 0.2]", "[0.7, 0.8]"))).env.observe_base


def test_an_empty_section_takes_command_line_overrides(tmp_path):
    # `env:` left empty is None in YAML: `kpilot train --trace ...` used to crash writing into it.
    cfg = load_config(_write(tmp_path, "env:\nsplit:\n"), overrides={"env.synthetic": ["synthetic:poisson"]})
    assert cfg.env.synthetic == ("synthetic:poisson",) and cfg.split.test == (0.8, 1.0)
    with pytest.raises(ConfigError, match="env must be a mapping"):
        load_config(_write(tmp_path, "env: 3\n"), overrides={"env.synthetic": ["synthetic:poisson"]})


def test_invalid_yaml_reports_the_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, "seed: 1\nname: x\nppo:\n  gamma: 0.9\n  lam: : bad\n"))
    assert ", line 5: invalid YAML" in str(err.value)
    with pytest.raises(ConfigError) as err:       # unclosed: YAML finds out at the end of the file
        load_config(_write(tmp_path, "seed: 1\nppo: [unclosed\n"))
    assert ", line 3: invalid YAML" in str(err.value)


def test_a_config_nested_too_deeply_or_from_a_pipe_is_one_error_line(tmp_path):
    # PyYAML recursed into a RecursionError traceback; a FIFO without a writer hung the command.
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, "ppo: " + "[" * 5000 + "]" * 5000 + "\n"))
    assert str(err.value).endswith(": invalid YAML (nested too deeply)")
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as err:
        load_config(str(fifo))
    assert str(err.value) == f"{fifo}: not a regular file (a pipe or device): save the config to a file"


def test_a_key_given_twice_is_an_error_naming_its_line(tmp_path):
    # PyYAML keeps the last value: the first `total_timesteps` was silently not the one trained.
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, "total_timesteps: 1000\nppo:\n  gamma: 0.9\ntotal_timesteps: 3000\n"))
    assert str(err.value).endswith(", line 4: invalid YAML (duplicate key 'total_timesteps')")
    with pytest.raises(ConfigError, match="line 3: invalid YAML .duplicate key 'gamma'"):
        load_config(_write(tmp_path, "ppo:\n  gamma: 0.9\n  gamma: 0.5\n"))
    # The same key in two sections is two keys.
    cfg = load_config(_write(tmp_path, "env:\n  synthetic: [synthetic:poisson]\neval:\n  seed: 4\nseed: 2\n"))
    assert (cfg.seed, cfg.eval.seed) == (2, 4)
    # A merge key's values are defaults the mapping's own keys override, not duplicates of them.
    cfg = load_config(_write(tmp_path, "env: {synthetic: [synthetic:poisson]}\n"
                                       "ppo: {gamma: 0.9, <<: {n_epochs: 5, gamma: 0.5}}\n"))
    assert (cfg.ppo.gamma, cfg.ppo.n_epochs) == (0.9, 5)


def test_a_bad_cold_start_model_is_refused_with_the_config_not_when_simulating(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, "env:\n  synthetic: [synthetic:poisson]\nsim:\n  pod:\n    cold_start: bogus\n"))
    assert "c.yaml: sim.pod.cold_start: bad cold-start model 'bogus'" in str(err.value)
    assert "--cold-start" not in str(err.value)          # train has no such option
    with pytest.raises(ConfigError, match="sim.pod.cold_start: bad cold-start model 'lognormal:1'"):
        load_config(_write(tmp_path, "env:\n  synthetic: [synthetic:poisson]\nsim:\n  pod:\n    cold_start: lognormal:1\n"))
    assert load_config(_write(tmp_path, "env:\n  synthetic: [synthetic:poisson]\nsim:\n  pod:\n    cold_start: fixed:2\n")).sim["pod"]["cold_start"] == "fixed:2"


def test_cli_config_error_is_one_line_exit_2(tmp_path):
    cfg = _write(tmp_path, "ppo:\n  gamma: 2\n")
    proc = subprocess.run([str(KPILOT), "train", "--config", str(cfg), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "ppo.gamma" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_config_that_is_not_text_is_one_error(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not a text file"):
        load_config(path)


def test_every_rule_setting_but_those_calibration_sets_may_be_searched(tmp_path):
    cfg = load_config(_write(tmp_path, "env:\n  synthetic: [synthetic:poisson]\neval:\n  rule_grid: {lo_frac: [0.3, 0.5], start: [1.0, 4.0]}\n"))
    assert cfg.eval.rule_grid == {"lo_frac": [0.3, 0.5], "start": [1.0, 4.0]}
    with pytest.raises(ConfigError, match="eval.rule_grid.interval_s is not a rule parameter"):
        load_config(_write(tmp_path, "env:\n  synthetic: [synthetic:poisson]\neval:\n  rule_grid: {interval_s: [10]}\n"))


@pytest.mark.parametrize("text", ["1e-3", "1e9", "2.5e3", "1E5"])
def test_the_hint_for_a_number_yaml_reads_as_text_writes_one_it_reads_as_a_number(text):
    """YAML 1.1 floats need a dot and a signed exponent: the advice once said 1.0e9, also text."""
    import yaml

    from kpilot.yaml_file import number_as_text_hint

    assert isinstance(yaml.safe_load(f"x: {text}")["x"], str)
    written = number_as_text_hint(text).rsplit("write ", 1)[1].rstrip(")")
    assert yaml.safe_load(f"x: {written}")["x"] == pytest.approx(float(text))
    assert number_as_text_hint("many") == "" and number_as_text_hint(3) == ""


def test_a_key_left_out_of_a_config_takes_the_shipped_configs_value():
    # The code's defaults differed from ppo_default.yaml on 15 keys (gamma 0.95 for 0.98, no
    # smoothing, pods rewards, 200 k steps ...): a config giving a few keys trained something else.
    from dataclasses import asdict

    from kpilot.train.config import config_from_dict, load_config

    shipped = asdict(load_config())
    mine = asdict(config_from_dict({"env": {"synthetic": ["synthetic:poisson:rate=2,duration=900,seed=1"]}}))
    for section in (shipped, mine):
        section["env"].pop("traces"), section["env"].pop("synthetic")   # the lists are the user's own
    assert mine == shipped

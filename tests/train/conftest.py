"""A tiny PPO run shared by the training tests (a few hundred steps on a synthetic workload)."""

from __future__ import annotations

import pytest

TINY = {
    "name": "tiny",
    "seed": 3,
    "n_envs": 4,
    "total_timesteps": 256,
    "env": {"synthetic": ["synthetic:bursty:rate=4,duration=1500,seed=1"], "episode_s": 300},
    "ppo": {"n_steps": 32, "batch_size": 64, "n_epochs": 2, "net_arch": [16, 16]},
    "eval": {"every_timesteps": 128, "rule_grid": {"hi_s": [1.0], "down": [0.5], "up": [1.5]}},
    "checkpoint": {"every_timesteps": 128},
}


def _tiny_config(**overrides):
    from kpilot.train.config import config_from_dict

    return config_from_dict({**TINY, **overrides}, "tiny")


@pytest.fixture(scope="session")
def tiny_config():
    """A factory: the tiny training config with top-level overrides."""
    return _tiny_config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(config, artifact dir, run dir, summary) of one tiny training run."""
    from kpilot.train.trainer import train

    base = tmp_path_factory.mktemp("tiny")
    cfg = _tiny_config()
    out, run = base / "policy", base / "run"
    summary = train(cfg, out, run_dir=run, progress=False, command="kpilot train (test)", log=lambda m: None)
    return cfg, out, run, summary

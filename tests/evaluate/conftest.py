"""A tiny trained policy artifact for the evaluation tests (a few hundred PPO steps)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory) -> Path:
    from kpilot.train.config import config_from_dict
    from kpilot.train.trainer import train

    cfg = config_from_dict({
        "name": "tiny", "n_envs": 4, "total_timesteps": 128,
        "env": {"synthetic": ["synthetic:bursty:rate=4,duration=1500,seed=1"], "episode_s": 300},
        "ppo": {"n_steps": 32, "batch_size": 64, "n_epochs": 1, "net_arch": [8]},
        "eval": {"every_timesteps": 0, "rule_grid": {"hi_s": [1.0], "down": [0.5], "up": [1.5]}},
        "checkpoint": {"every_timesteps": 1000},
    }, "tiny")
    out = tmp_path_factory.mktemp("policy") / "tiny"
    train(cfg, out, progress=False, command="test", log=lambda m: None)
    return out

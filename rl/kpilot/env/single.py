"""`KnativeAutoscalingEnv`: the single-episode Gymnasium environment (a batch of one).

See kpilot.env.core for the action, observation, reward and episode definitions.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np

from kpilot.env.core import ACTION_SPACE, BatchedAutoscalingEnv, EnvConfig


class KnativeAutoscalingEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, config: EnvConfig | None = None, traces=None, render_mode: str | None = None):
        self.config = config or EnvConfig()
        self.render_mode = render_mode       # nothing to render; accepted as Gymnasium passes it
        # Unseeded, episodes come from OS entropy: two envs must not replay the same windows.
        self.core = BatchedAutoscalingEnv(1, self.config, seed=None, traces=traces)
        self.observation_space = self.core.observation_space
        self.action_space = copy.deepcopy(ACTION_SPACE)     # its own: seeding one env's must not seed another's

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.core.seed(seed)
        self.core.reset_one(0)
        return self.core.observe()[0], dict(self.core.last_info[0])

    def step(self, action):
        obs, rewards, truncated, infos = self.core.step(np.asarray(action, dtype=np.float64).reshape(1))
        return obs[0], float(rewards[0]), False, bool(truncated[0]), infos[0]

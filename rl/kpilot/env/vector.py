"""Batched vector environments over one engine call per step.

* `KnativeAutoscalingVecEnv`: a stable-baselines3 VecEnv (SB3 trains on it directly, no wrappers,
  no subprocesses): auto-resets finished episodes and reports `terminal_observation` and
  `TimeLimit.truncated` as SB3 expects.
* `KnativeAutoscalingVectorEnv`: the same as a Gymnasium VectorEnv with same-step autoreset (an
  episode's last step returns the next episode's first observation, its own last one in
  `info["final_obs"]`, as SB3's adapter does; one engine call per step cannot leave a slot out), which
  `gymnasium.make_vec("kpilot/KnativeAutoscaling-v0", num_envs=n, vectorization_mode="vector_entry_point")`
  returns.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from kpilot.env.core import ACTION_SPACE, BatchedAutoscalingEnv, EnvConfig


class KnativeAutoscalingVecEnv(VecEnv):
    def __init__(self, num_envs: int = 64, config: EnvConfig | None = None, *, seed: int = 0,
                 traces=None):
        self.core = BatchedAutoscalingEnv(num_envs, config, seed=seed, traces=traces)
        super().__init__(num_envs, self.core.observation_space, copy.deepcopy(ACTION_SPACE))
        self._actions = np.zeros(num_envs)

    def reset(self):
        if self._seeds[0] is not None:
            self.core.seed(int(self._seeds[0]))
        self._reset_seeds()
        return self.core.reset_all()

    def step_async(self, actions):
        self._actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs)

    def step_wait(self):
        obs, rewards, truncated, infos = self.core.step(self._actions)
        dones = truncated.copy()
        ended = np.flatnonzero(truncated)
        for e in ended:
            infos[e]["terminal_observation"] = obs[e].copy()
            infos[e]["TimeLimit.truncated"] = True
            infos[e]["episode"] = {"r": float(self.core.episode_return[e]),
                                   "l": int(self.core.episode_steps[e])}
        if len(ended):
            # Batch.reset clears the ended slots' statistics; the new episodes' warm-up fills them.
            self.core.reset_many(ended)
            obs = self.core.observe()
        return obs, rewards, dones, infos

    def close(self):
        pass

    def get_attr(self, attr_name, indices=None):
        return [getattr(self, attr_name, None) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name, value, indices=None):
        setattr(self, attr_name, value)

    def env_method(self, method_name, *args, indices=None, **kwargs):
        return [getattr(self, method_name)(*args, **kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False for _ in self._get_indices(indices)]


class KnativeAutoscalingVectorEnv(gym.vector.VectorEnv):
    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 64, config: EnvConfig | None = None, traces=None):
        self.num_envs = num_envs
        # Unseeded, episodes come from OS entropy: two vector envs must not replay the same windows.
        self.core = BatchedAutoscalingEnv(num_envs, config, seed=None, traces=traces)
        self.single_observation_space = self.core.observation_space
        self.single_action_space = copy.deepcopy(ACTION_SPACE)   # its own, as each env's is
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)

    def reset(self, *, seed=None, options=None):
        if seed is not None:     # one generator draws every slot's episodes: a list seeds it whole
            seeds = [int(s) for s in ([seed] if np.isscalar(seed) else seed) if s is not None]
            self.core.seed(seeds[0] if len(seeds) == 1 and np.isscalar(seed) else (seeds or None))
        obs = self.core.reset_all()
        info: dict = {}      # each episode's reset info, as the single env gives and SyncVectorEnv batches it
        for e in range(self.num_envs):
            info = self._add_info(info, self.core.last_info[e], e)
        return obs, info

    def step(self, actions):
        obs, rewards, truncated, infos = self.core.step(np.asarray(actions).reshape(self.num_envs))
        info: dict = {}
        if truncated.any():
            self.core.reset_many(np.flatnonzero(truncated))
            final_obs, obs = obs, self.core.observe()
        for e, env_info in enumerate(infos):
            if truncated[e]:     # as Gymnasium's SyncVectorEnv: the new episode's info, the last one's in final_info
                info = self._add_info(info, {"final_obs": final_obs[e].copy(), "final_info": env_info}, e)
                env_info = self.core.last_info[e]
            info = self._add_info(info, env_info, e)
        return obs, rewards, np.zeros(self.num_envs, dtype=bool), truncated, info

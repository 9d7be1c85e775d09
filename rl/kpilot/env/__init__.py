"""Gymnasium environments on the simulator: set a Knative revision's concurrency target.

    KnativeAutoscalingEnv        single episode (gymnasium.Env)
    KnativeAutoscalingVecEnv     n episodes in one engine call (stable-baselines3 VecEnv)
    KnativeAutoscalingVectorEnv  the same as a gymnasium VectorEnv
Registered as "kpilot/KnativeAutoscaling-v0".
"""

import gymnasium as gym

from kpilot.env.core import BatchedAutoscalingEnv, EnvConfig
from kpilot.env.reward import RewardConfig, score
from kpilot.env.single import KnativeAutoscalingEnv

ENV_ID = "kpilot/KnativeAutoscaling-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="kpilot.env.single:KnativeAutoscalingEnv",
                 vector_entry_point="kpilot.env.vector:KnativeAutoscalingVectorEnv")

__all__ = ["BatchedAutoscalingEnv", "ENV_ID", "EnvConfig", "KnativeAutoscalingEnv", "RewardConfig",
           "score"]

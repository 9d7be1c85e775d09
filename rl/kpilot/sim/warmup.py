"""Compile the engine once (numba caches it beside the source, or in NUMBA_CACHE_DIR), so parallel
test workers and the first command a user runs don't each pay for compilation.
`python -m kpilot.sim.warmup`. Without the `train` extra (stable-baselines3), as in the operator
image, it compiles what replays use (`kpilot tune`, `kpilot retune`, `kpilot evaluate`) and
leaves out the training environment."""

from __future__ import annotations

import numpy as np


def warm_up() -> None:
    from kpilot.env.core import EnvConfig
    from kpilot.sim.replay import StaticTarget, replay
    from kpilot.traces.model import make_trace

    trace = make_trace(np.linspace(0.0, 120.0, 200), np.full(200, 0.2))
    replay(trace, StaticTarget(5.0))
    try:
        from kpilot.env.vector import KnativeAutoscalingVecEnv     # needs stable-baselines3
    except ImportError:
        return
    env = KnativeAutoscalingVecEnv(2, EnvConfig(episode_s=120.0), traces=[trace])
    env.reset()
    env.step(np.zeros((2, 1)))


if __name__ == "__main__":
    warm_up()

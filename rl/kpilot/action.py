"""The action contract: how a policy's output in [-1, 1] becomes a concurrency target.

The policy picks the target on a log scale between `min_target` and `max_target`:
    target = exp(log(min) + (a + 1) / 2 * (log(max) - log(min)))
A log scale gives equal resolution to "2 vs 4" and "100 vs 200", which is how targets matter.
The bounds travel in the policy artifact; the operator's guardrails apply on top.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ActionSpec:
    min_target: float = 1.0
    max_target: float = 200.0

    def to_target(self, action) -> np.ndarray:
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        lo, hi = np.log(self.min_target), np.log(self.max_target)
        return np.exp(lo + (a + 1.0) * 0.5 * (hi - lo))

    def to_action(self, target) -> np.ndarray:
        t = np.clip(np.asarray(target, dtype=np.float64), self.min_target, self.max_target)
        lo, hi = np.log(self.min_target), np.log(self.max_target)
        return 2.0 * (np.log(t) - lo) / (hi - lo) - 1.0

    def to_dict(self) -> dict:
        return {"kind": "log-target", **asdict(self)}

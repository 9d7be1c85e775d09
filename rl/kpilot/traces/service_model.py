"""Service time of an LLM request from its token counts.

    service_s = overhead_s + prefill_s_per_token * input_tokens + decode_s_per_token * output_tokens

Defaults describe a mid-size (7-13 B parameter, fp16) model on one data-centre GPU (A100/H100 class)
at small batch: prefill runs compute-bound at roughly 5-10 k tokens/s (0.1-0.2 ms per prompt token),
decode is memory-bandwidth-bound at roughly 30-50 tokens/s per sequence (20-30 ms per generated
token), and a request carries about 10 ms of fixed cost (tokenisation, scheduling, network). These are
assumptions from public vLLM/TGI benchmark figures, not measurements of any traced system; scale
them to your deployment (or use `Trace.scaled`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LlmServiceModel:
    """Linear token-count model of one request's service time (seconds on one replica)."""

    overhead_s: float = 0.010
    prefill_s_per_token: float = 0.00015
    decode_s_per_token: float = 0.025

    def __post_init__(self):
        if min(self.overhead_s, self.prefill_s_per_token, self.decode_s_per_token) < 0:
            raise ValueError("service model coefficients must be non-negative")

    def service_time(self, input_tokens, output_tokens) -> np.ndarray:
        """float32 seconds for each request (token counts are clipped at 0)."""
        inp = np.maximum(np.asarray(input_tokens, dtype=np.float64), 0.0)
        out = np.maximum(np.asarray(output_tokens, dtype=np.float64), 0.0)
        with np.errstate(over="ignore"):    # beyond float32: inf, which check_limits refuses
            return (self.overhead_s + self.prefill_s_per_token * inp
                    + self.decode_s_per_token * out).astype(np.float32)

    def as_dict(self) -> dict:
        return {"overhead_s": self.overhead_s, "prefill_s_per_token": self.prefill_s_per_token,
                "decode_s_per_token": self.decode_s_per_token}

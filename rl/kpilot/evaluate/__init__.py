"""Evaluation: request-level replays of a policy against KPA defaults, static targets and a rule.

    kpilot.evaluate.baselines  static grid, the AIMD rule and its calibration
    kpilot.evaluate.runner     load a policy artifact, replay controllers, one row per policy
    kpilot.evaluate.session    run_evaluation(...), run_demo(...) for `kpilot demo`
    kpilot.evaluate.report     terminal table, PNG plots, Markdown summary
    kpilot.evaluate.tune       `kpilot tune`: a base target and band per Service
    kpilot.evaluate.rolling    `static-rolling`: the static target re-tuned on a schedule
The `evaluate` and `tune` commands are in kpilot.train.cli (this package's import is heavy).
"""

from kpilot.evaluate.session import demo_table, run_demo, run_evaluation

__all__ = ["demo_table", "run_demo", "run_evaluation"]

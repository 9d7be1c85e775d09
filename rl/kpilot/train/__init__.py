"""Training: PPO on the batched environment, a YAML config, and the framework-free export.

    kpilot.train.config   the YAML config (load_config)
    kpilot.train.split    train / validation / test windows by time
    kpilot.train.trainer  train(config, out, ...)
    kpilot.train.export   SB3 model -> policy.json
    kpilot.train.cli      the `train`, `evaluate` and `tune` commands (here, not in kpilot.evaluate,
                          whose package import loads the simulator: `kpilot --help` stays quick)
"""

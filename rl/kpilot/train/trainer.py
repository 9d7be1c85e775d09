"""`kpilot train`: PPO on the batched Knative environment, read top to bottom.

1. Load the YAML config; load every trace and cut it by time into train / validation windows.
2. Calibrate the rule-based baseline on the training windows (so it sees what PPO sees).
3. Build the vector env on the training windows, wrapped in VecNormalize.
4. PPO learns, with a progress bar, TensorBoard logs, env steps/s, periodic checkpoints, and
   validation replays (request level, held-out windows) that keep the best model.
5. The best model is written as an artifact directory:
       model.zip, vecnormalize.pkl  SB3 model and normalisation statistics (to resume / inspect)
       policy.json                  the framework-free export the operator loads (numpy only)
       manifest.json                the export's manifest, readable on its own
       config.yaml                  the resolved training config
   TensorBoard logs and checkpoints go to the run directory (default OUT/runs).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import yaml

from kpilot.env.core import TRAINING_CAPACITY, EnvConfig
from kpilot.errors import ConfigError
from kpilot.evaluate.baselines import AimdRule, calibrate_rule, geomean, mean_cost, static_controllers
from kpilot.policy import CONFIG_FILE, MANIFEST_FILE, MODEL_FILE, POLICY_FILE, VECNORM_FILE, size_note
from kpilot.sim.config import SimConfig
from kpilot.traces import load_trace
from kpilot.train.config import TrainConfig, check_threads, traces_dir
from kpilot.train.export import build_manifest, export_bytes, export_policy, trace_record
from kpilot.train.split import has_scored_requests, time_window, time_window_s, usable_windows


def training_sim(cfg: TrainConfig) -> SimConfig:
    sim = SimConfig.from_dict(cfg.sim)
    pod = sim.pod
    user_pod = (cfg.sim or {}).get("pod") or {}
    caps = {k: v for k, v in TRAINING_CAPACITY.items() if k not in user_pod}
    sim = replace(sim, pod=replace(pod, **caps))
    if over := sim.scale_over_capacity():      # its smaller capacity: checked again
        raise ConfigError(f"sim.kpa.{over[0]} {over[1]} is above the training simulator's "
                          f"capacity of {sim.pod.max_pods} pods (set sim.pod.max_pods)", option="--config")
    return sim


def env_config(cfg: TrainConfig, traces) -> EnvConfig:
    e = cfg.env
    return EnvConfig(traces=tuple(traces), decision_interval_s=e.decision_interval_s, episode_s=e.episode_s,
                     service_scale=e.service_scale, cold_start_scale=e.cold_start_scale,
                     rate_scale=e.rate_scale, reward_units=e.reward_units,
                     random_time_of_day=e.random_time_of_day, idle_start=e.idle_start,
                     sim=training_sim(cfg), reward=cfg.reward,
                     action=cfg.action_spec, change_penalty=e.change_penalty,
                     shaping_gamma=cfg.ppo.gamma if e.lateness_shaping else 0.0,
                     observe_base=e.observe_base, base_window_s=e.base_window_s, base_band=e.base_band,
                     observation_lag_s=e.observation_lag_s)


class Validator:
    """Request-level replays of the validation windows; the score is the geometric mean over
    windows of the policy's cost relative to the best static target in hindsight (lower is better).
    Each window is replayed under `eval.replays` simulator seeds (cold-start draws, load balancing)
    and costs are averaged over them: the windows are short, and one seed's luck would otherwise
    choose the model."""

    def __init__(self, windows, sim: SimConfig, cfg: TrainConfig, bases=None):
        self.windows, self.sim, self.cfg = windows, sim, cfg
        self.bases = bases or [None] * len(windows)    # per window, for a policy that observes one
        self.seeds = [cfg.eval.seed + k for k in range(cfg.eval.replays)]
        self.best_static = [min(self._cost(w, c) for c in static_controllers()) for w in windows]

    def _cost(self, window, controller) -> float:
        return mean_cost(window, controller, self.sim, self.cfg.reward, self.seeds)

    def __call__(self, policy) -> dict:
        from kpilot.controllers import PolicyController

        from kpilot.action import band_bounds

        band = self.cfg.eval.band
        costs = [self._cost(w, PolicyController(policy, interval_s=self.cfg.env.decision_interval_s, name="rl",
                                                base=b, bounds=band_bounds(b, band) if b and band else None))
                 for w, b in zip(self.windows, self.bases)]
        ratios = [c / max(b, 1e-12) for c, b in zip(costs, self.best_static)]
        return {"cost_vs_best_static": geomean(ratios), "per_window": ratios}


def validation_bases(traces, cfg: TrainConfig, sim: SimConfig) -> list[float]:
    """For each validation window usable_windows keeps, the static target tuned on the window before
    it (kpilot.evaluate.baselines.tuning_window; the whole training window where that is empty),
    as `kpilot tune` would give the Service's base target."""
    from kpilot.evaluate.baselines import tune_static, tuning_window

    lo, hi = cfg.split.validation
    before = tuning_window((lo, hi))       # lo > 0: the config requires it with env.observe_base
    seeds = [cfg.eval.seed + k for k in range(cfg.eval.replays)]
    out = []
    for trace in traces:
        if not has_scored_requests(time_window(trace, lo, hi, warmup_s=cfg.eval.warmup_s)):
            continue
        tuning = time_window(trace, *before, warmup_s=cfg.eval.warmup_s)
        if not has_scored_requests(tuning):
            tuning = time_window(trace, cfg.split.train[0], lo)
        out.append(tune_static(tuning, sim, cfg.reward, seeds=seeds)[0])
    return out


def _write_artifact(out: Path, model, vecnorm, cfg: TrainConfig, manifest: dict) -> None:
    """Write the artifact beside `out`, then swap it in: a run stopped mid-write (Ctrl-C while a
    new best model is saved) or a failed write (a full disk: one error line) leaves the previous
    artifact whole, never a model.zip of one checkpoint beside the policy.json of another."""
    staging = retired = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)             # mkdtemp's 0700 would hide the policy from others
        model.save(staging / MODEL_FILE)
        if vecnorm is not None:
            vecnorm.save(str(staging / VECNORM_FILE))
        (staging / POLICY_FILE).write_bytes(export_bytes(model, vecnorm, cfg.action_spec, manifest,
                                                           manifest["manifest"]["observation_version"]))
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        (staging / CONFIG_FILE).write_text(yaml.safe_dump(_plain(cfg.to_dict()), sort_keys=False))
        if not out.exists():
            os.replace(staging, out)
            return
        retired = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, retired)
        os.replace(staging, out)
        # Anything else kept in the folder moves over only once the new artifact is in place, and
        # the old folder goes only after that: a stop at any point deletes none of it.
        for extra in retired.iterdir():
            if not (out / extra.name).exists():
                os.replace(extra, out / extra.name)
        shutil.rmtree(retired, ignore_errors=True)
    except OSError as exc:
        if retired is not None and retired.exists() and not out.exists():
            os.replace(retired, out)        # the swap failed half way: the previous artifact back
        raise _write_error(exc, out, "--out") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)     # gone already unless a write failed


def _write_error(exc: OSError, folder: Path, option: str) -> ConfigError:
    """A write that failed mid-run (a full disk, a folder made read-only) as one error line."""
    what = f" {exc.filename}" if exc.filename else ""
    return ConfigError(f"cannot write{what} ({exc.strerror or type(exc).__name__})", path=str(folder), option=option)


def _plain(x):
    """Tuples -> lists, so YAML/JSON dumps stay plain."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _previous_artifact(out: Path):
    """When resuming into an existing artifact, the policy a resumed run must beat (None when
    there is none). Its own validation figure was measured on its run's validation windows, which
    another config or other traces change, so the run scores it again on its own (`train`). An
    artifact that cannot be read is an error, not None: the resumed run would replace a better policy."""
    from kpilot.errors import PolicyError
    from kpilot.policy import load_policy

    if not (out / POLICY_FILE).exists() and not (out / MANIFEST_FILE).exists():
        return None
    try:
        return load_policy(out)
    except PolicyError as exc:
        raise ConfigError(f"cannot read the policy artifact there ({exc.message}), which a resumed run must "
                          "beat; move it or give another --out", path=str(out), option="--out") from None


RULE_FILE = "rule_baseline.json"     # in the run dir: the calibration and what it depended on


def _rule_key(cfg: TrainConfig, sim: SimConfig, records: list[dict]) -> str:
    """Everything the rule's calibration depends on, hashed: the training windows' files and cut,
    the simulator, the reward, the grid, the seed, the decision interval and the target bounds."""
    import hashlib

    from kpilot import __version__
    from kpilot.evaluate.baselines import RULE_GRID
    from kpilot.traces.csvio import sha256_file

    cold_start = Path(sim.pod.cold_start)
    table = sha256_file(cold_start) if cold_start.is_file() else None   # a table: its contents
    inputs = {"traces": records, "seed": cfg.seed, "train": list(cfg.split.train),
              "seconds": cfg.eval.rule_calibration_s, "sim": cfg.sim, "cold_start_table": table,
              "reward": vars(cfg.reward), "grid": {**RULE_GRID, **(cfg.eval.rule_grid or {})},
              "eval_seed": cfg.eval.seed, "interval": cfg.env.decision_interval_s,
              "bounds": [cfg.env.min_target, cfg.env.max_target], "kpilot": __version__}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def _recorded_rule(run_dir: Path, key: str) -> dict | None:
    """The rule summary the run recorded for these inputs, or None (none, another key, unreadable)."""
    try:
        doc = json.loads((run_dir / RULE_FILE).read_text())
        return doc["rule"] if doc["key"] == key and isinstance(doc["rule"]["params"], dict) else None
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


DEFAULT_RUN_DIR_OPTION = "--run-dir (not given: the default, --out's runs/)"


def check_run_dir(run_dir: Path, resuming: bool, defaulted: bool = False) -> None:
    """`--run-dir` must be a folder; a fresh run refuses one that holds an earlier run's
    checkpoints: its own would overwrite some of them and sort among the rest, and `--resume`
    would then continue whichever run got furthest."""
    # Not given, it is --out's runs/: a second training run into the same --out meets the first's.
    option = DEFAULT_RUN_DIR_OPTION if defaulted else "--run-dir"
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError("is a file, not a folder", path=str(run_dir), option=option)
    # Writable, or creatable, now: it is first written after the traces load and the rule is calibrated.
    for folder in (run_dir, run_dir / "checkpoints"):
        existing = folder.resolve()
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(f"cannot create it ({existing} is a file)", path=str(run_dir), option=option)
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"is not writable ({existing})", path=str(run_dir), option=option)
    earlier = sorted((run_dir / "checkpoints").glob("*_steps.zip")) if (run_dir / "checkpoints").is_dir() else []
    if earlier and not resuming:
        raise ConfigError(f"holds an earlier run's checkpoints ({earlier[-1].name}, ...): --resume {run_dir} "
                          "continues it; for a fresh run give another --run-dir or remove it",
                          path=str(run_dir), option=option)


def checkpoint_timesteps(ckpt: Path) -> int | None:
    """The timesteps an SB3 zip was saved at (its `data` entry), None when it cannot be read here
    (loading it reports why)."""
    import zipfile

    try:
        with zipfile.ZipFile(ckpt) as z:
            return int(json.loads(z.read("data"))["num_timesteps"])
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, TypeError):
        return None


def check_out(out: Path) -> None:
    """`--out` is a folder kpilot may replace (it swaps in each new artifact whole): refused
    before any work when it is a file, a symbolic link, the working folder or one above it, or
    cannot be created."""
    out = Path(out)
    if out.is_symlink():
        raise ConfigError("is a symbolic link: give the folder it points to", path=str(out), option="--out")
    if out.exists() and not out.is_dir():
        raise ConfigError("is a file, not a folder", path=str(out), option="--out")
    here, folder = Path.cwd().resolve(), out.resolve()
    if folder == here or folder in here.parents:
        raise ConfigError("is the working folder or one above it, which each artifact would replace",
                          path=str(out), option="--out")
    # Checked, not created: a run refused later (a bad trace, a bad resume) leaves nothing behind.
    existing = folder.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"cannot create its folder ({existing} is a file)", path=str(out), option="--out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"its folder is not writable ({existing})", path=str(out), option="--out")


CHECKPOINT = re.compile(r"(?P<prefix>.+)_(?P<steps>\d+)_steps")


def run_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(timesteps, zip) of the checkpoints in a run dir, fewest timesteps first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted((int(m["steps"]), p) for p in folder.glob("*_steps.zip") if (m := CHECKPOINT.fullmatch(p.stem)))


def find_checkpoint(path: Path) -> tuple[Path, Path | None]:
    """What `--resume` names: a checkpoint zip (its VecNormalize file beside it), a run
    directory (its newest checkpoint), or a policy artifact (its model.zip and vecnormalize.pkl)."""
    path = Path(path)
    if path.is_dir() and (path / MODEL_FILE).is_file():
        path = path / MODEL_FILE
    elif path.is_dir():
        found = run_checkpoints(path)
        if not found:
            raise ConfigError(f"no checkpoints to resume from (expected checkpoints/ppo_N_steps.zip or "
                              f"{MODEL_FILE})", path=str(path), option="--resume")
        path = max(found)[1]
    if not path.is_file():
        raise ConfigError("no such checkpoint", path=str(path), option="--resume")
    if path.name == MODEL_FILE:
        vn = path.with_name(VECNORM_FILE)
    elif m := CHECKPOINT.fullmatch(path.stem):
        vn = path.with_name(f"{m['prefix']}_vecnormalize_{m['steps']}_steps.pkl")
    else:
        raise ConfigError(f"not a checkpoint (expected ppo_N_steps.zip or {MODEL_FILE})", path=str(path),
                          option="--resume")
    return path, (vn if vn.is_file() else None)


def ppo_settings(p, n_envs: int) -> dict:
    """The config's PPO hyperparameters as PPO takes them (not the network: `policy_kwargs`). A
    mini-batch is at most one update's steps (n_steps x n_envs): SB3 trains on those alone anyway,
    with a warning of its own (`train` notes it once, in kpilot's words)."""
    # Not below 0: PPO runs whole rollouts, so the last one may end past total_timesteps, where SB3
    # passes a negative progress (and a negative rate would step the weights the wrong way).
    linear = lambda progress_remaining: p.learning_rate * max(progress_remaining, 0.0)     # noqa: E731
    lr = linear if p.lr_schedule == "linear" else p.learning_rate
    return dict(learning_rate=lr, n_steps=p.n_steps, batch_size=min(p.batch_size, p.n_steps * n_envs),
                n_epochs=p.n_epochs, gamma=p.gamma, gae_lambda=p.gae_lambda, clip_range=p.clip_range, ent_coef=p.ent_coef,
                vf_coef=p.vf_coef, max_grad_norm=p.max_grad_norm)


UNREADABLE_CHECKPOINT = "the checkpoint is unreadable or corrupt"


def steps_to_run(remaining: int, rollout: int) -> int:
    """The env steps `PPO.learn(total_timesteps=remaining)` runs: whole rollouts of `rollout` steps,
    the last one the first to reach the total."""
    return -(-remaining // rollout) * rollout


def _first_line(exc: Exception) -> str:
    """An exception's message on one line (its first), or its type where it has none."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def check_checkpoint_readable(ckpt: Path, vn_path: Path | None) -> None:
    """Read the checkpoint and its normalisation file as `_load_checkpoint` will, before the traces
    load and the rule is calibrated (minutes): a corrupt file is refused at once. Whether it fits
    this config's observation and network is checked on loading, once the environment exists."""
    import pickle
    import zipfile

    from stable_baselines3.common.save_util import load_from_zip_file

    def refused(detail: str) -> ConfigError:
        return ConfigError(f"cannot resume from it ({detail}); it must be a whole checkpoint of a kpilot "
                           "train run", path=str(ckpt), option="--resume")

    try:
        load_from_zip_file(ckpt, device="cpu", print_system_info=False)
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, RuntimeError, ValueError, KeyError,
            OSError):
        # Not torch's message, which advises loading with weights_only=False: that would run
        # whatever the file holds.
        raise refused(UNREADABLE_CHECKPOINT) from None
    if vn_path is not None:
        try:
            with open(vn_path, "rb") as f:
                pickle.load(f)
        except (pickle.UnpicklingError, EOFError, ValueError, KeyError, AttributeError, ImportError,
                OSError) as exc:
            raise refused(f"its normalisation file {vn_path.name}: {_first_line(exc)}") from None


def _load_checkpoint(ckpt: Path, vn_path: Path | None, venv, make_vecnorm, run_dir: Path, cfg: TrainConfig):
    """The model and normalisation to resume, or one ConfigError: a truncated zip or pickle, or a
    checkpoint of another observation (a version 4 run resumed under a version 3 config) or
    network. The config's PPO and normalisation settings apply from here on, as the manifest
    records them (SB3 would otherwise keep the checkpoint's, silently)."""
    import pickle
    import zipfile

    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    def refused(detail: str):
        return ConfigError(f"cannot resume from it ({detail}); it must be a whole checkpoint of a run "
                           f"observing {venv.observation_space.shape[0]} features as this config does",
                           path=str(ckpt), option="--resume")

    try:
        vecnorm = VecNormalize.load(str(vn_path), venv) if vn_path else make_vecnorm()
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, AssertionError) as exc:
        raise refused(f"its normalisation file {vn_path.name}: {_first_line(exc)}") from None
    try:
        model = PPO.load(ckpt, env=vecnorm, device="cpu", tensorboard_log=str(run_dir / "tb"),
                         **ppo_settings(cfg.ppo, cfg.n_envs))
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, RuntimeError):
        # torch reading a corrupt weights file (policy.pth) inside the zip; not its message, which
        # advises loading with weights_only=False: that would run whatever the file holds.
        raise refused(UNREADABLE_CHECKPOINT) from None
    except (ValueError, KeyError, AssertionError) as exc:      # another observation, a missing entry
        raise refused(_first_line(exc)) from None
    net = model.policy_kwargs.get("net_arch")
    wanted = {"pi": list(cfg.ppo.net_arch), "vf": list(cfg.ppo.net_arch)}
    if net != wanted:
        raise ConfigError(f"its network is {net}, the config's ppo.net_arch {list(cfg.ppo.net_arch)}: a "
                          "resumed run keeps its network", path=str(ckpt), option="--resume")
    nz = cfg.normalize
    vecnorm.training = True
    vecnorm.norm_obs, vecnorm.norm_reward = nz.norm_obs, nz.norm_reward
    vecnorm.clip_obs, vecnorm.clip_reward, vecnorm.gamma = nz.clip_obs, nz.clip_reward, cfg.ppo.gamma
    return vecnorm, model


def train(cfg: TrainConfig, out: str | Path, *, run_dir: str | Path | None = None,
          resume: str | Path | None = None, progress: bool = True, threads: int = 1,
          command: str | None = None, log=print) -> dict:
    """Train, write the artifact to `out`, return a summary (timesteps, steps/s, validation)."""
    import torch
    # Imported here, not with the module (`kpilot --help` stays quick), and before any work though the
    # stages import and use them later: an install without the train extra fails at once.
    from stable_baselines3 import PPO  # noqa: F401
    from stable_baselines3.common.callbacks import CallbackList  # noqa: F401
    from stable_baselines3.common.vec_env import VecNormalize  # noqa: F401
    from tqdm.rich import tqdm  # noqa: F401     (the progress bar's, which SB3 imports only when drawn)

    from kpilot.env.vector import KnativeAutoscalingVecEnv  # noqa: F401

    check_threads(threads)
    torch.set_num_threads(threads)
    training = _Training(cfg, out, run_dir, resume, command, log)
    training.refuse_bad_input()
    training.load_traces()
    training.calibrate_rule()
    venv = training.build_env()
    training.build_model(venv)
    training.prepare_validation()
    training.learn(progress)
    training.keep_final_model()
    training.save_final_checkpoint()
    return training.report()


class _Training:
    """One `kpilot train` run: what its stages share, each stage a method, in `train`'s order."""

    # Set by the stages, in that order.
    checkpoint: tuple[Path, Path | None] | None   # what --resume names: the zip, its VecNormalize file
    previous: object | None                       # the artifact in --out a resumed run must beat
    traces: list                                  # every trace, whole
    train_windows: list
    val_windows: list
    records: list[dict]                           # the training windows, as the manifest records them
    eval_sim: SimConfig                           # the simulator as configured (evaluation's, uncapped)
    rule: AimdRule
    rule_summary: dict                            # its parameters and training cost, for the manifest
    econf: EnvConfig
    vecnorm: object
    model: object
    validator: Validator | None
    t0: float
    steps0: int                                   # timesteps at the start of learn (> 0 when resumed)
    wall: float
    sps: float

    def __init__(self, cfg: TrainConfig, out: str | Path, run_dir: str | Path | None,
                 resume: str | Path | None, command: str | None, log):
        self.cfg, self.resume, self.log = cfg, resume, log
        self.given_run_dir = bool(run_dir)
        self.out, self.run_dir = Path(out), Path(run_dir) if run_dir else Path(out) / "runs"
        self.run_option = "--run-dir" if self.given_run_dir else DEFAULT_RUN_DIR_OPTION
        self.command = command or " ".join(shlex.quote(a) for a in ["kpilot", *sys.argv[1:]])
        self.best: dict | None = None                 # the best validation kept so far

    def refuse_bad_input(self) -> None:
        """Refuse what can be refused now, before the traces load and the rule is calibrated (minutes)."""
        cfg = self.cfg
        check_out(self.out)
        check_run_dir(self.run_dir, resuming=self.resume is not None, defaulted=not self.given_run_dir)
        training_sim(cfg)                   # sim.kpa within the training simulator's capacity
        checkpoint = find_checkpoint(Path(self.resume)) if self.resume is not None else None
        self.checkpoint = checkpoint
        if checkpoint is not None and (done := checkpoint_timesteps(checkpoint[0])) is not None \
                and done >= cfg.total_timesteps:
            raise ConfigError(f"nothing to train: {checkpoint[0]} is at {done} timesteps and total_timesteps "
                              f"is {cfg.total_timesteps}; give a larger --timesteps", option="--timesteps")
        if checkpoint is not None:
            check_checkpoint_readable(*checkpoint)
            self._refuse_mixing_runs(checkpoint[0], done)
        self.previous = _previous_artifact(self.out) if self.resume is not None else None

    def _refuse_mixing_runs(self, checkpoint: Path, done: int | None) -> None:
        """Resuming from an earlier checkpoint than the run dir's newest would write a second run
        over the first's checkpoints (same names replaced, later ones left), and a later
        `--resume RUN_DIR` would continue the abandoned run."""
        later = [p for steps, p in run_checkpoints(self.run_dir) if done is not None and steps > done]
        if later:
            raise ConfigError(f"holds checkpoints of the run after {checkpoint.name} ({later[-1].name}, ...): "
                              f"resuming there would mix two runs; give another {self.run_option.split()[0]} "
                              "for this one", path=str(self.run_dir), option=self.run_option)

    def load_traces(self) -> None:
        """Load every trace and cut it by time into training and validation windows (test: held out)."""
        cfg, s, log = self.cfg, self.cfg.split, self.log
        specs = cfg.trace_specs()
        # The traces' own draws (arrivals within a logged minute, sampled durations) follow eval.seed,
        # not the training seed: runs of every seed train and are validated on the same requests,
        # so that choosing between them compares their training, not their data.
        self.traces = [load_trace(spec, seed=cfg.eval.seed) for spec in specs]
        self.train_windows = usable_windows(specs, self.traces, s.train, "training", log=log)
        for spec, trace in zip(specs, self.traces):
            window_s = (s.train[1] - s.train[0]) * trace.recorded_span_s
            if 0 < window_s < cfg.env.episode_s and has_scored_requests(time_window(trace, *s.train)):
                # An episode runs its full length: idle after the window.
                log(f"note: {spec}: its training window is {window_s:.0f} s, shorter than an episode "
                    f"(env.episode_s {cfg.env.episode_s:g} s): its episodes are idle for the rest")
        self.val_windows = usable_windows(specs, self.traces, s.validation, "validation",
                                          warmup_s=cfg.eval.warmup_s, log=log)
        if not self.train_windows:
            raise ConfigError(f"no trace has 2 or more requests in its training window {s.train[0]:g}:"
                              f"{s.train[1]:g} of its span (split.train): {', '.join(specs)}",
                              option="--trace / env.traces")
        if not self.val_windows and cfg.eval.every_timesteps > 0:
            log(f"note: no trace has 2 or more requests after the warm-up in its validation window "
                f"{s.validation[0]:g}:{s.validation[1]:g}: the final model is written without validation")
        self.records = [trace_record(w, traces_dir()) for w in self.train_windows]
        log(f"traces: {len(specs)}; training windows {s.train}, validation {s.validation}, test {s.test} "
            "(held out)")

    def calibrate_rule(self) -> None:
        """Calibrate the rule baseline on the training windows (request level), so it sees what PPO sees."""
        cfg, log = self.cfg, self.log
        self.eval_sim = SimConfig.from_dict(cfg.sim)
        rule_key = _rule_key(cfg, self.eval_sim, self.records)
        # A resumed run reuses its run's calibration when nothing it depends on changed (it is the
        # slow part of a short run).
        reused = self._recorded_calibration(rule_key)
        if reused is not None:
            self.rule, self.rule_summary = AimdRule(**reused["params"]), reused
            log(f"rule baseline as this run calibrated it ({RULE_FILE}): {self.rule_summary['params']}")
        else:
            t0 = time.perf_counter()
            log(f"calibrating the rule baseline on {len(self.train_windows)} training windows (up to "
                f"{cfg.eval.rule_calibration_s:g} s of each; eval.rule_calibration_s and eval.rule_grid "
                "size it)")
            calib = [time_window_s(w, cfg.eval.rule_calibration_s) for w in self.train_windows]
            self.rule, self.rule_summary = calibrate_rule(
                calib, self.eval_sim, cfg.reward, seed=cfg.eval.seed, grid=cfg.eval.rule_grid or None,
                interval_s=cfg.env.decision_interval_s, min_target=cfg.env.min_target,
                max_target=cfg.env.max_target)
            log(f"rule baseline calibrated in {time.perf_counter() - t0:.1f}s: {self.rule_summary['params']}")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)    # this run's record, for its own --resume
            (self.run_dir / RULE_FILE).write_text(json.dumps({"key": rule_key, "rule": self.rule_summary},
                                                             indent=1) + "\n")
        except OSError as exc:
            raise _write_error(exc, self.run_dir, self.run_option) from None

    def _recorded_calibration(self, rule_key: str) -> dict | None:
        """A resumed run's recorded rule for these inputs, so it need not calibrate again (None: none)."""
        if self.checkpoint is None:
            return None
        for folder in (self.run_dir, self.checkpoint[0].parent.parent):   # a resume may write elsewhere
            if (reused := _recorded_rule(folder, rule_key)) is not None:
                return reused
        return None

    def build_env(self):
        """The vector env PPO trains on: episodes drawn from the training windows, real traces weighted."""
        from kpilot.env.vector import KnativeAutoscalingVecEnv

        cfg = self.cfg
        # Episodes pick a window uniformly from this list: repeating a real trace's window weights it
        # (real traces are few, synthetic ones many).
        episode_pool = [w for w in self.train_windows for _ in range(1 if w.meta.get("format") == "synthetic"
                                                                     else cfg.env.real_weight)]
        self.econf = env_config(cfg, episode_pool)
        venv = KnativeAutoscalingVecEnv(cfg.n_envs, self.econf, seed=cfg.seed, traces=episode_pool)
        venv.seed(cfg.seed)
        return venv

    def build_model(self, venv) -> None:
        """VecNormalize and PPO over `venv`, new or resumed from the checkpoint --resume names."""
        import torch
        from stable_baselines3 import PPO
        from stable_baselines3.common.vec_env import VecNormalize

        cfg, nz, p, log = self.cfg, self.cfg.normalize, self.cfg.ppo, self.log

        def new_vecnorm():
            return VecNormalize(venv, norm_obs=nz.norm_obs, norm_reward=nz.norm_reward, clip_obs=nz.clip_obs,
                                clip_reward=nz.clip_reward, gamma=p.gamma)

        if p.batch_size > p.n_steps * cfg.n_envs:
            log(f"note: ppo.batch_size {p.batch_size} is more than one update's steps, ppo.n_steps x "
                f"n_envs = {p.n_steps} x {cfg.n_envs}: each epoch trains on those {p.n_steps * cfg.n_envs} "
                "as one mini-batch")
        if self.checkpoint is not None:
            ckpt, vn_path = self.checkpoint
            if vn_path is None:
                log(f"{ckpt}: no normalisation statistics beside it; they start afresh")
            self.vecnorm, self.model = _load_checkpoint(ckpt, vn_path, venv, new_vecnorm, self.run_dir, cfg)
            log(f"resumed from {ckpt} at {self.model.num_timesteps} timesteps")
        else:
            self.vecnorm = new_vecnorm()
            self.model = PPO("MlpPolicy", self.vecnorm, **ppo_settings(p, cfg.n_envs), seed=cfg.seed,
                             device="cpu", verbose=0, tensorboard_log=str(self.run_dir / "tb"),
                             policy_kwargs={"net_arch": {"pi": list(p.net_arch), "vf": list(p.net_arch)},
                                            "activation_fn": torch.nn.Tanh, "log_std_init": p.log_std_init,
                                            "squash_output": False})

    def prepare_validation(self) -> None:
        """The validation replays that choose the model; the score a resumed run's artifact sets."""
        cfg, log = self.cfg, self.log
        bases = validation_bases(self.traces, cfg, self.eval_sim) if cfg.env.observe_base else None
        if bases is not None:
            log(f"validation base targets (tuned on the window before each): {bases}")
        self.validator = (Validator(self.val_windows, self.eval_sim, cfg, bases)
                          if (self.val_windows and cfg.eval.every_timesteps > 0) else None)
        if self.previous is not None and self.validator is not None:
            self.best = {**self.validator(self.previous),
                         "timesteps": (self.previous.manifest.get("manifest") or {}).get("timesteps")}
            log(f"the artifact in {self.out} scores {self.best['cost_vs_best_static']:.3f} on this run's "
                "validation windows: the one to beat")

    def learn(self, progress: bool) -> None:
        """PPO learns up to total_timesteps under the callbacks; its steps/s are measured here alone."""
        cfg, model = self.cfg, self.model
        self.t0, self.steps0 = time.perf_counter(), model.num_timesteps
        remaining = cfg.total_timesteps - model.num_timesteps
        rollout = cfg.ppo.n_steps * cfg.n_envs
        to_run = steps_to_run(remaining, rollout)
        callbacks = self._callbacks(to_run, progress)
        if remaining > 0:
            if to_run != remaining:
                self.log(f"note: PPO runs whole rollouts of {rollout} steps (ppo.n_steps x n_envs): "
                         f"{to_run} steps, to {model.num_timesteps + to_run} in all, where total_timesteps "
                         f"asks for {cfg.total_timesteps}")
            # Checkpoints and TensorBoard logs go to the run dir (the artifact's own errors name --out).
            try:
                model.learn(total_timesteps=remaining, callback=callbacks, progress_bar=False,
                            reset_num_timesteps=self.resume is None, tb_log_name=cfg.name)
            except OSError as exc:
                raise _write_error(exc, self.run_dir, self.run_option) from None
        self.wall = time.perf_counter() - self.t0
        self.sps = (model.num_timesteps - self.steps0) / max(1e-9, self.wall)

    def _callbacks(self, to_run: int, progress: bool):
        """Checkpoints, then validation and steps/s, then the bar: SB3 classes, so defined on first use."""
        from stable_baselines3.common.callbacks import (BaseCallback, CallbackList, CheckpointCallback,
                                                        ProgressBarCallback)

        training, cfg = self, self.cfg

        class Periodic(BaseCallback):
            """Env steps/s (CleanRL's SPS) every rollout; validation every eval.every_timesteps."""

            def __init__(self):
                super().__init__()
                self.next_eval = training.model.num_timesteps + cfg.eval.every_timesteps

            def _on_step(self) -> bool:
                if training.validator is not None and self.num_timesteps >= self.next_eval:
                    self.next_eval += cfg.eval.every_timesteps
                    training.validate_and_keep()
                return True

            def _on_rollout_end(self) -> None:
                sps = (self.num_timesteps - training.steps0) / max(1e-9, time.perf_counter() - training.t0)
                self.logger.record("charts/SPS", sps)

        class ProgressBar(ProgressBarCallback):
            """SB3's bar, its total the steps learn runs: SB3's own counts to `remaining` and ends past it."""

            def _on_training_start(self) -> None:
                import warnings

                from tqdm import TqdmExperimentalWarning
                from tqdm.rich import tqdm      # as SB3's bar draws it

                with warnings.catch_warnings():     # "rich is experimental": SB3 silences it too
                    warnings.simplefilter("ignore", TqdmExperimentalWarning)
                    self.pbar = tqdm(total=to_run)

        every = max(1, cfg.checkpoint.every_timesteps // cfg.n_envs)
        return CallbackList([
            CheckpointCallback(save_freq=every, save_path=str(self.run_dir / "checkpoints"),
                               name_prefix="ppo", save_vecnormalize=True),
            Periodic(),
            *([ProgressBar()] if progress else []),
        ])

    def validate_and_keep(self, final: bool = False) -> None:
        """Score the model on the validation windows; write it as the artifact when it is the best so far."""
        model, cfg = self.model, self.cfg
        result = self.validator(export_policy(model, self.vecnorm, cfg.action_spec, {},
                                              self.econf.observation_version))
        model.logger.record("eval/cost_vs_best_static", result["cost_vs_best_static"])
        # Written now, at the step validated: SB3 would write it only at the next rollout's end, a
        # rollout late, and never for the final model's validation after learn() returns.
        model.logger.dump(model.num_timesteps)
        better = self.best is None or result["cost_vs_best_static"] < self.best["cost_vs_best_static"]
        # Early checkpoints, still moving fast, win on a short validation set by luck: only those
        # from eval.select_after of the run on are kept.
        eligible = model.num_timesteps >= cfg.eval.select_after * cfg.total_timesteps
        if better and eligible:
            self.best = {**result, "timesteps": int(model.num_timesteps)}
            _write_artifact(self.out, model, self.vecnorm, cfg, self._manifest(self.best))
        note = " (best so far, saved)" if better and eligible else " (too early to keep)" if better else ""
        # The final model is validated after the last update, at the step count of the last validation.
        what = (f"validation of the final model at {model.num_timesteps}" if final
                else f"validation at {model.num_timesteps}")
        self.log(f"{what}: cost / best static = {result['cost_vs_best_static']:.3f}{note}")

    def _manifest(self, best: dict | None) -> dict:
        """The artifact's manifest: the config, env, simulator and traces it was trained on, and `best`."""
        cfg, econf = self.cfg, self.econf
        return build_manifest(name=cfg.name, config_dict=_plain(cfg.to_dict()),
                              env_dict=_plain({k: v for k, v in econf.to_dict().items() if k != "traces"}),
                              sim_dict=self.eval_sim.to_dict(), reward_dict=cfg.reward.to_dict(),
                              traces=self.records, command=self.command, rule=self.rule_summary,
                              timesteps=self.model.num_timesteps, best=best,
                              observation_version=econf.observation_version)

    def keep_final_model(self) -> None:
        """Validate the final model, a candidate too, or write it as the artifact when validation is off."""
        if self.validator is not None:
            self.validate_and_keep(final=True)
        else:
            _write_artifact(self.out, self.model, self.vecnorm, self.cfg, self._manifest(None))

    def save_final_checkpoint(self) -> None:
        """Checkpoint the final state, whatever was selected as best: the run stays resumable."""
        steps, folder = self.model.num_timesteps, self.run_dir / "checkpoints"
        try:
            self.model.save(folder / f"ppo_{steps}_steps.zip")
            self.vecnorm.save(str(folder / f"ppo_vecnormalize_{steps}_steps.pkl"))
        except OSError as exc:
            raise _write_error(exc, self.run_dir, self.run_option) from None

    def report(self) -> dict:
        """Log what was trained, how fast and where the artifact is; return `train`'s summary."""
        model, out = self.model, self.out
        new_steps = model.num_timesteps - self.steps0
        done = (f"{new_steps} timesteps" if new_steps == model.num_timesteps
                else f"{new_steps} timesteps more ({model.num_timesteps} in all)")
        self.log(f"trained {done} in {self.wall:.0f}s: {self.sps:.0f} env steps/s; artifact in {out}")
        if (out / POLICY_FILE).exists() and (note := size_note((out / POLICY_FILE).stat().st_size)):
            self.log(f"note: {note}")
        return {"timesteps": int(model.num_timesteps), "wall_s": self.wall, "env_steps_per_s": self.sps,
                "best_validation": self.best, "rule": self.rule_summary, "out": str(out)}


def train_quick(out: str | Path, *, total_timesteps: int = 150_000, progress: bool = True, log=print) -> dict:
    """A short run of the shipped config on its synthetic workloads only (no real traces needed):
    what `kpilot demo --train` runs. A few minutes on 2 cores; weaker than the shipped policy."""
    from kpilot.train.config import load_config

    cfg = load_config(None, {"env.traces": [], "total_timesteps": total_timesteps, "name": "demo",
                             "eval.rule_calibration_s": 900, "eval.every_timesteps": 50_000})
    # Checkpoints and logs in a scratch folder: the demo resumes nothing, and runs again into the same --out.
    with tempfile.TemporaryDirectory(prefix="kpilot-demo-run-") as run_dir:
        return train(cfg, out, run_dir=run_dir, progress=progress,
                     command=f"kpilot demo --train (train_quick, {total_timesteps} steps)", log=log)

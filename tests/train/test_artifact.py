"""The artifact round trip: SB3 model -> policy.json -> numpy policy chooses SB3's actions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kpilot.observation import OBS_VERSION
from kpilot.policy import load_policy


def _observations(n: int, seed: int = 0) -> np.ndarray:
    """Many plausible encoded observations: random raw readings through the contract."""
    from kpilot.observation import encode

    rng = np.random.default_rng(seed)
    raw = {
        "concurrency_stable": rng.lognormal(1, 1.5, n), "concurrency_panic": rng.lognormal(1, 1.5, n),
        "ready_pods": rng.integers(0, 80, n).astype(float), "desired_pods": rng.integers(0, 80, n).astype(float),
        "starting_pods": rng.integers(0, 5, n).astype(float), "target": rng.uniform(1, 200, n),
        "request_rate": rng.lognormal(1, 2, n), "latency_mean_s": rng.lognormal(-1, 1, n),
        "latency_p95_s": rng.lognormal(0, 1.5, n), "panic": rng.integers(0, 2, n).astype(float),
        "time_of_day_s": rng.uniform(0, 86400, n),
    }
    return encode(**raw)


def test_artifact_files_and_manifest(tiny_run):
    cfg, out, _, summary = tiny_run
    for name in ("policy.json", "model.zip", "vecnormalize.pkl", "manifest.json", "config.yaml"):
        assert (out / name).is_file(), name
    policy = load_policy(out)
    m = policy.manifest["manifest"]
    assert m["observation_version"] == OBS_VERSION
    assert m["reward"] == cfg.reward.to_dict()
    assert m["training_traces"][0]["source"].startswith("synthetic:bursty")
    assert len(m["training_traces"][0]["sha256"]) == 64
    assert m["config"]["ppo"]["net_arch"] == [16, 16]
    assert m["rule_baseline"]["params"]["hi_s"] == 1.0
    assert json.loads((out / "manifest.json").read_text())["manifest"]["command"] == "kpilot train (test)"
    assert summary["timesteps"] == 256 and summary["env_steps_per_s"] > 0
    # What decides the weights beside the command and seed: the libraries' versions, as installed.
    from importlib.metadata import version
    assert m["libraries"]["torch"] == version("torch") and m["libraries"]["numba"] == version("numba")
    assert set(m["libraries"]) == {"numpy", "numba", "llvmlite", "torch", "stable-baselines3", "gymnasium"}
    # torch's float32 weights are written as float32 decimals and read back as exactly those values.
    assert json.loads((out / "policy.json").read_text())["network"]["precision"] == "float32"
    assert all(np.array_equal(a.astype(np.float32).astype(np.float64), a) for layer in policy.layers for a in layer)


def test_total_timesteps_between_rollouts_is_said_and_the_bar_counts_what_runs(tiny_config, tmp_path, capsys):
    from kpilot.train.trainer import steps_to_run, train

    lines = []
    # 200 steps with rollouts of 4 envs x 32 steps: PPO stops at the first rollout past 200.
    summary = train(tiny_config(total_timesteps=200, eval={"every_timesteps": 0}), tmp_path / "p",
                    run_dir=tmp_path / "run", progress=True, log=lines.append)
    assert summary["timesteps"] == steps_to_run(200, 128) == 256
    assert any("whole rollouts of 128 steps" in line and "256 steps" in line and "asks for 200" in line
               for line in lines), lines
    # The bar ends at its total, not past it ("256/200" before).
    err = capsys.readouterr()
    assert "256/256" in err.out + err.err and "256/200" not in err.out + err.err


def test_export_matches_sb3_deterministic_actions(tiny_run):
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    cfg, out, _, _ = tiny_run
    model = PPO.load(out / "model.zip", device="cpu")
    vecnorm = VecNormalize.load(str(out / "vecnormalize.pkl"), _venv())
    vecnorm.training = False
    exported = load_policy(out)
    # The trained statistics are not the identity: normalisation really travels with the policy.
    assert not np.allclose(exported.obs_mean, 0.0)
    obs = _observations(5000)
    sb3, _ = model.predict(vecnorm.normalize_obs(obs), deterministic=True)
    ours = exported.action(obs)
    assert ours.shape == (5000,)
    np.testing.assert_allclose(ours, sb3[:, 0], atol=1e-5)
    # Both span the action range on these inputs (not a constant policy that trivially agrees).
    assert np.ptp(ours) > 1e-3
    assert np.all(exported.target(obs) >= cfg.env.min_target - 1e-9)


def test_resume_continues_from_checkpoint(tiny_run, tiny_config, tmp_path):
    from stable_baselines3.common.vec_env import VecNormalize

    from kpilot.train.trainer import find_checkpoint, train

    _, _, run, _ = tiny_run
    ckpt, vn = find_checkpoint(run)
    assert ckpt.name == "ppo_256_steps.zip" and vn is not None
    before = VecNormalize.load(str(vn), _venv()).obs_rms.count
    out = tmp_path / "resumed"
    summary = train(tiny_config(total_timesteps=384), out, run_dir=tmp_path / "run", resume=run,
                    progress=False, log=lambda m: None)
    assert summary["timesteps"] == 384          # continued from 256, not restarted at 0
    assert (tmp_path / "run" / "checkpoints" / "ppo_384_steps.zip").is_file()
    after = VecNormalize.load(str(tmp_path / "run" / "checkpoints" / "ppo_vecnormalize_384_steps.pkl"),
                              _venv()).obs_rms.count
    assert after > before                      # the normalisation statistics carried on too


def _venv(observe_base: bool = False):
    from kpilot.env.core import EnvConfig
    from kpilot.env.vector import KnativeAutoscalingVecEnv

    return KnativeAutoscalingVecEnv(1, EnvConfig(observe_base=observe_base), traces=[_dummy_trace()])


def _dummy_trace():
    from kpilot.traces import load_trace

    return load_trace("synthetic:poisson:rate=1,duration=600,seed=1")


def test_select_after_keeps_only_late_checkpoints(tiny_config, tmp_path):
    import re

    from kpilot.train.trainer import train

    lines = []
    cfg = tiny_config(total_timesteps=512, eval={"every_timesteps": 128, "select_after": 0.6,
                                                 "rule_grid": {"hi_s": [1.0], "down": [0.5], "up": [1.5]}})
    summary = train(cfg, tmp_path / "policy", run_dir=tmp_path / "run", progress=False, log=lines.append)
    validated = [(int(m[1]), m[2]) for m in (re.match(r"validation (?:of the final model )?at (\d+): .*?( \(.*\))?$", ln)
                                                   for ln in lines) if m]
    assert [t for t, _ in validated][:4] == [128, 256, 384, 512]
    # The final model's validation, at the same step count as the last one, says which it is.
    assert sum(ln.startswith("validation of the final model at 512: ") for ln in lines) == 1
    # The first validation always beats "nothing yet", but at 128 of 512 steps it is too early.
    assert validated[0][1] == " (too early to keep)"
    assert all(note != " (best so far, saved)" for t, note in validated if t < 0.6 * 512)
    assert summary["best_validation"]["timesteps"] >= 0.6 * 512
    # TensorBoard has every validation at the step it was made, the final model's (after learn()
    # returned) included: it was written a rollout late, and the final one never.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (tb,) = (tmp_path / "run" / "tb").iterdir()
    events = EventAccumulator(str(tb)).Reload().Scalars("eval/cost_vs_best_static")
    logged = [(int(m[1]), float(m[2])) for m in (re.match(r"validation (?:of the final model )?at (\d+): cost / best static = ([\d.]+)", ln)
                                                 for ln in lines) if m]
    assert len(logged) == 5 and [(e.step, round(e.value, 3)) for e in events] == logged


def test_a_policy_trained_on_base_targets_exports_version_2_and_runs_around_a_base(tiny_config, tmp_path):
    from stable_baselines3 import PPO

    from kpilot.evaluate.runner import load_artifact, tuned_policy
    from kpilot.observation import FEATURES_BY_VERSION, OBS_VERSION_BASE
    from kpilot.sim.replay import replay
    from kpilot.train.trainer import train

    lines = []
    cfg = tiny_config(env={"synthetic": ["synthetic:bursty:rate=4,duration=1500,seed=1"], "episode_s": 300,
                           "observe_base": True, "base_window_s": 300, "base_band": 2},
                      eval={"every_timesteps": 128, "band": 2, "rule_grid": {"hi_s": [1.0], "down": [0.5], "up": [1.5]}})
    train(cfg, tmp_path / "policy", run_dir=tmp_path / "run", progress=False, log=lines.append)
    assert any(line.startswith("validation base targets") for line in lines)
    artifact = load_artifact(tmp_path / "policy")
    policy = artifact.policy
    assert policy.observes_base and artifact.policy.manifest["manifest"]["observation_version"] == OBS_VERSION_BASE
    assert policy.manifest["observation"]["features"] == list(FEATURES_BY_VERSION[OBS_VERSION_BASE])
    # The export still chooses SB3's actions, on observations that carry a base target.
    rng = np.random.default_rng(0)
    obs = np.concatenate([_observations(500), np.log(rng.uniform(1, 50, (500, 1)))], axis=1).astype(np.float32)
    model = PPO.load(tmp_path / "policy" / "model.zip", device="cpu")
    from stable_baselines3.common.vec_env import VecNormalize

    vecnorm = VecNormalize.load(str(tmp_path / "policy" / "vecnormalize.pkl"), _venv(observe_base=True))
    sb3, _ = model.predict(vecnorm.normalize_obs(obs), deterministic=True)
    np.testing.assert_allclose(policy.action(obs), sb3[:, 0], atol=1e-5)
    # Replayed around a base target of 4 within x2, as evaluate's rl-in-band and the operator run it.
    result = replay(_dummy_trace(), tuned_policy(artifact, 4.0, 2.0, (0.6, 0.8)), artifact.sim, timeline=True)
    assert np.all((result.timeline["target"] >= 2.0 - 1e-9) & (result.timeline["target"] <= 8.0 + 1e-9))


def test_an_interrupted_save_leaves_the_previous_artifact_whole(tiny_run, tmp_path):
    import shutil

    import pytest
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    from kpilot.train.trainer import _write_artifact

    cfg, src, _, _ = tiny_run
    out = tmp_path / "artifact"
    shutil.copytree(src, out)
    (out / "NOTES.md").write_text("ours")          # something the user keeps in the folder
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    manifest = json.loads((out / "manifest.json").read_text())

    class StoppedMidSave:
        def save(self, path):
            open(path, "wb").write(b"half a zip")
            raise KeyboardInterrupt                 # Ctrl-C while a new best model is written

    with pytest.raises(KeyboardInterrupt):
        _write_artifact(out, StoppedMidSave(), None, cfg, manifest)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]        # no staging folder left
    # A save that completes replaces the artifact and keeps what else was in the folder.
    model = PPO.load(out / "model.zip", device="cpu")
    vecnorm = VecNormalize.load(str(out / "vecnormalize.pkl"), _venv())
    _write_artifact(out, model, vecnorm, cfg, manifest)
    assert (out / "NOTES.md").read_text() == "ours" and load_policy(out).sha256 == load_policy(src).sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]


def test_out_that_kpilot_may_not_replace_is_refused_before_any_work(tiny_config, tmp_path, monkeypatch):
    """A file given as --out was once renamed aside and replaced by an artifact; a symbolic link
    became a folder, its target's files moved out; '.' failed after training."""
    from kpilot.errors import ConfigError
    from kpilot.train.trainer import train

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("precious\n")
    (tmp_path / "v3").mkdir()
    (tmp_path / "current").symlink_to("v3")
    for out, why in (("notes.txt", "is a file, not a folder"), ("current", "is a symbolic link"),
                     (".", "is the working folder or one above it"),
                     ("notes.txt/policy", "cannot create its folder .*notes.txt is a file")):
        with pytest.raises(ConfigError, match=why):
            train(tiny_config(), Path(out), run_dir=tmp_path / "run", progress=False, log=lambda m: None)
    # A run refused after --out was checked (here: nothing to resume) creates none of its folders.
    with pytest.raises(ConfigError, match="no such checkpoint"):
        train(tiny_config(), Path("new/policies/v1"), run_dir=tmp_path / "run", resume=tmp_path / "nope.zip",
              progress=False, log=lambda m: None)
    assert (tmp_path / "notes.txt").read_text() == "precious\n" and (tmp_path / "current").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "notes.txt", "v3"]    # no run, no artifact


def test_resume_keeps_the_better_policy_when_only_policy_json_records_it(tiny_run, tiny_config, tmp_path):
    """Without manifest.json the previous best was taken as none, and the resumed run's worse
    first validation replaced it. The artifact is scored again on the run's validation windows:
    with the same config that is the figure it recorded."""
    from kpilot.train.trainer import train

    _, out, run, summary = tiny_run
    copy = tmp_path / "policy"
    shutil.copytree(out, copy)
    (copy / "manifest.json").unlink()
    best = json.loads((copy / "policy.json").read_text())["manifest"]["best_validation"]
    before = (copy / "policy.json").read_bytes()
    logged = []
    resumed = train(tiny_config(total_timesteps=384), copy, run_dir=tmp_path / "run",
                    resume=run / "checkpoints" / "ppo_128_steps.zip", progress=False, log=logged.append)
    validations = [(float(m.split("= ")[1].split()[0]), "saved" in m) for m in logged
                   if m.startswith("validation ")]
    assert validations                                   # the resumed run did validate
    # Only a validation better than the one policy.json records may replace it.
    assert all(cost < best["cost_vs_best_static"] for cost, saved in validations if saved), validations
    kept = resumed["best_validation"]
    assert kept["cost_vs_best_static"] <= best["cost_vs_best_static"]
    if not any(saved for _, saved in validations):
        assert kept == best and (copy / "policy.json").read_bytes() == before
    (copy / "policy.json").write_text("{not json")
    (copy / "manifest.json").write_text("[]")
    from kpilot.errors import ConfigError
    with pytest.raises(ConfigError, match="cannot read the policy artifact there .not valid JSON"):
        train(tiny_config(total_timesteps=384), copy, run_dir=tmp_path / "run2", resume=run, progress=False,
              log=lambda m: None)


def test_resume_takes_an_artifact_and_refuses_broken_or_foreign_checkpoints(tiny_run, tiny_config, tmp_path):
    from kpilot.errors import ConfigError
    from kpilot.train.trainer import MODEL_FILE, find_checkpoint, train

    _, out, run, _ = tiny_run
    assert find_checkpoint(out) == (out / MODEL_FILE, out / "vecnormalize.pkl")
    assert find_checkpoint(out / MODEL_FILE)[0] == out / MODEL_FILE
    stray = tmp_path / "run" / "checkpoints"
    shutil.copytree(run / "checkpoints", stray)
    (stray / "ppo_best_steps.zip").write_bytes(b"")                 # once: int('best') in a traceback
    assert find_checkpoint(tmp_path / "run")[0].name == "ppo_256_steps.zip"
    truncated = tmp_path / "cut_256_steps.zip"
    truncated.write_bytes((run / "checkpoints" / "ppo_256_steps.zip").read_bytes()[:500])
    with pytest.raises(ConfigError, match="cannot resume from it"):
        train(tiny_config(total_timesteps=384), tmp_path / "a", resume=truncated, progress=False, log=lambda m: None)
    with pytest.raises(ConfigError, match="observing 14 features"):
        train(tiny_config(total_timesteps=384, env={"synthetic": ["synthetic:bursty:rate=4,duration=1500,seed=1"], "episode_s": 300,
                                                           "observe_base": True}), tmp_path / "b",
              resume=out, progress=False, log=lambda m: None)


def test_resuming_from_an_earlier_checkpoint_into_its_run_dir_is_refused(tiny_run, tiny_config, tmp_path):
    # The second run replaced the first's checkpoints of the same names and left its later ones:
    # a later `--resume RUN_DIR` continued the abandoned run.
    from kpilot.errors import ConfigError
    from kpilot.train.trainer import CHECKPOINT, train

    _, _, run, _ = tiny_run
    shutil.copytree(run, tmp_path / "run")
    steps = sorted((int(CHECKPOINT.fullmatch(p.stem)["steps"]), p)
                   for p in (tmp_path / "run" / "checkpoints").glob("ppo_*_steps.zip"))
    assert len(steps) >= 2, steps
    (first, earliest), (last, newest) = steps[0], steps[-1]
    before = {p.name: p.read_bytes() for p in (tmp_path / "run" / "checkpoints").iterdir()}
    with pytest.raises(ConfigError) as err:
        train(tiny_config(total_timesteps=last + 128), tmp_path / "o", run_dir=tmp_path / "run", resume=earliest,
              progress=False, log=lambda m: pytest.fail(f"worked before refusing: {m}"))
    assert str(err.value) == (f"option --run-dir, {tmp_path / 'run'}: holds checkpoints of the run after "
                              f"{earliest.name} ({newest.name}, ...): resuming there would mix two runs; "
                              "give another --run-dir for this one")
    assert {p.name: p.read_bytes() for p in (tmp_path / "run" / "checkpoints").iterdir()} == before
    # Into a fresh run dir it resumes.
    summary = train(tiny_config(total_timesteps=first + 128), tmp_path / "o", run_dir=tmp_path / "fresh",
                    resume=earliest, progress=False, log=lambda m: None)
    assert summary["timesteps"] == first + 128


def test_every_training_seed_trains_and_validates_on_the_same_requests(tiny_config, tmp_path):
    # A count table's requests are drawn within their minutes: they were drawn with the training
    # seed, so that seeds 0 and 1 were validated on different requests and choosing between them
    # compared their data as much as their training. The draw follows eval.seed.
    from kpilot.train.trainer import _Training

    counts = tmp_path / "counts.csv"
    counts.write_text("time,requests\n" + "".join(f"{60 * k},{5 + k % 7}\n" for k in range(60)))
    env = {"synthetic": [], "traces": [str(counts)], "episode_s": 300}
    loaded = {}
    for seed, eval_seed in ((0, 0), (1, 0), (1, 5)):
        run = _Training(tiny_config(seed=seed, env=env, eval={"seed": eval_seed}), tmp_path / "o", None, None,
                        "test", log=lambda m: None)
        run.load_traces()
        loaded[seed, eval_seed] = run.traces[0].arrivals
    assert np.array_equal(loaded[0, 0], loaded[1, 0])
    assert not np.array_equal(loaded[1, 0], loaded[1, 5])


def test_the_learning_rate_never_goes_below_zero(tiny_config):
    # PPO's last rollout may end past total_timesteps: SB3 then passes a negative progress, and
    # the linear schedule gave a negative rate, one update stepping the weights the wrong way.
    from kpilot.train.trainer import ppo_settings

    cfg = tiny_config()
    rate = ppo_settings(cfg.ppo, cfg.n_envs)["learning_rate"]
    assert rate(1.0) == cfg.ppo.learning_rate and rate(0.5) == cfg.ppo.learning_rate / 2
    assert rate(-0.16) == 0.0


def test_resume_with_nothing_left_to_train_is_refused_before_any_work(tiny_run, tiny_config, tmp_path):
    # It loaded every trace, calibrated the rule, then crashed (AttributeError) in validation.
    from kpilot.errors import ConfigError
    from kpilot.train.trainer import train

    from kpilot.train.trainer import checkpoint_timesteps, find_checkpoint

    _, out, run, _ = tiny_run
    for resume in (run, out):                   # a run directory at 256 steps, an artifact at its best's
        done = checkpoint_timesteps(find_checkpoint(resume)[0])
        with pytest.raises(ConfigError) as err:
            train(tiny_config(total_timesteps=done), tmp_path / "o", resume=resume, progress=False,
                  log=lambda m: pytest.fail(f"worked before refusing: {m}"))
        assert str(err.value).startswith("option --timesteps: nothing to train: ")
        assert f"timesteps and total_timesteps is {done}; give a larger --timesteps" in str(err.value)
    assert not (tmp_path / "o").exists()


def test_resume_trains_with_the_configs_ppo_settings_and_keeps_its_network(tiny_run, tiny_config, tmp_path):
    # PPO.load kept the checkpoint's settings while the manifest recorded the config's.
    from stable_baselines3 import PPO

    from kpilot.errors import ConfigError
    from kpilot.train.trainer import train

    _, _, run, _ = tiny_run
    changed = tiny_config(total_timesteps=384, ppo={"n_steps": 32, "batch_size": 32, "n_epochs": 3,
                                                    "learning_rate": 0.01, "lr_schedule": "constant",
                                                    "gamma": 0.5, "net_arch": [16, 16]})
    said = []
    train(changed, tmp_path / "p", run_dir=tmp_path / "run", resume=run, progress=False, log=said.append)
    # The summary counts what this run trained, and says the total.
    assert any(m.startswith("trained 128 timesteps more (384 in all) in ") for m in said), said
    model = PPO.load(tmp_path / "run" / "checkpoints" / "ppo_384_steps.zip", device="cpu")
    assert (model.batch_size, model.n_epochs, model.gamma, model.learning_rate) == (32, 3, 0.5, 0.01)
    assert model.num_timesteps == 384
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())["manifest"]
    assert manifest["config"]["ppo"]["batch_size"] == 32 and manifest["config"]["ppo"]["gamma"] == 0.5
    with pytest.raises(ConfigError, match=r"its network is \{'pi': \[16, 16\], 'vf': \[16, 16\]\}, the config's "
                                          r"ppo.net_arch \[32, 32\]: a resumed run keeps its network"):
        train(tiny_config(total_timesteps=384, ppo={"n_steps": 32, "batch_size": 64, "net_arch": [32, 32]}),
              tmp_path / "q", run_dir=tmp_path / "run2", resume=run, progress=False, log=lambda m: None)


def test_resume_into_an_artifact_beats_it_on_this_runs_validation_windows(tiny_run, tiny_config, tmp_path):
    # Its recorded figure was measured on other traces' windows: compared as it stood, a resumed
    # run on new traces kept the old policy whatever it scored (or replaced a better one).
    from kpilot.train.trainer import train

    _, out, run, summary = tiny_run
    copy = tmp_path / "policy"
    shutil.copytree(out, copy)
    recorded = summary["best_validation"]["cost_vs_best_static"]
    lines = []
    other = tiny_config(total_timesteps=384, env={"synthetic": ["synthetic:poisson:rate=3,duration=1500,seed=4"],
                                                  "episode_s": 300})
    resumed = train(other, copy, run_dir=tmp_path / "run", resume=run, progress=False, log=lines.append)
    (line,) = [m for m in lines if m.startswith(f"the artifact in {copy} scores ")]
    rescored = float(line.split(" scores ")[1].split()[0])
    assert rescored != pytest.approx(recorded, abs=1e-3)          # other windows, another figure
    saved = [float(m.split("= ")[1].split()[0]) for m in lines if m.startswith("validation ") and "saved" in m]
    assert all(cost < rescored + 5e-4 for cost in saved)
    assert resumed["best_validation"]["cost_vs_best_static"] <= rescored + 5e-4


def test_a_fresh_run_refuses_a_run_dir_holding_another_runs_checkpoints(tiny_run, tiny_config, tmp_path):
    # Its checkpoints overwrote some of the earlier run's and sorted among the rest; --resume then
    # continued the earlier run. A file as --run-dir crashed after the traces loaded.
    from kpilot.errors import ConfigError
    from kpilot.train.trainer import train

    _, _, run, _ = tiny_run
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    with pytest.raises(ConfigError) as err:
        train(tiny_config(), tmp_path / "o", run_dir=run, progress=False, log=lambda m: pytest.fail(m))
    assert str(err.value) == (f"option --run-dir, {run}: holds an earlier run's checkpoints (ppo_256_steps.zip, ...): "
                              f"--resume {run} continues it; for a fresh run give another --run-dir or remove it")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    # Not given, the run dir is --out's runs/: the error says so rather than blame an unused option.
    (tmp_path / "o2" / "runs").mkdir(parents=True)
    (tmp_path / "o2" / "runs" / "checkpoints").mkdir()
    (tmp_path / "o2" / "runs" / "checkpoints" / "ppo_256_steps.zip").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"option --run-dir \(not given: the default, --out's runs/\), "):
        train(tiny_config(), tmp_path / "o2", progress=False, log=lambda m: pytest.fail(m))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="option --run-dir, .*afile: is a file, not a folder"):
        train(tiny_config(), tmp_path / "o", run_dir=tmp_path / "afile", progress=False, log=lambda m: pytest.fail(m))
    assert not (tmp_path / "o").exists()


def test_a_trace_too_short_for_a_window_is_left_out_with_a_note(tiny_config, tmp_path):
    from kpilot.errors import ConfigError
    from kpilot.train.trainer import train

    one = tmp_path / "one.csv"
    one.write_text("timestamp,duration\n5,0.1\n")
    lines = []
    cfg = tiny_config(total_timesteps=128, env={"synthetic": ["synthetic:bursty:rate=4,duration=1500,seed=1"],
                                                "traces": [str(one)], "episode_s": 300})
    train(cfg, tmp_path / "p", run_dir=tmp_path / "run", progress=False, log=lines.append)
    assert f"note: {one}: fewer than 2 requests in its training window 0:0.7; not used for training" in lines
    assert any(m.startswith(f"note: {one}: fewer than 2 requests in its validation window 0.7:0.8 after the warm-up")
               for m in lines)
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())["manifest"]
    assert [t["source"].split(":")[1] for t in manifest["training_traces"]] == ["bursty"]
    assert not any("shorter than an episode" in m for m in lines)     # left out: one note is enough
    # A trace whose training window is shorter than an episode is used, and said to leave it idle.
    short = tmp_path / "short.csv"
    short.write_text("timestamp,duration\n" + "".join(f"{t},0.2\n" for t in range(400)))
    lines = []
    train(tiny_config(total_timesteps=128, env={"traces": [str(short)], "synthetic": [], "episode_s": 300}),
          tmp_path / "s", run_dir=tmp_path / "run3", progress=False, log=lines.append)
    assert (f"note: {short}: its training window is 280 s, shorter than an episode (env.episode_s 300 s): its "
            "episodes are idle for the rest") in lines
    with pytest.raises(ConfigError) as err:
        train(tiny_config(env={"traces": [str(one)], "synthetic": []}), tmp_path / "q", run_dir=tmp_path / "r2",
              progress=False, log=lambda m: None)
    assert str(err.value) == (f"option --trace / env.traces: no trace has 2 or more requests in its training "
                              f"window 0:0.7 of its span (split.train): {one}")


def test_a_minimum_scale_above_the_training_simulators_capacity_is_refused_before_any_work(tiny_config, tmp_path):
    from kpilot.errors import ConfigError
    from kpilot.train.trainer import train

    cfg = tiny_config(sim={"kpa": {"min_scale": 300, "initial_scale": 300}})
    with pytest.raises(ConfigError) as err:
        train(cfg, tmp_path / "o", progress=False, log=lambda m: pytest.fail(f"worked before refusing: {m}"))
    assert str(err.value) == ("option --config: sim.kpa.min_scale 300 is above the training simulator's capacity "
                              "of 192 pods (set sim.pod.max_pods)")
    assert not (tmp_path / "o").exists()


def test_a_batch_larger_than_an_update_is_one_note_not_sb3s_warning(tiny_config, tmp_path, recwarn):
    # --n-envs 4 under the default config's batch of 1024: SB3 trains on the 128 steps of an
    # update alone and warns in its own words; kpilot says so once and passes what SB3 would use.
    from stable_baselines3 import PPO

    from kpilot.train.trainer import train

    said = []
    train(tiny_config(total_timesteps=128, ppo={"n_steps": 32, "batch_size": 1024, "n_epochs": 1, "net_arch": [16, 16]},
                      eval={"every_timesteps": 0, "rule_grid": {"hi_s": [1.0], "down": [0.5], "up": [1.5]}}),
          tmp_path / "p", progress=False, log=said.append)
    assert ("note: ppo.batch_size 1024 is more than one update's steps, ppo.n_steps x n_envs = 32 x 4: each "
            "epoch trains on those 128 as one mini-batch") in said
    assert not [w for w in recwarn if "mini-batch" in str(w.message)]
    assert PPO.load(tmp_path / "p" / "model.zip", device="cpu").batch_size == 128


def test_resuming_a_run_reuses_its_rule_calibration_unless_what_it_depends_on_changed(tiny_config, tmp_path):
    # The calibration was the slow part of a short run, and --resume repeated it from scratch.
    from kpilot.train.trainer import train

    run, out = tmp_path / "run", tmp_path / "p"
    first = []
    calibrated = train(tiny_config(total_timesteps=128), out, run_dir=run, progress=False, log=first.append)["rule"]
    assert any(m.startswith("calibrating the rule baseline on ") for m in first), first
    again = []
    summary = train(tiny_config(total_timesteps=256), out, run_dir=run, resume=run, progress=False, log=again.append)
    assert not any(m.startswith("calibrating") for m in again), again
    assert any(m.startswith("rule baseline as this run calibrated it") for m in again), again
    assert summary["rule"] == calibrated                     # the first run's calibration, as it was
    assert json.loads((out / "manifest.json").read_text())["manifest"]["rule_baseline"]["params"] == calibrated["params"]
    # Resumed into another run dir: the checkpoint's run dir has the record.
    elsewhere = []
    train(tiny_config(total_timesteps=320), tmp_path / "p2", run_dir=tmp_path / "run2", resume=run, progress=False,
          log=elsewhere.append)
    assert any(m.startswith("rule baseline as this run calibrated it") for m in elsewhere), elsewhere
    # Another grid: calibrated afresh.
    grid = {"every_timesteps": 128, "rule_grid": {"hi_s": [2.0], "down": [0.5], "up": [1.5]}}
    other = []
    summary = train(tiny_config(total_timesteps=384, eval=grid), out, run_dir=run, resume=run, progress=False,
                    log=other.append)
    assert any(m.startswith("calibrating the rule baseline on ") for m in other), other
    assert summary["rule"]["params"]["hi_s"] == 2.0


def test_a_changed_cold_start_table_is_calibrated_afresh_on_resume(tiny_config, tmp_path):
    # The rule's key held the table's path, not its contents: edited costs reused a stale rule.
    import shutil

    from kpilot.train.trainer import train

    table = tmp_path / "cold.csv"
    shutil.copy(Path(__file__).parents[1] / "fixtures" / "traces" / "huawei_coldstart.csv", table)
    cfg = lambda steps: tiny_config(total_timesteps=steps, sim={"pod": {"cold_start": str(table)}})
    run, out = tmp_path / "run", tmp_path / "p"
    train(cfg(128), out, run_dir=run, progress=False, log=lambda m: None)
    table.write_text(table.read_text().replace("0,0,0.1,1,7,0.5,0.1,0.1,0.1,0.2,R1", "0,0,0.1,1,7,5.0,1.0,1.0,1.0,2.0,R1"))
    said = []
    train(cfg(256), out, run_dir=run, resume=run, progress=False, log=said.append)
    assert any(m.startswith("calibrating the rule baseline on ") for m in said), said


def test_a_policy_too_large_for_kubectl_apply_is_named_with_the_way_to_deploy_it(tiny_config, tmp_path):
    from kpilot.train.trainer import train

    lines = []
    cfg = tiny_config(ppo={"n_steps": 32, "batch_size": 64, "n_epochs": 1, "net_arch": [200, 200]},
                      eval={"every_timesteps": 0}, total_timesteps=128)
    train(cfg, tmp_path / "policy", run_dir=tmp_path / "run", progress=False, log=lines.append)
    size = (tmp_path / "policy" / "policy.json").stat().st_size
    assert 256 * 1024 < size < 1024 * 1024
    notes = [ln for ln in lines if "policy.json is" in ln]
    assert notes == [f"note: policy.json is {size / 1024:,.0f} KiB: `kubectl apply` (and `apply -k manifests/`) "
                     "stores a copy, escaped, in an annotation of at most 256 KiB and may refuse it; deploy it with "
                     "`kubectl apply --server-side` or `kubectl create configmap`"]
    # A network of the default size says nothing.
    small = []
    train(tiny_config(eval={"every_timesteps": 0}, total_timesteps=128), tmp_path / "small",
          run_dir=tmp_path / "run2", progress=False, log=small.append)
    assert not any("policy.json is" in ln for ln in small)
    from kpilot.policy import size_note

    assert size_note(2 * 1024 * 1024) == ("policy.json is 2,048 KiB, more than a ConfigMap holds (1 MiB): the "
                                          "operator cannot read it from one; train with a smaller ppo.net_arch")

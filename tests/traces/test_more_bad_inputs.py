"""Bad input is one error line, exit 2 and no traceback: malformed kubeconfigs, an API server that
answers something else, values that overflowed numpy (its RuntimeWarning lines beside the error),
a header naming a column twice, and compressed or binary files echoed onto the terminal."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from fake_prometheus import prometheus  # noqa: F401  (fixture)

from kpilot.errors import TraceError
from kpilot.traces import load_coldstart_table, load_trace

KPILOT = Path(sys.executable).with_name("kpilot")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"
SMALL = "synthetic:bursty:rate=10,duration=600,seed=3"


def kpilot(*args, env=None):
    return subprocess.run([str(KPILOT), *map(str, args)], capture_output=True, text=True, timeout=120,
                          env=env)


def one_error_line(proc) -> str:
    """The single line a bad input gets: exit 2, nothing else on stderr, no traceback."""
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("kpilot: error: ") and line.isprintable(), line
    return line


def message(spec) -> str:
    """load_trace's error, with numpy's RuntimeWarnings turned into failures."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(TraceError) as info:
            load_trace(spec)
    return str(info.value)


def outside_a_pod(kubeconfig) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
    return {**env, "KUBECONFIG": str(kubeconfig)}


def kubeconfig(path: Path, server: str, **cluster) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return path


# --- 1. a malformed kubeconfig ---

@pytest.mark.parametrize("content, why", [
    (b"clusters: [\n", "not valid YAML at line 2, column 1"),
    (gzip.compress(b"apiVersion: v1\n" * 20), "not a text file (binary or compressed?)"),
    (b"- a\n- b\n", "malformed (TypeError"),
    (None, "invalid base64 in a *-data field"),      # certificate-authority-data: "abc"
], ids=["unterminated", "gzip", "a-list", "bad-base64"])
def test_a_malformed_kubeconfig_is_one_line_naming_it(tmp_path, content, why):
    # yaml's ParserError, UnicodeDecodeError and binascii.Error came out as tracebacks.
    path = tmp_path / "kubeconfig"
    if content is None:
        kubeconfig(path, "https://127.0.0.1:1", **{"certificate-authority-data": "abc"})
    else:
        path.write_bytes(content)
    line = one_error_line(kpilot("operator", "run", "-n", "default", env=outside_a_pod(path)))
    assert line.startswith("kpilot: error: no Kubernetes credentials: neither a ServiceAccount nor a kubeconfig")
    assert f"kubeconfig {path}: {why}" in line


def test_retune_apply_with_a_malformed_kubeconfig_is_one_line_before_reading_traffic(tmp_path, prometheus):
    path = tmp_path / "kubeconfig"
    path.write_text("clusters: [\n")
    prom = prometheus({})
    line = one_error_line(kpilot("retune", "--url", prom.url, "--namespace", "ns1", "--end", 1_700_000_000,
                                 "--over", "10m", "--replays", 1, "--apply", env=outside_a_pod(path)))
    assert "option --apply" in line and f"kubeconfig {path}: not valid YAML" in line and prom.queries == []


# --- 2. an API server that answers 200 with something else ---

def _server(body: bytes, content_type: str):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("body, content_type, why", [
    (b'{"hello": "world"}', "application/json", 'not a Kubernetes list of objects with metadata: {"hello": "world"}'),
    (b'{"items": [{"metadata": {"name": 3}}]}', "application/json", "not a Kubernetes list of objects"),
    (b'{"items": 5}', "application/json", "not a Kubernetes list of objects"),
    (b"<html>\x1b[31mlogin</html>", "text/html", "not a Kubernetes list of objects with metadata: <html>?[31mlogin"),
    (b'{"items": [', "application/json", "not JSON: JSONDecodeError"),
], ids=["other-json", "nameless", "items-not-a-list", "html", "cut-off"])
def test_retune_apply_against_a_server_that_is_not_kubernetes_is_one_line(tmp_path, prometheus, body,
                                                                          content_type, why):
    # KeyError: 'items' at selected_services.
    server = _server(body, content_type)
    try:
        path = kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{server.server_port}")
        prom = prometheus({})
        line = one_error_line(kpilot("retune", "--url", prom.url, "--namespace", "ns1", "--end", 1_700_000_000,
                                     "--over", "10m", "--replays", 1, "--apply", env=outside_a_pod(path)))
    finally:
        server.shutdown()
        server.server_close()
    assert line.startswith("kpilot: error: option --apply: cannot list Knative Services in 'ns1': "
                           "unexpected answer (") and why in line, line
    assert prom.queries == []


def test_from_prometheus_against_json_nested_too_deeply_is_one_line(tmp_path):
    # json recursed into a RecursionError traceback.
    server = _server(b"[" * 100_000 + b"]" * 100_000, "application/json")
    try:
        line = one_error_line(kpilot("trace", "from-prometheus", "--url", f"http://127.0.0.1:{server.server_port}",
                                     "--namespace", "ns", "--out", tmp_path / "out", "--since", "10m",
                                     "--end", 1_700_000_000))
    finally:
        server.shutdown()
        server.server_close()
    assert line.startswith("kpilot: error: option --url: ") and "did not answer with Prometheus's JSON" in line
    assert not (tmp_path / "out").exists()


# --- 3. values that overflowed numpy: its RuntimeWarning lines beside the result or the error ---

def test_an_azure_2021_duration_beyond_a_week_is_one_line_at_its_cell(tmp_path):
    p = tmp_path / "az.csv"
    p.write_text("app,func,end_timestamp,duration\na,f,1e308,1\nb,g,12,1e308\n")
    assert one_error_line(kpilot("trace", "inspect", p)) == (
        f"kpilot: error: {p}, line 3, column 4 (duration): duration 1e+308: at most 604800 s (a week) of work "
        "for one request; are durations in seconds?")
    p.write_text("app,func,end_timestamp,duration\na,f,1e308,1\nb,g,-1e308,1\n")
    assert "the requests span inf s: at most 3.162e+07 s (a year)" in one_error_line(kpilot("trace", "inspect", p))


def test_an_slo_beyond_the_simulators_limits_is_one_line(tmp_path):
    path = tmp_path / "sim.yaml"
    path.write_text("slo: {slowdown: 1.0e+308, offset_s: 1.0e+308}\n")
    line = one_error_line(kpilot("simulate", "--trace", SMALL, "--config", path))
    assert line == f"kpilot: error: {path}: field slo.slowdown: must be <= 1e+06 (the simulator's limit), got 1e+308"
    path.write_text("slo: {offset_s: 1.0e+308}\n")
    assert "field slo.offset_s: must be <= 3.16224e+07 (the simulator's limit), got 1e+308" in \
        one_error_line(kpilot("simulate", "--trace", SMALL, "--config", path))


AZURE_2019_DURATIONS = ("HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,"
                        + ",".join(f"percentile_Average_{p}" for p in (0, 1, 25, 50, 75, 99, 100)) + "\n")


@pytest.mark.parametrize("name, text, expected", [
    # Timestamps whose rebase overflowed (every reader subtracting the earliest).
    ("g.csv", "timestamp,duration\n1e308,1\n-1e308,1\n", "the requests span inf s: at most 3.162e+07 s"),
    ("b.csv", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
              "1e308,ChatGPT,1,1,2,API log\n-1e308,ChatGPT,1,1,2,API log\n", "the requests span inf s"),
    ("rc.csv", "time,requests\n-1e308,1\n1e308,1\n", "the requests span inf s"),
    # Counts beyond any total, which overflowed the sum or turned negative as int64 (a ValueError).
    ("rc.csv", "time,requests\n0,1e308\n60,1e308\n",
     "line 2, column 2 (requests): request count 1e+308: at most 50,000,000 requests in all (memory)"),
    ("hw.csv", ",day,time,f1\n0,0,0,1e30\n1,0,60,3\n",
     "line 2, column 4 (f1): request count 1e+30: at most 50,000,000 requests in all (memory)"),
    ("hw.csv", ",day,time,f1\n0,1e308,0,1\n1,1e308,60,3\n", "line 2, column 2 (day): day 1e+308: at most"),
    ("rc.csv", "time,requests,mean_duration_s\n0,3,1e308\n60,2,1e308\n",
     "line 2, column 3 (mean_duration_s): mean duration 1e+308 s: at most 604800 s (a week)"),
])
def test_values_that_overflowed_are_one_error_without_a_warning(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    assert expected in message(path)


def test_azure_2019_counts_and_durations_that_overflowed_are_one_error_without_a_warning(tmp_path):
    invocations = tmp_path / "invocations.csv"
    invocations.write_text("HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f,http,1e30,1\n")
    durations = tmp_path / "durations.csv"
    durations.write_text(AZURE_2019_DURATIONS + "o,a,f,100,1,100,100,100,100,100,100,100,100,100\n")
    assert message(invocations) == (f"{invocations}, line 2, column 5 (1): invocation count 1e+30: at most "
                                    "50,000,000 requests in all (memory)")
    invocations.write_text("HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f,http,3,1\no,a,g,http,1,1\n")
    durations.write_text(AZURE_2019_DURATIONS + "o,a,f,100,1,100,100,100,100,100,100,100,100,1e308\n")
    assert message(invocations) == (f"{durations}, line 2, column 14 (percentile_Average_100): "
                                    "percentile_Average_100 1e+308: at most 6.048e+08 ms (a week) of work for "
                                    "one request")
    # Counts of 1e308 weight the pooled row (function g has none of its own) without overflowing it.
    durations.write_text(AZURE_2019_DURATIONS + "o,a,f,100,1e308,100,100,100,100,100,100,100,100,100\n"
                         "o,a,h,100,1e308,100,100,100,100,100,100,100,100,100\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        trace = load_trace(invocations)
    assert len(trace) == 6 and trace.service.max() == pytest.approx(0.1)


def test_a_cold_start_component_beyond_a_week_is_one_error_without_a_warning(tmp_path):
    path = tmp_path / "cs.csv"
    path.write_text(",totalCost_cold_start,podAllocationCost,deployCodeCost,deployDependencyCost,schedulingCost\n"
                    "0,0.5,1e308,1e308,0.1,0.1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(TraceError) as info:
            load_coldstart_table(path)
    assert str(info.value) == (f"{path}, line 2, column 3 (podAllocationCost): podAllocationCost 1e+308: at most "
                               "604800 s (a week) for one cold start; are the times in seconds?")


# --- 4. a header naming a column twice ---

def test_a_function_column_named_twice_is_one_line_at_the_header(tmp_path):
    # polars' "projections contained duplicate output name 'f1'. It's possible that ..." with no line.
    path = tmp_path / "hw.csv"
    path.write_text(",day,time,f1,f1\n0,0,0,1,2\n1,0,60,3,4\n")
    assert one_error_line(kpilot("trace", "inspect", path)) == (
        f"kpilot: error: {path}, line 1: column 'f1' appears more than once in the header (columns 4, 5)")
    path.write_text(",day,time,f1,f2, f1\n0,0,0,1,2,3\n")
    assert message(f"{path}?top=1") == (f"{path}, line 1: column 'f1' appears more than once in the header "
                                        "(columns 4, 6)")


# --- 5. compressed or binary input ---

def test_a_compressed_trace_is_named_not_echoed(tmp_path):
    # Its bytes came out in the "unknown trace format (header: ...)" line, control characters and all.
    path = tmp_path / "x.csv.gz"
    path.write_bytes(gzip.compress((FIXTURES / "generic_duration.csv").read_bytes()))
    assert one_error_line(kpilot("trace", "inspect", path)) == (
        f"kpilot: error: {path}: not a text CSV (gzip-compressed: decompress it first)")
    binary = tmp_path / "x.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    assert message(binary) == f"{binary}: not a text CSV (compressed or binary?)"
    utf16 = tmp_path / "u16.csv"
    utf16.write_text("timestamp,duration\n0,1\n", encoding="utf-16")
    assert message(utf16) == f"{utf16}: not a text CSV (UTF-16 text: save it as UTF-8)"


def test_a_compressed_cold_start_table_is_named_not_echoed(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress((FIXTURES / "huawei_coldstart.csv").read_bytes()))
    assert one_error_line(kpilot("simulate", "--trace", SMALL, "--cold-start", path)) == (
        f"kpilot: error: option --cold-start: {path}: not a text CSV (gzip-compressed: decompress it first)")


def test_an_unknown_format_names_the_option_not_the_file():
    trace = FIXTURES / "azure2021_unsorted.csv"
    for command in (("trace", "inspect", "--format", "nope", str(trace)),
                    ("simulate", "--trace", str(trace), "--format", "nope")):
        line = one_error_line(kpilot(*command))
        assert line.startswith("kpilot: error: option --format: unknown format 'nope'; known formats: burstgpt,")


def test_epoch_milliseconds_are_refused_unless_their_unit_is_given(tmp_path):
    # Read as seconds, an hour of traffic became 41 days and the durations 1000x too long.
    f = tmp_path / "access.csv"
    f.write_text("timestamp,duration\n1764000000000,250\n1764000000500,125\n1764000003600,1000\n")
    line = one_error_line(kpilot("trace", "inspect", f))
    assert line == (f"kpilot: error: {f}: timestamps from 1764000000000 are past the year 5000 as seconds: give "
                    "their unit, e.g. access.csv?unit=ms (durations are read in it too)")
    trace = load_trace(f"{f}?unit=ms&spread=0")
    assert list(trace.arrivals) == pytest.approx([0.0, 0.5, 3.6]) and list(trace.service) == pytest.approx([0.25, 0.125, 1.0])
    assert "unit='minutes': expected one of s, ms, us, ns" in message(f"{f}?unit=minutes")


def test_a_header_in_another_case_names_the_format_it_would_be(tmp_path):
    f = tmp_path / "log.csv"
    f.write_text("Timestamp,Duration\n0,0.1\n1,0.2\n")
    line = one_error_line(kpilot("trace", "inspect", f))
    assert line == (f"kpilot: error: {f}, line 1: unknown trace format (header: Timestamp, Duration): column names "
                    "are matched exactly; written as timestamp they would be the generic format's")
    # A format whose columns have capitals is named too (the hint compared them lower-cased with capitals).
    llm = tmp_path / "llm.csv"
    llm.write_text("Timestamp,contexttokens,generatedtokens\n2023-11-16 18:15:46.6805900,374,44\n")
    assert "written as ContextTokens, GeneratedTokens, TIMESTAMP they would be the azure-llm format's" in \
        one_error_line(kpilot("trace", "inspect", llm))


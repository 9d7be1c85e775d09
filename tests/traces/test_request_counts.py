"""Request counts per bin (the request-counts format) and `kpilot trace from-prometheus`, against a
fake Prometheus on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fake_prometheus import prometheus  # noqa: F401  (fixture)

from kpilot.errors import TraceError
from kpilot.traces import load_trace

KPILOT = Path(sys.executable).with_name("kpilot")
T0 = 1_699_999_980.0          # unix seconds, a whole minute: 22:13:00 UTC


def write(tmp_path, text, name="counts.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- the format ---

def test_each_bins_requests_arrive_within_it_at_its_mean_duration(tmp_path):
    # Three per-minute bins, the empty one left out; cv=0 keeps every request at its bin's mean.
    path = write(tmp_path, f"time,requests,mean_duration_s\n{T0:.0f},3,0.2\n{T0 + 120:.0f},2,1.5\n"
                           f"{T0 + 180:.0f},0,\n")
    trace = load_trace(f"{path}?cv=0", seed=4)
    assert trace.meta["format"] == "request-counts" and len(trace) == 5
    assert trace.meta["bin_s"] == 60 and trace.meta["start_time_of_day_s"] == T0 % 86400
    first, second = trace.arrivals < 60, (trace.arrivals >= 120) & (trace.arrivals < 180)
    assert first.sum() == 3 and second.sum() == 2
    assert np.allclose(trace.service[first], 0.2) and np.allclose(trace.service[second], 1.5)
    assert trace.meta["span_s"] == 240
    # Same file and seed, same trace; another seed, other arrivals.
    assert np.array_equal(load_trace(f"{path}?cv=0", seed=4).arrivals, trace.arrivals)
    assert not np.array_equal(load_trace(f"{path}?cv=0", seed=5).arrivals, trace.arrivals)


def test_bins_without_a_mean_take_the_files_weighted_mean_or_service(tmp_path):
    path = write(tmp_path, "time,requests,mean_duration_s\n0,1,1.0\n60,3,3.0\n120,4,\n")
    trace = load_trace(f"{path}?cv=0")
    assert np.allclose(trace.service[trace.arrivals >= 120], (1 * 1.0 + 3 * 3.0) / 4)
    no_column = write(tmp_path, "time,requests\n0,2\n60,2\n", "plain.csv")
    assert np.allclose(load_trace(f"{no_column}?cv=0").service, 0.1)
    assert np.allclose(load_trace(f"{no_column}?cv=0&service=0.5").service, 0.5)
    # With the default cv=1 the durations vary around the bin's mean.
    many = write(tmp_path, "time,requests,mean_duration_s\n0,4000,2.0\n", "many.csv")
    service = load_trace(f"{many}?bin=60").service
    assert service.std() > 1.0 and service.mean() == pytest.approx(2.0, rel=0.1)


@pytest.mark.parametrize("text, expect", [
    ("time,requests\n0,1.5\n60,1\n", "line 2, column 2 (requests): request count 1.5 is not a non-negative integer"),
    ("time,requests\n0,1\n60,-1\n", "line 3, column 2 (requests): request count -1"),
    ("time,requests\n60,1\n0,1\n", "line 3, column 1 (time): time 0 does not come after"),
    ("time,requests\n0,x\n", "line 2, column 2 (requests): non-numeric value 'x'"),
    ("time,requests,mean_duration_s\n0,1,0\n60,1,1\n", "line 2, column 3 (mean_duration_s): mean duration 0"),
    ("time,requests,mean_duration_s\n0,1,slow\n60,1,1\n", "line 2, column 3 (mean_duration_s): non-numeric"),
    ("time,requests\n0,0\n60,0\n", "no requests in any bin"),
    ("time,requests\n0,3\n", "one row: cannot tell the bin width"),
    ("time,requests\n0,1e12\n60,1\n", "1,000,000,000,001 requests in all: at most"),
])
def test_bad_rows_are_one_error_naming_line_and_column(tmp_path, text, expect):
    with pytest.raises(TraceError) as err:
        load_trace(write(tmp_path, text))
    assert expect in str(err.value) and "counts.csv" in str(err.value)


# --- from Prometheus ---

def export(url, out, *extra):
    return subprocess.run([str(KPILOT), "trace", "from-prometheus", "--url", url, "--namespace", "shop",
                           "--out", str(out), "--since", "10m", "--end", f"{T0 + 600:.0f}", *map(str, extra)],
                          capture_output=True, text=True, timeout=120)


SHOP = {
    # Counts over 60 s bins ending at T0 + 60 ... : fractional, as a backend that extrapolates (as
    # increase() did) returns them; Prometheus itself now answers whole counts.
    ("count", "cart"): [(T0 + 60, 2.9), (T0 + 120, 0.2), (T0 + 180, 40.1), (T0 + 540, 5.0)],
    ("sum", "cart"): [(T0 + 60, 0.58), (T0 + 120, 0.01), (T0 + 180, 4.01), (T0 + 540, 1.0)],
    ("count", "search"): [(T0 + 60, 10.0)],
    ("sum", "search"): [(T0 + 60, 25.0)],
}


def test_each_services_traffic_becomes_a_trace_kpilot_tune_reads(prometheus, tmp_path):
    prom = prometheus(SHOP)
    out = tmp_path / "traces"
    token = write(tmp_path, "s3cret\n", "token")
    proc = export(prom.url, out, "--token-file", token)
    assert proc.returncode == 0, proc.stderr
    # Two range queries for the namespace, grouped by Service, stepped by the bin width, over the
    # ten whole minutes before --end.
    assert len(prom.queries) == 2 and all(q["path"] == "/api/v1/query_range" for q in prom.queries)
    assert all('k8s_namespace_name="shop"' in q["query"] and "by (kn_service_name)" in q["query"]
               and "offset 60s)" in q["query"] and q["step"] == "60" for q in prom.queries)
    assert {(q["start"], q["end"]) for q in prom.queries} == {(f"{T0 + 60:.0f}", f"{T0 + 600:.0f}")}
    assert all(q["auth"] == "Bearer s3cret" for q in prom.queries)
    # Each series' growth between its latest samples at the bin's end and a bin earlier, so the
    # bins add up to what was served (increase() extrapolated: fractional counts); a series with no
    # sample a bin earlier (a new pod: what it served before its first scrape) or one lower than
    # before (a restarted queue-proxy) counted from zero (Prometheus's engine:
    # tests/test_promql_promtool.py).
    assert all("[300s]) - last_over_time(kn_serving" in q["query"] and "increase(" not in q["query"]
               and "[300s] offset 60s)) unless (resets(kn_serving" in q["query"]
               and "[60s]) > 0 or min_over_time(kn_serving" in q["query"] for q in prom.queries)
    # A sample at t covers (t - 60, t]; every bin is a row, counts rounded (0.2 requests: none),
    # the mean taken before rounding.
    rows = (out / "cart.csv").read_text().splitlines()
    assert rows[0] == "time,requests,mean_duration_s" and len(rows) == 11
    assert rows[1:4] == [f"{T0:.0f},3,0.2", f"{T0 + 60:.0f},0,", f"{T0 + 120:.0f},40,0.1"]
    assert rows[9] == f"{T0 + 480:.0f},5,0.2"
    assert set(rows[4:9] + rows[10:]) == {f"{T0 + 60 * k:.0f},0," for k in (3, 4, 5, 6, 7, 9)}
    assert "cart" in proc.stdout and "search" in proc.stdout
    # What it wrote reads back with its own bins and the Services' idle time.
    cart = load_trace(f"{out / 'cart.csv'}?cv=0")
    assert cart.meta["bin_s"] == 60 and cart.meta["span_s"] == 600 and len(cart) == 48
    assert np.allclose(cart.service[cart.arrivals < 60], 0.2)
    search = load_trace(f"{out / 'search.csv'}?cv=0")
    assert len(search) == 10 and np.allclose(search.service, 2.5) and search.meta["bin_s"] == 60
    tuned = subprocess.run([str(KPILOT), "tune", "--trace", str(out / "cart.csv"), "--replays", "1",
                            "--warmup", "0", "--json"], capture_output=True, text=True, timeout=300)
    assert tuned.returncode == 0, tuned.stderr
    (row,) = json.loads(tuned.stdout)
    assert row["base_target"] > 0 and row["band"] in (1.0, 1.5) and row["service"] == "cart"
    table = subprocess.run([str(KPILOT), "tune", "--trace", str(out / "cart.csv"), "--replays", "1",
                            "--warmup", "0"], capture_output=True, text=True, timeout=300)
    assert (f"kubectl annotate ksvc cart -n shop --overwrite kpilot.dev/base-target={row['base_target']:g} "
            f"kpilot.dev/band={row['band']:g}") in table.stdout


def test_a_service_with_more_requests_than_kpilot_replays_is_written_and_named_in_a_note(prometheus, tmp_path):
    # 60 M requests in a bin: written (it is the Service's data) but tune would refuse the file;
    # the run said nothing of it.
    prom = prometheus({("count", "hot"): [(T0 + 60, 6e7)], ("sum", "hot"): [(T0 + 60, 6e5)], **SHOP})
    proc = export(prom.url, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"kpilot: note: {tmp_path / 'out' / 'hot.csv'} holds 60,000,000 requests, more than kpilot replays "
        "(50,000,000): tune and evaluate will refuse it; read less of it with --since"]
    assert (tmp_path / "out/hot.csv").read_text().splitlines()[1] == f"{T0:.0f},60000000,0.01"
    assert (tmp_path / "out/cart.csv").exists()


def test_fractional_counts_are_rounded_so_that_a_services_total_is_kept(prometheus, tmp_path):
    # A backend that extrapolates (as increase() did: one request under 15 s scrapes read 1.33, one
    # between two windows 0.4 in each). Rounded bin by bin this sparse Service read 2 requests; it
    # served 4.
    counts = [1.33, 0.0, 1.33, 0.4, 0.4, 0.4]
    prom = prometheus({("count", "sparse"): [(T0 + 60 * (k + 1), c) for k, c in enumerate(counts)],
                       ("sum", "sparse"): [(T0 + 60 * (k + 1), 0.5 * c) for k, c in enumerate(counts)]})
    proc = export(prom.url, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split(",") for line in (tmp_path / "out/sparse.csv").read_text().splitlines()[1:]]
    assert [int(r[1]) for r in rows] == [1, 0, 2, 0, 0, 1, 0, 0, 0, 0]   # 1.33, 2.66, 3.06, 3.46, 3.86
    assert sum(int(r[1]) for r in rows) == round(sum(counts)) == 4
    assert {r[2] for r in rows if int(r[1])} == {"0.5"}         # sum / count before rounding


def test_the_token_goes_only_to_prometheus_own_origin(prometheus, tmp_path):
    # A proxy in front of Prometheus that redirects elsewhere (a login page) must not get the
    # token; a redirect within the same origin (a path prefix) keeps it.
    import http.server
    import threading

    elsewhere = prometheus(SHOP)
    seen = []
    answer = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"kn_service_name": "cart"}, "values": [[T0 + 60, "3"]]}]}}).encode()

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/away/"):
                self.send_response(302)
                self.send_header("Location", elsewhere.url + self.path[len("/away"):])
            elif not self.path.startswith("/prom/"):
                self.send_response(302)
                self.send_header("Location", "/prom" + self.path)
            else:
                seen.append(self.headers.get("Authorization"))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
            self.end_headers()
            if self.path.startswith("/prom/"):
                self.wfile.write(answer)

        def log_message(self, *args):
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    token = write(tmp_path, "s3cret\n", "token")
    try:
        base = f"http://127.0.0.1:{proxy.server_port}"
        proc = export(f"{base}/away", tmp_path / "a", "--token-file", token)
        assert proc.returncode == 0, proc.stderr
        assert len(elsewhere.queries) == 2 and all(q["auth"] is None for q in elsewhere.queries)
        proc = export(base, tmp_path / "b", "--token-file", token)
        assert proc.returncode == 0, proc.stderr
        assert seen == ["Bearer s3cret"] * 2
    finally:
        proxy.shutdown()


def test_a_token_file_of_more_than_one_token_is_refused_without_echoing_it(prometheus, tmp_path):
    prom = prometheus(SHOP)
    for text in ("first-SECRET\nsecond\n", "with space-SECRET\n", "\n"):
        token = write(tmp_path, text, "token")
        proc = export(prom.url, tmp_path / "out", "--token-file", token)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and "SECRET" not in proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"kpilot: error: option --token-file: {str(token)!r} must hold one bearer token: one line, "
            "no spaces or control characters"]
    assert not prom.queries


def test_bins_are_whole_steps_on_the_steps_grid(prometheus, tmp_path):
    # An --end inside a minute ends at the minute before it; the same bins as an aligned --end.
    prom = prometheus(SHOP)
    proc = subprocess.run([str(KPILOT), "trace", "from-prometheus", "--url", prom.url, "--namespace", "shop",
                           "--out", str(tmp_path / "out"), "--since", "10m", "--end", f"{T0 + 637.5}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert {(q["start"], q["end"]) for q in prom.queries} == {(f"{T0 + 60:.0f}", f"{T0 + 600:.0f}")}
    assert (tmp_path / "out/cart.csv").read_text().splitlines()[1] == f"{T0:.0f},3,0.2"


def test_by_revision_groups_by_the_revision_label(prometheus, tmp_path):
    prom = prometheus({("count", "cart-00002"): [(T0 + 60, 5)], ("sum", "cart-00002"): [(T0 + 60, 1)]},
                      label="kn_revision_name")
    proc = export(prom.url, tmp_path / "out", "--by", "revision")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out/cart-00002.csv").read_text().splitlines()[1] == f"{T0:.0f},5,0.2"
    # A revision is no Service: kpilot tune prints no `kubectl annotate ksvc cart-00002`.
    tuned = subprocess.run([str(KPILOT), "tune", "--trace", str(tmp_path / "out/cart-00002.csv"), "--replays", "1",
                            "--warmup", "0", "--last", "1"], capture_output=True, text=True, timeout=300)
    assert tuned.returncode == 0, tuned.stderr
    assert "ksvc cart-00002" not in tuned.stdout
    assert "is revision cart-00002's traffic (from-prometheus --by revision)" in tuned.stderr
    # The same folder then read by Service: those files name their Service, and its namespace.
    prom = prometheus(SHOP)
    assert export(prom.url, tmp_path / "out").returncode == 0
    sources = json.loads((tmp_path / "out/from-prometheus.json").read_text())["files"]
    assert sources == {"cart-00002.csv": {"by": "revision", "namespace": "shop"},
                       "cart.csv": {"by": "service", "namespace": "shop"},
                       "search.csv": {"by": "service", "namespace": "shop"}}
    tuned = subprocess.run([str(KPILOT), "tune", "--trace", str(tmp_path / "out/search.csv"), "--replays", "1",
                            "--warmup", "0", "--last", "1", "--json"], capture_output=True, text=True, timeout=300)
    assert tuned.returncode == 0, tuned.stderr
    (row,) = json.loads(tuned.stdout)
    assert row["service"] == "search" and row["namespace"] == "shop" and "revision" not in row


@pytest.mark.parametrize("setup, args, expect", [
    ({"status": 500, "body": {"status": "error", "error": "query timed out"}}, (),
     "option --url: Prometheus answered HTTP 500: query timed out"),
    ({"body": {"status": "error", "error": "parse error"}}, (), "Prometheus query failed: parse error"),
    ({"body": {"status": "success", "data": {"resultType": "matrix", "result": []}}}, (),
     "option --namespace: no requests in namespace 'shop'"),
    ({}, ("--since", "ten minutes"), "option --since: expected a positive duration"),
    ({}, ("--since", "30d", "--step", "60"), "option --since: 43,200 bins"),
    ({}, ("--since", "90s"), "option --since: expected at least two --step bins (120 s), got 90s"),
    ({}, ("--since", "9" * 310 + "s"), "s' is inf s: at most 3.162e+07 s (a year)"),     # an OverflowError
    ({}, ("--by", "pod"), "option --by: expected one of service, revision"),
    ({}, ("--step", "45.5"), "option --step: must be a whole number of seconds"),
    ({"series": {("count", "../escaped"): [(T0 + 60, 3)]}}, (), "kn_service_name='../escaped', which is not"),
    ({}, ("--token-file", "/nonexistent/token"), "option --token-file: cannot read"),
    ({}, ("--step", "inf"), "option --step: must be a whole number of seconds"),
    # Well-formed JSON that is not a range query's answer: one line, not a traceback.
    ({"body": {"status": "success", "data": "oops"}}, (), "not a range query's matrix (expected a matrix, got 'str')"),
    ({"body": {"status": "success", "data": {"resultType": "matrix", "result": ["oops"]}}}, (),
     "option --url: Prometheus's answer is not a range query's matrix"),
    ({"body": {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"kn_service_name": "cart"}, "values": [[T0 + 60, "abc"]]}]}}}, (),
     "not a range query's matrix (could not convert string to float: 'abc')"),
    ({"body": {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"kn_service_name": "cart"}, "values": [[T0 + 60]]}]}}}, (), "not a range query's matrix"),
    ({"body": {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"kn_service_name": 5}, "values": [[T0 + 60, "1"]]}]}}}, (), "kn_service_name is 5, not a string"),
    ({"series": {("count", "cart"): [(T0 + 60, 1e300)]}}, (), "cart served 1e+300 requests in the 60 s"),
])
def test_failures_are_one_line_and_write_nothing(prometheus, tmp_path, setup, args, expect):
    prom = prometheus(**{"series": SHOP, **setup})
    proc = export(prom.url, tmp_path / "out", *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and expect in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("url, expect", [
    ("http://127.0.0.1:9", "option --url: cannot reach Prometheus at http://127.0.0.1:9"),
    ("http://127.0.0.1:abc", "option --url: cannot reach Prometheus"),
    ("http://[::1", "option --url: not a URL"),
    ("prometheus:9090", "option --url: expected an http:// or https:// URL"),
])
def test_a_bad_or_unreachable_url_is_one_line(tmp_path, url, expect):
    proc = export(url, tmp_path / "out")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and expect in proc.stderr, proc.stderr


def test_traces_written_keep_their_mode_and_a_folder_in_the_way_writes_nothing(prometheus, tmp_path):
    """A rewritten trace keeps the permissions it had; a new one gets the umask's (mkstemp's own
    0600 would hide it from the team). A folder named like a Service's trace is refused before any
    trace is written."""
    prom = prometheus(SHOP)
    out = tmp_path / "out"
    assert export(prom.url, out).returncode == 0
    assert (out / "cart.csv").stat().st_mode & 0o777 == 0o666 & ~_umask()
    (out / "cart.csv").chmod(0o640)
    assert export(prom.url, out).returncode == 0
    assert (out / "cart.csv").stat().st_mode & 0o777 == 0o640
    clash = tmp_path / "clash"
    (clash / "search.csv").mkdir(parents=True)
    proc = export(prom.url, clash)
    assert proc.returncode == 2 and proc.stderr.strip().endswith(f"{str(clash / 'search.csv')!r} is a folder, not a file")
    assert sorted(p.name for p in clash.iterdir()) == ["search.csv"]


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_output_that_may_not_be_replaced_stops_the_run_before_any_file_is_written(prometheus, tmp_path):
    # A pipe named as one Service's file was refused only when its turn came: the others were written.
    import os

    prom = prometheus(series=SHOP)
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "search.csv")
    proc = export(prom.url, out)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().endswith("search.csv' is not a regular file (a device, pipe or socket)")
    assert sorted(p.name for p in out.iterdir()) == ["search.csv"]        # cart.csv not written

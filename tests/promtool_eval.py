"""PromQL evaluated by Prometheus's own engine, offline: `promtool test rules` over synthetic
scraped series (tests/test_promql_promtool.py).

promtool compares what each query returns at a time with expected samples, exactly; asked for a
sample no query returns, it prints every query's actual result, which is read back here."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

import yaml

Series = dict[str, dict[int, "float | str"]]        # selector text -> {second: value or "stale"}
_NEVER = '{__kpilot_never="1"}'
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_SAMPLE = re.compile(r"(\{[^}]*\}) (\S+?)(?:, |$)")


def evaluate(promtool: str, series: Series, queries: list[tuple[str, int]]) -> list[dict[tuple, float]]:
    """Each (query, time in s) evaluated over `series`, sampled on a 1 s grid: a second without a
    value was not scraped, "stale" is a staleness marker (a failed scrape, a pod gone). Per query,
    {sorted (label, value) pairs: sample value}."""
    horizon = max(t for points in series.values() for t in points)
    inputs = [{"series": selector,
               "values": " ".join(_token(points.get(t)) for t in range(horizon + 1))}
              for selector, points in series.items()]
    tests = [{"interval": "1s", "input_series": inputs,
              "promql_expr_test": [{"expr": q, "eval_time": f"{t}s",
                                    "exp_samples": [{"labels": _NEVER, "value": -1}]} for q, t in queries]}]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tests.yml"
        path.write_text(yaml.safe_dump({"evaluation_interval": "1s", "tests": tests}, width=1 << 30))
        proc = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True,
                              timeout=300)
    out = proc.stdout + proc.stderr
    # One block per query, in order: expr: "<Go-quoted query>", time: ..., then exp: and got: lines.
    blocks = re.split(r"\n\s*expr: ", out)[1:]
    if len(blocks) != len(queries):
        raise RuntimeError(f"promtool answered {len(blocks)} results for {len(queries)} queries:\n"
                           f"{out[-3000:]}")
    results = []
    for (query, _), block in zip(queries, blocks):
        quoted = re.match(r'("(?:[^"\\]|\\.)*"), time: ', block)
        got = re.search(r"\n\s*got: (.*)", block)
        if not (quoted and json.loads(quoted.group(1)) == query and got):
            raise RuntimeError(f"unexpected promtool output for {query}:\n{block[:2000]}")
        samples = {}
        if got.group(1).strip() != "nil":
            for labels, value in _SAMPLE.findall(got.group(1).strip()):
                samples[tuple(sorted(_LABEL.findall(labels)))] = float(value)
        results.append(samples)
    return results


def by(label: str, samples: dict[tuple, float]) -> dict[str, float]:
    """`samples` keyed by one label's value (a query grouped by that label)."""
    return {dict(key)[label]: value for key, value in samples.items()}


def _token(value) -> str:
    if value is None:
        return "_"
    return value if value == "stale" else repr(float(value))

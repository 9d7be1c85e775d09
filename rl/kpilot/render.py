"""Terminal tables shared by simulate, evaluate and demo, and the console they print on."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table


def out_console() -> Console:
    """stdout console; wide enough for the metrics tables even when piped (rich would cut them
    at 80 columns in a file)."""
    console = Console()
    return console if console.is_terminal and console.width >= 150 else Console(width=160)

COLUMNS = (
    ("policy", "policy", "{}"),
    ("requests", "requests", "{:,}"),
    ("latency_p50_s", "p50 s", "{:.3f}"),
    ("latency_p95_s", "p95 s", "{:.3f}"),
    ("latency_p99_s", "p99 s", "{:.3f}"),
    ("slo_violation_rate", "SLO viol.", "{:.2%}"),
    ("cold_starts", "cold starts", "{:,}"),
    ("pod_seconds", "pod-s", "{:,.0f}"),
    ("mean_pods", "mean pods", "{:.1f}"),
    ("max_pods", "max pods", "{:,}"),
    ("panic_seconds", "panic s", "{:,.0f}"),
    ("failed", "failed", "{:,}"),
    ("score", "score", "{:.4f}"),
)


def metrics_table(rows: list[dict], title: str = "") -> Table:
    """One row per replay; columns a row lacks (e.g. score) are left out."""
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    table = Table(title=title)
    for key, header, _ in cols:
        table.add_column(header, justify="left" if key == "policy" else "right")
    for r in rows:
        table.add_row(*["" if key not in r else "–" if r[key] is None else fmt.format(r[key])
                        for key, _, fmt in cols])
    return table


def trace_labels(traces) -> dict[str, str]:
    """How each trace is named in a table: its file name (with its options), or a synthetic spec as
    given; where two files share a name, as many of their folders as set them apart."""
    traces = list(dict.fromkeys(traces))
    parts = {t: ([t] if t.startswith("synthetic:") else t.replace("\\", "/").split("/")) for t in traces}
    depth = {t: 1 for t in traces}
    while True:
        label = {t: "/".join(parts[t][-depth[t]:]) for t in traces}
        shared = Counter(label.values())
        clash = {t for t in traces if shared[label[t]] > 1 and depth[t] < len(parts[t])}
        if not clash:
            return label
        for t in clash:
            depth[t] += 1

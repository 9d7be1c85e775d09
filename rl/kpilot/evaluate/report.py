"""Rendering evaluation rows: the terminal table, PNG plots and a Markdown summary.

Ratios are of costs (cost = -score, per request): `vs KPA` = 1 - cost / KPA's cost (the saving,
positive is better); `vs best static` = cost / best static target's cost (<= 1 means no worse).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.table import Table

from kpilot.env.reward import describe
from kpilot.render import trace_labels


def _by_trace(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["trace"], []).append(r)
    return out


def ratios(group: list[dict]) -> dict[str, dict]:
    """policy -> {cost_vs_kpa, saving_vs_kpa, cost_vs_best_static} within one trace's rows."""
    kpa = next((r for r in group if r["policy"] == "kpa"), None)
    best = next((r for r in group if r.get("best_static")), None)
    out = {}
    for r in group:
        c = -r["score"]
        vs_kpa = (c / -kpa["score"]) if kpa and kpa["score"] != 0 else None
        out[r["policy"]] = {
            "cost_vs_kpa": vs_kpa,
            "saving_vs_kpa": None if vs_kpa is None else 1.0 - vs_kpa,
            "cost_vs_best_static": (c / -best["score"]) if best and best["score"] != 0 else None,
        }
    return out


def _no_worse(cost: float, reference: float) -> bool:
    """cost <= reference, forgiving float rounding (a tie with the best static target counts)."""
    return cost <= reference * (1.0 + 1e-9)


def _geometric_mean(values: list[float]) -> float | None:
    return float(np.exp(np.mean(np.log(values)))) if values else None


def overall(rows: list[dict]) -> dict[str, dict]:
    """Across traces, for each compared policy (not the static grid): the geometric mean of its cost
    ratios against KPA defaults and against each trace's best static target (the README's "all"
    rows), how many traces it is no worse than the best static target on, and how many it costs
    more than KPA defaults on. Traces without the baseline (or with a zero cost) are left out."""
    per: dict[str, dict] = {}
    for group in _by_trace(rows).values():
        for name, rat in ratios(group).items():
            if name.startswith("static:"):
                continue
            acc = per.setdefault(name, {"vs_kpa": [], "vs_best": []})
            if rat["cost_vs_kpa"] and name != "kpa":      # None or 0 (a free replay) has no log
                acc["vs_kpa"].append(rat["cost_vs_kpa"])
            if rat["cost_vs_best_static"]:
                acc["vs_best"].append(rat["cost_vs_best_static"])
    out = {}
    for name, acc in per.items():
        vs_kpa, vs_best = _geometric_mean(acc["vs_kpa"]), _geometric_mean(acc["vs_best"])
        out[name] = {
            "saving_vs_kpa": None if vs_kpa is None else 1.0 - vs_kpa,
            "cost_vs_best_static": vs_best,
            "compared_to_best_static": len(acc["vs_best"]),
            "no_worse_than_best_static": sum(_no_worse(x, 1.0) for x in acc["vs_best"]),
            "compared_to_kpa": len(acc["vs_kpa"]),
            "worse_than_kpa": sum(not _no_worse(x, 1.0) for x in acc["vs_kpa"]),
        }
    return out


def seeds_no_worse(group: list[dict], row: dict) -> tuple[int, int] | None:
    """With several replays: on how many simulator seeds `row` cost no more than the trace's best
    static target (chosen on the mean), of how many. A mean ratio near 1 is noise unless this agrees."""
    best = next((r for r in group if r.get("best_static")), None)
    mine, theirs = row.get("seed_scores"), (best or {}).get("seed_scores")
    if not mine or not theirs or len(mine) != len(theirs):
        return None
    return sum(_no_worse(-m, -t) for m, t in zip(mine, theirs)), len(mine)


def _overall_lines(agg: dict[str, dict]) -> list[str]:
    lines = []
    for name, o in agg.items():
        parts = []
        if o["compared_to_best_static"]:
            parts.append(f"no worse than the best static target on {o['no_worse_than_best_static']} "
                         f"of {o['compared_to_best_static']} traces")
        if o["compared_to_kpa"]:
            parts.append(f"costs more than KPA defaults on {o['worse_than_kpa']} of {o['compared_to_kpa']}")
        if parts:
            lines.append(f"{name}: " + "; ".join(parts))
    return lines


def _fmt(x, spec):
    return "" if x is None else format(x, spec)


def _seconds(x) -> str:
    """A latency, or a dash where no request finished."""
    return "–" if x is None else f"{x:.2f}"


def _count(x) -> str:
    """A count, or the mean of counts over replays (one decimal)."""
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"


def _vs_best(rat: dict, group: list[dict], r: dict) -> str:
    """The cost ratio to the best static target, with "(k/n)" seeds no worse for compared policies."""
    text = _fmt(rat[r["policy"]]["cost_vs_best_static"], ".3f")
    agree = None if r["policy"].startswith("static:") else seeds_no_worse(group, r)
    return text if agree is None or not text else f"{text} ({agree[0]}/{agree[1]})"


def _label(r: dict) -> str:
    """The policy as shown: `static-tuned` names the target it chose, `rl-in-band` its band,
    `rl-or-tuned` its choice, `static-rolling` the targets it moved through."""
    if "targets" in r:
        tuned = [t for t in r["targets"] if t is not None]
        moves = [t for i, t in enumerate(tuned) if i == 0 or t != tuned[i - 1]]
        shown = moves if len(moves) <= 4 else moves[:2] + ["…"] + moves[-1:]
        extra = f" ({'→'.join(t if isinstance(t, str) else f'{t:g}' for t in shown)})" if moves else ""
    elif "chose" in r:
        extra = f" ({r['chose']})"
    elif r.get("band"):
        extra = f" ({r['target']:g} x/÷ {r['band']:g})"
    else:
        extra = f" ({r['target']:g})" if "tuned_on" in r else ""
    name = r["policy"] + extra
    return name + (" (best static)" if r.get("best_static") else "")


def summary_table(rows: list[dict]) -> Table:
    table = Table(title="kpilot evaluate: request-level replays (score = -cost per request, higher is better)",
                  caption_justify="left")
    for name, justify in (("trace", "left"), ("policy", "left"), ("score", "right"), ("vs KPA", "right"),
                          ("vs best static", "right"), ("SLO viol.", "right"), ("p95 s", "right"),
                          ("cold starts", "right"), ("mean pods", "right"), ("requests", "right")):
        # A long trace name wraps rather than ending in "…": seed=1 and seed=2 must stay apart.
        table.add_column(name, justify=justify, overflow="fold" if name == "trace" else "ellipsis")
    groups = _by_trace(rows)
    labels = trace_labels(groups)
    for trace, group in groups.items():
        rat = ratios(group)
        label = labels[trace]
        for i, r in enumerate(group):
            name = _label(r)
            style = "bold" if r["policy"].startswith(("rl:", "rule:")) or r.get("best_static") else None
            table.add_row(label if i == 0 else "", name, f"{r['score']:.4f}",
                          _fmt(rat[r["policy"]]["saving_vs_kpa"], "+.1%"),
                          _vs_best(rat, group, r),
                          f"{r['slo_violation_rate']:.2%}", _seconds(r['latency_p95_s']),
                          _count(r['cold_starts']), f"{r['mean_pods']:.1f}", f"{r['requests']:,}", style=style)
        table.add_section()
    traces = len(_by_trace(rows))
    if traces > 1:
        agg = overall(rows)
        for i, (name, o) in enumerate(agg.items()):
            table.add_row(f"all {traces} traces (geometric mean)" if i == 0 else "", name, "",
                          _fmt(o["saving_vs_kpa"], "+.1%"), _fmt(o["cost_vs_best_static"], ".3f"),
                          "", "", "", "", "", style="bold")
        table.caption = "\n".join(_overall_lines(agg))
    if any(r.get("seed_scores") for r in rows):
        note = "vs best static (k/n): no worse than the best static target on k of the n simulator seeds"
        table.caption = f"{table.caption}\n{note}" if table.caption else note
    return table


def _cell(text: str) -> str:
    """Text for a Markdown table cell: a `|` (a file name may hold one) would start another cell."""
    return text.replace("|", "\\|")


def markdown_summary(rows: list[dict], reward, settings: list[str] = (), notes: list[str] = ()) -> str:
    lines = ["# kpilot evaluation", "",
             *[f"* {line}" for line in settings], *([""] if settings else []),
             (f"Score = minus the cost per request ({describe(reward)}); "
              "higher is better. `vs KPA` is the cost saving against Knative defaults; `vs best static` "
              "is the cost relative to the best static target in hindsight (<= 1: no worse); with several "
              "replays, (k/n) says on how many of the n simulator seeds the policy was no worse."), "",
             "| trace | policy | score | vs KPA | vs best static | SLO viol. | p95 s | cold starts | mean pods |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for trace, group in _by_trace(rows).items():
        rat = ratios(group)
        best = next((r["policy"] for r in group if r.get("best_static")), "")
        keep = [r for r in group if not r["policy"].startswith("static:") or r["policy"] == best]
        for r in keep:
            name = _cell(_label(r))
            lines.append(f"| {_cell(trace)} | {name} | {r['score']:.4f} | {_fmt(rat[r['policy']]['saving_vs_kpa'], '+.1%')} "
                         f"| {_vs_best(rat, group, r)} | {r['slo_violation_rate']:.2%} "
                         f"| {_seconds(r['latency_p95_s'])} | {_count(r['cold_starts'])} | {r['mean_pods']:.1f} |")
    traces = len(_by_trace(rows))
    if traces > 1:
        agg = overall(rows)
        lines += ["", f"All {traces} traces (geometric mean of the cost ratios):", "",
                  "| policy | vs KPA | vs best static |", "|---|---:|---:|"]
        lines += [f"| {_cell(name)} | {_fmt(o['saving_vs_kpa'], '+.1%')} | {_fmt(o['cost_vs_best_static'], '.3f')} |"
                  for name, o in agg.items()]
        lines += [""] + [f"* {line}" for line in _overall_lines(agg)]
    if notes:
        lines += ["", "Notes:", ""] + [f"* {note}" for note in notes]
    lines += ["", "Full static grid and every metric: `kpilot evaluate ... --json`.", ""]
    return "\n".join(lines)


REPORT_SUMMARY = "summary.md"
REPORT_PLOTS = "plots.txt"      # the plots a report wrote: the next one into the folder removes those only
TIMELINE_SUFFIX, FRONTIER_SUFFIX = "-timeline.png", "-frontier.png"
PLOT_SUFFIXES = (TIMELINE_SUFFIX, FRONTIER_SUFFIX)


def _plots_written_before(out: Path) -> set[str]:
    """The plots the last report in `out` wrote, by its list (plot names only, nothing outside `out`)."""
    try:
        names = (out / REPORT_PLOTS).read_text().split()
    except (OSError, UnicodeDecodeError):
        return set()
    return {n for n in names if "/" not in n and n.endswith(PLOT_SUFFIXES)}


def write_report(out: Path, result, reward) -> None:
    """The summary and plots, written into a staging folder inside `out` first; only once all of
    them are written do they replace the last report's files, whose other plots go last: a failed
    write (a full disk, a folder where a file goes) is one error line and leaves that report whole."""
    import shutil
    import tempfile

    import matplotlib

    from kpilot.errors import ConfigError
    from kpilot.outputs import write_all

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    staging = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".kpilot-report-", dir=out))
        (staging / REPORT_SUMMARY).write_text(markdown_summary(result.rows, reward, result.settings, result.notes))
        for k, (trace, group) in enumerate(_by_trace(result.rows).items()):
            stem = f"{k:02d}-" + "".join(ch if ch.isalnum() else "_" for ch in Path(trace).name)[:60]
            replays = result.results.get(trace, {})
            _timeline_plot(plt, staging / f"{stem}{TIMELINE_SUFFIX}", trace, group, replays.get("replays", {}),
                           replays.get("arrivals"))
            _frontier_plot(plt, staging / f"{stem}{FRONTIER_SUFFIX}", trace, group, reward)
        plots = sorted(p.name for p in staging.iterdir() if p.name != REPORT_SUMMARY)
        (staging / REPORT_PLOTS).write_text("".join(f"{name}\n" for name in plots))
        written = sorted(p.name for p in staging.iterdir())
        earlier = _plots_written_before(out)
        # All checked, then all moved in (write_all): links written through, modes kept.
        write_all([(out / name, lambda tmp, name=name: shutil.copyfile(staging / name, tmp)) for name in written],
                  option="--report")
        # A folder reused for another evaluation keeps nothing of the last one's plots: those its
        # list names, and no file of anyone else's.
        for name in earlier - set(written):
            (out / name).unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write the report in {str(out)!r} "
                          f"({exc.strerror or type(exc).__name__})", option="--report") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _timeline_plot(plt, path: Path, trace: str, group: list[dict], results: dict, arr) -> None:
    # Every controller compared but the static targets other than the best (a grid of 14 would
    # hide the rest): KPA, the policy, the rule, and the tuned, banded, chosen and re-tuned ones.
    best = next((r["policy"] for r in group if r.get("best_static")), None)
    show = [r["policy"] for r in group if not r["policy"].startswith("static:") or r["policy"] == best]
    fig, axes = plt.subplots(4, 1, figsize=(11, 9), sharex=True)
    if arr is not None and len(arr):    # the load from the trace itself, in 10 s bins, whatever is shown
        counts, edges = np.histogram(arr, bins=np.arange(0.0, float(np.max(arr)) + 10.0, 10.0))
        axes[0].plot((edges[:-1] + 5.0) / 60.0, counts / 10.0, color="grey", lw=0.6)
    for name in show:
        res = results.get(name)
        if res is None or not len(res.timeline.get("t", [])):
            continue
        tl = res.timeline
        t = tl["t"] / 60.0
        axes[1].plot(t, tl["ready_pods"], lw=0.9, label=name)
        axes[2].plot(t, tl["target"], lw=0.9, label=name)
        lat = res.latencies
        if arr is not None and len(arr):
            edges = np.arange(0.0, t[-1] * 60.0 + 60.0, 60.0)
            idx = np.digitize(arr, edges) - 1
            p95 = [np.nanpercentile(lat[idx == i], 95) if np.any(idx == i) and np.any(~np.isnan(lat[idx == i]))
                   else np.nan for i in range(len(edges))]
            # Markers: a minute with requests between two without is a point a line alone would not draw.
            axes[3].plot((edges + 30.0) / 60.0, p95, lw=0.9, marker=".", ms=4, label=name)   # mid-minute
    axes[0].set_ylabel("arrivals / s")
    axes[1].set_ylabel("ready pods")
    axes[2].set_ylabel("target")
    axes[2].set_yscale("log")
    axes[3].set_ylabel("p95 latency s (1 min)")
    axes[3].set_yscale("log")
    axes[3].set_xlabel("minutes")
    axes[1].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{trace} (the first simulator seed's replays)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def static_frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (pod-seconds per request, violation rate) points no other beats on both, by cost: a
    target drawn on the line that another undercuts on both axes was no choice anyone would make."""
    frontier, lowest = [], float("inf")
    for x, y in sorted(points):
        if y < lowest:
            frontier.append((x, y))
            lowest = y
    return frontier


def _frontier_plot(plt, path: Path, trace: str, group: list[dict], reward) -> None:
    fig, ax = plt.subplots(figsize=(7, 5))
    statics = sorted((r for r in group if r["policy"].startswith("static:")),
                     key=lambda r: float(r["policy"][7:]))
    if statics:
        x = [r["pod_seconds"] / max(1, r["requests"]) for r in statics]
        y = [r["slo_violation_rate"] for r in statics]
        ax.plot(x, y, "o", color="grey", ms=4, label="static targets")
        for r, xi, yi in zip(statics, x, y):
            ax.annotate(r["policy"][7:], (xi, yi), fontsize=6, xytext=(2, 2), textcoords="offset points")
        fx, fy = zip(*static_frontier(list(zip(x, y))))
        ax.step(fx, fy, where="post", color="grey", lw=0.8, label="static frontier")
        best = next((r for r in statics if r.get("best_static")), None)
        if best is not None:
            ax.plot(best["pod_seconds"] / max(1, best["requests"]), best["slo_violation_rate"], "o", ms=12,
                    mfc="none", color="black", label=f"best static ({best['policy'][7:]})")
    # Hollow markers, one shape each: two controllers on the same spot both stay visible.
    shapes = iter("*sD^vPX<>h" * 3)
    for r in group:
        if r["policy"].startswith("static:"):
            continue
        ax.plot(r["pod_seconds"] / max(1, r["requests"]), r["slo_violation_rate"], next(shapes), ms=11,
                mfc="none", mew=1.5, label=_label(r))
    ax.set_xscale("log")
    # Not "cost": the score also charges violations, lateness and cold starts (the summary's cost).
    ax.set_xlabel("pod-seconds per request (the cost's resource term)")
    ax.set_ylabel("SLO violation rate")
    ax.legend(fontsize=7)
    ax.set_title(trace, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

"""Turning a run's results (the dict written to results.json) into its verdicts, the Markdown table and the PNG
chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _status(met: bool | None) -> str:
    return "—" if met is None else ("met" if met else "**missed**")


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def verdicts(cases: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """(what, met, detail) for every target in the results."""
    out = []
    for case in cases:
        for ratio in case.get("ratios", []):
            if ratio["target"] is not None:
                bound = "≤" if ratio.get("metric") == "p99" else "≥"
                out.append((ratio["name"], ratio["met"], f"{ratio['median']:.3g} (target {bound} {ratio['target']:g})"))
        if "rss" in case:
            out.append(
                (
                    "RSS with 10,000 tokens",
                    case["rss"]["met"],
                    f"{case['rss']['large_mb']:.1f} MB (target ≤ {case['rss']['target_mb']:g} MB)",
                )
            )
        if case["case"] == "rotation":
            out.append(("rotation p99", case["met"], f"{case['p99_s']:.2f} s (target ≤ {case['target_s']:g} s)"))
    return out


def markdown(doc: dict[str, Any]) -> str:
    p, m = doc["params"], doc["machine"]
    lines = [
        f"Run {doc['started_utc']} (UTC), {doc['duration_s']:.0f} s: `{doc['command'].strip()}` — "
        f"{p['rounds']} interleaved rounds x {p['seconds']:g} s per variant, `wrk -t1 -c{p['connections']}`, "
        "median of the per-round ratios (cases 1, 5 and 8: twice the rounds at half the length); "
        + (
            "the cases took turns, one round each in turn, so each case's rounds span the run. "
            if p.get("turns")
            else "case by case. "
        )
        + f"Load average {m['loadavg_start'][0]:.2f} at the start, "
        f"{m['loadavg_end'][0]:.2f} at the end. CPU-cost ratio: the baseline's server CPU per request over the "
        "subject's, i.e. the ratio a run bound by CPU rather than by a busy machine's scheduling would show.",
        "",
        "| # | comparison | subject req/s | baseline req/s | ratio (median) | per-round range | target | "
        "| CPU-cost ratio |",
        "|---|---|---:|---:|---:|---|---|---|---:|",
    ]
    extra: list[str] = []
    for case in doc["cases"]:
        number = case["title"].split(".", 1)[0]
        for r in case.get("ratios", []):
            a, b = case["variants"][r["subject"]], case["variants"][r["baseline"]]
            bound = "≤" if r.get("metric") == "p99" else "≥"
            target = "—" if r["target"] is None else f"{bound} {r['target']:g}"
            lines.append(
                f"| {number} | {r['name']} | {_num(a['rps_median'])} | {_num(b['rps_median'])} | "
                f"**{r['median']:.3g}** | {r['min']:.3g} to {r['max']:.3g} | {target} | {_status(r['met'])} | "
                f"{_ratio(r.get('cpu_cost_ratio_median'))} |"
            )
        if "rss" in case:
            rss = case["rss"]
            lines.append(
                f"| {number} | RSS of authgate with {p['tokens']:,} tokens + {p['users']:,} users "
                f"(1 token: {rss['small_mb']:.1f} MB; peak {rss['large_peak_mb']:.1f} MB) | | | "
                f"**{rss['large_mb']:.1f} MB** | | ≤ {rss['target_mb']:g} MB | {_status(rss['met'])} | |"
            )
            lat = case["latency"]
            lines.append(
                f"| {number} | latency at {lat['connections']} connections, {p['tokens']:,} tokens "
                f"(p50 / p99, wrk, median of rounds) | | | **{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f} ms** "
                "| | — | — | |"
            )
        if case["case"] == "rotation":
            timeouts = f", {case['timeouts']} never accepted within 10 s" if case["timeouts"] else ""
            lines.append(
                f"| 6 | Secret swap → new token accepted ({len(case['samples_s'])} swaps{timeouts}; "
                f"p50 {case['p50_s']:.2f} s, max {case['max_s']:.2f} s) | | | **p99 {case['p99_s']:.2f} s** | "
                f"| ≤ {case['target_s']:g} s | {_status(case['met'])} | |"
            )
        for key, v in case.get("variants", {}).items():
            cpu = v.get("cpu_us_per_request_median")
            by_process = " + ".join(
                f"{c} {us:.0f}" for c, us in v.get("cpu_us_per_request_by_process_median", {}).items()
            )
            extra.append(
                f"| {number} | {v['label']} | `{key}` | {v['rps_median']:,.0f} | "
                f"{v['p50_ms_median']:.2f} | {v['p99_ms_median']:.2f} | "
                f"{'—' if cpu is None else f'{cpu:.0f}'} ({by_process}) |"
            )
    lines += [
        "",
        "Every variant, medians over the rounds. Server CPU per request is the CPU time of the serving "
        "processes (all threads) during a round divided by its requests: steadier than req/s on a shared machine.",
        "",
        "| # | variant | key | req/s | p50 ms | p99 ms | server CPU µs/request (processes counted) |",
        "|---|---|---|---:|---:|---:|---|",
        *extra,
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gb']} GB, Linux {m['kernel']}; "
        f"Python {m['python']}, granian {m.get('granian', '?')}, uvicorn {m['uvicorn']}, {m['nginx']}, "
        f"Traefik {m['traefik']}, "
        f"Caddy {m['caddy']}, Envoy {m.get('envoy', '?')}, {m['wrk']}.",
        "",
    ]
    return "\n".join(lines)


def chart(doc: dict[str, Any], path: Path) -> None:
    """Left: every ratio (log scale) with its target; right: median req/s of every variant (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios: list[tuple[str, float, float | None, bool | None]] = []
    variants: list[tuple[str, float]] = []
    for case in doc["cases"]:
        number = case["title"].split(".", 1)[0]
        for r in case.get("ratios", []):
            ratios.append((f"{number}. {r['name']}", r["median"], r["target"], r["met"]))
        for v in case.get("variants", {}).values():
            variants.append((f"{number}. {v['label']}", v["rps_median"]))
    rows = max(len(ratios), len(variants), 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(16, 1.0 + 0.42 * rows))
    if ratios:
        names = [r[0] for r in ratios][::-1]
        values = [r[1] for r in ratios][::-1]
        colors = [{None: "#888888", True: "#2e7d32", False: "#c62828"}[r[3]] for r in ratios][::-1]
        left.barh(names, values, color=colors)
        for y, (value, target) in enumerate(zip(values, [r[2] for r in ratios][::-1], strict=True)):
            left.text(value, y, f" {value:.3g}", va="center", fontsize=8)
            if target is not None:
                left.plot([target, target], [y - 0.4, y + 0.4], color="black", linewidth=2)
        left.axvline(1.0, color="#555555", linewidth=0.8, linestyle=":")
        left.set_xscale("log")
        left.set_title("ratio, median of interleaved rounds (black tick = target; green met, red missed)", fontsize=9)
        left.tick_params(axis="y", labelsize=8)
    else:
        left.set_axis_off()
    if variants:
        right.barh([v[0] for v in variants][::-1], [v[1] for v in variants][::-1], color="#1565c0")
        right.set_xscale("log")
        right.set_title(f"median requests/s (wrk -t1 -c{doc['params']['connections']})", fontsize=9)
        right.tick_params(axis="y", labelsize=8)
    else:
        right.set_axis_off()
    fig.suptitle(
        f"authgate benchmarks {doc['started_utc']} — {doc['machine']['nproc']} CPUs {doc['machine']['cpu']}",
        fontsize=10,
    )
    notes = []
    for case in doc["cases"]:
        if "rss" in case:
            rss, lat = case["rss"], case["latency"]
            notes.append(
                f"RSS with {doc['params']['tokens']:,} tokens: {rss['large_mb']:.1f} MB "
                f"(target ≤ {rss['target_mb']:g} MB, {'met' if rss['met'] else 'MISSED'})"
            )
            notes.append(
                f"latency at {lat['connections']} connections: p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms"
            )
        if case["case"] == "rotation":
            notes.append(
                f"rotation: p99 {case['p99_s']:.2f} s (target ≤ {case['target_s']:g} s, "
                f"{'met' if case['met'] else 'MISSED'})"
            )
    if notes:
        fig.text(0.01, 0.005, "   ·   ".join(notes), fontsize=9)
    fig.tight_layout(rect=(0, 0.03 if notes else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)

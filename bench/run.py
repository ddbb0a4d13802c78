#!/usr/bin/env python3
"""authgate benchmarks: every figure a ratio against a baseline measured in the same run, interleaved.

    .venv/bin/python bench/run.py            # full run, ~20 minutes
    .venv/bin/python bench/run.py --quick    # ~2 minutes, fewer and shorter rounds

Writes ``bench/results/<UTC timestamp>/results.{md,json,png}`` and prints the Markdown table. Exit status:
0 every target met, 1 a target missed (each named on stderr), 2 the harness itself failed.

With several cases, the cases take turns, one round each in turn (bench/turns.py), so each case's rounds span
the whole run; ``--case-by-case`` runs them one after another instead.

This file is the run: its arguments, the loop over the chosen cases and the writing of the results. Each case
is a module of bench/cases/ (registered in ``bench.cases.CASES``); the method they share, the interleaved
rounds, medians and ratios, is bench/measure.py; the processes they drive are bench/servers.py; the table
and the chart are bench/report.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def _harness_failed(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    """An exception nothing caught — an import, the results' writing, anything outside the cases' own
    boundary in main() — is the harness failing: exit 2 with its traceback. Python's own status for it
    would be 1, which here means "a target missed" (and a caller accepting 1 would then look for results
    that were never written)."""
    traceback.print_exception(kind, exc, tb)
    sys.stderr.flush()
    os._exit(2)


if __name__ == "__main__":
    sys.excepthook = _harness_failed

# Run as a script, Python puts bench/ first on the path, not the repository: sibling modules are imported
# as the bench package from the repository root.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import machine, report  # noqa: E402
from bench.cases import CASES as RUNNERS  # noqa: E402
from bench.measure import Log, Params  # noqa: E402
from bench.servers import Credentials, Stack, find_tool  # noqa: E402
from bench.turns import Turns  # noqa: E402
from bench.wrk import Wrk  # noqa: E402

CASES = tuple(RUNNERS)


def _run_cases(cases: Sequence[str], stack: Stack, wrk: Wrk, params: Params, log: Log) -> list[dict[str, Any]]:
    """Every chosen case's results, in the order given: taking turns (one round of each case in turn, each
    case's log lines named) or case by case."""
    if not params.turns:
        results = []
        for case in cases:
            log(f"case {case}")
            results.append(RUNNERS[case](stack, wrk, params, log))
        return results

    def job(case: str) -> Callable[[], dict[str, Any]]:
        def named(msg: str) -> None:
            log(f"[{case}] {msg.strip()}")

        return lambda: RUNNERS[case](stack, wrk, params, named)

    log(f"cases taking turns, one round each: {', '.join(cases)}")
    return Turns().run([job(case) for case in cases])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="authgate benchmarks (ratios, interleaved, one run)")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 1 s, 5 rotations (~2 minutes)")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results",
        help="results go to OUT/<UTC timestamp>/ (default bench/results)",
    )
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    parser.add_argument("--rounds", type=int, help="rounds per case (default 5, quick 3)")
    parser.add_argument("--seconds", type=float, help="seconds per wrk run (default 5, quick 1; whole seconds)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per variant (default 2, quick 1)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--rotations", type=int, help="Secret swaps timed (default 20, quick 5)")
    parser.add_argument("--tokens", type=int, default=10_000, help="tokens in the scale case (default 10,000)")
    parser.add_argument("--users", type=int, default=1_000, help="htpasswd users in the scale case (default 1,000)")
    parser.add_argument(
        "--case-by-case",
        action="store_true",
        help="run each case's rounds together, one case after another, instead of the cases taking turns "
        "(one round of each in turn, bench/turns.py)",
    )
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"--cases: unknown {', '.join(unknown)}; choose from {', '.join(CASES)}")
    params = Params(
        rounds=args.rounds or (3 if args.quick else 5),
        seconds=args.seconds or (1 if args.quick else 5),
        warmup=args.warmup or (1 if args.quick else 2),
        connections=args.connections,
        rotations=args.rotations or (5 if args.quick else 20),
        tokens=args.tokens,
        users=args.users,
        turns=not args.case_by_case and len(cases) > 1,
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = args.out / stamp
    out_dir.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.monotonic()
    command = "python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    info = machine.describe()
    log(f"authgate bench → {out_dir} ({params})")
    with tempfile.TemporaryDirectory(prefix="authgate-bench-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        stack = Stack(work, Credentials.generate())
        wrk = Wrk(find_tool("wrk"), threads=1, connections=params.connections)
        try:
            results = _run_cases(cases, stack, wrk, params, log)
        except Exception as exc:  # one boundary: say what failed, keep the logs
            traceback.print_exc()
            keep = out_dir / "logs"
            keep.mkdir(exist_ok=True)
            for logfile in list(work.rglob("*.log")) + list(work.rglob("*.out")):
                (keep / f"{logfile.parent.name}-{logfile.name}").write_bytes(logfile.read_bytes())
            log(f"harness error: {exc} (process logs in {keep})")
            return 2
        finally:
            stack.stop()
            wrk.close()
    info["loadavg_end"] = os.getloadavg()
    outcome = report.verdicts(results)
    doc: dict[str, Any] = {
        "started_utc": stamp,
        "command": command,
        "duration_s": round(time.monotonic() - started, 1),
        "params": dataclasses.asdict(params),
        "machine": info,
        "cases": results,
        "verdicts": outcome,
    }
    (out_dir / "results.json").write_text(json.dumps(doc, indent=2, default=float))
    markdown = report.markdown(doc)
    (out_dir / "results.md").write_text(markdown)
    report.chart(doc, out_dir / "results.png")
    print(markdown)
    missed = [(what, detail) for what, met, detail in outcome if not met]
    for what, detail in missed:
        log(f"TARGET MISSED: {what}: {detail}")
    log(f"done in {doc['duration_s']:.0f} s → {out_dir}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())

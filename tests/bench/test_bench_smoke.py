"""The benchmark harness runs end to end in a tiny mode and writes its three outputs.

Nothing here is timed: speed is bench/run.py's business (its own exit status), not the test suite's.
Exit status 1 (a target missed, likely on a 1-second run on a busy machine) is as good as 0 here;
2 means the harness itself broke.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.procs import REPO_ROOT
from tests.support.tools import require_tool


def test_tiny_run_writes_markdown_json_and_png(tmp_path):
    require_tool("wrk")
    require_tool("h2load")
    require_tool("envoy")
    out = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench" / "run.py"),
            "--cases",
            "direct,grpc,envoy,nginx,denial,jwt",
            "--rounds",
            "2",
            "--seconds",
            "1",
            "--warmup",
            "1",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    # 1 (a target missed) is a finished run: its results are written; anything else uncaught exits 2.
    assert out.returncode in (0, 1), out.stderr
    runs = list(tmp_path.iterdir())
    assert len(runs) == 1, (runs, out.stderr)
    (run_dir,) = runs
    doc = json.loads((run_dir / "results.json").read_text())
    assert [case["case"] for case in doc["cases"]] == ["direct", "grpc", "envoy", "nginx", "denial", "jwt"]
    direct, grpc, envoy, nginx, denial, jwt = doc["cases"]
    # authgate and the raw-ASGI floor on each server
    assert set(direct["variants"]) == {
        "authgate",
        "baseline",
        "authgate-uvicorn",
        "baseline-uvicorn",
        "authgate_close",
        "authgate_close-uvicorn",
    }
    # the direct case runs twice the rounds at half the length (bench/measure.py: finer)
    assert all(v["rps_median"] > 0 and len(v["runs"]) == 4 for v in direct["variants"].values())
    # The cases took turns (bench/turns.py), one round each (two for a finer case) in the order given: every
    # case's first turn came before any case's second, so each case's rounds span the run.
    assert doc["params"]["turns"] is True
    turns = {}
    for case in doc["cases"]:
        runs = [run["started_unix"] for v in case["variants"].values() for run in v["runs"]]
        assert min(runs) > 0, case["case"]
        rounds = len(runs) // len(case["variants"])  # 2, or 4 for a finer case: half of them in each turn
        times = sorted(runs)
        first_turn = len(case["variants"]) * rounds // 2
        turns[case["case"]] = (times[:first_turn], times[first_turn:])
    last_first_turn = max(first[-1] for first, _ in turns.values())
    assert all(second and min(second) > last_first_turn for _, second in turns.values()), turns
    order = sorted(turns, key=lambda name: turns[name][0][0])
    assert order == ["direct", "grpc", "envoy", "nginx", "denial", "jwt"]
    target, *others = direct["ratios"]
    assert (target["subject"], target["baseline"]) == ("authgate", "baseline")  # on the default server
    assert target["target"] == 0.9 and target["met"] == (target["median"] >= 0.9)
    assert all(other["target"] is None for other in others)
    # gRPC Check next to HTTP in one authgate process and next to the free gRPC auth service (grpcio's limit),
    # all through h2load, each with its server CPU.
    assert set(grpc["variants"]) == {"grpc", "http", "grpc_free"}
    assert all(v["rps_median"] > 0 and v["cpu_us_per_request_median"] for v in grpc["variants"].values())
    assert grpc["variants"]["grpc_free"]["serves"] == ["grpc_free"]
    assert [(r["subject"], r["baseline"]) for r in grpc["ratios"]] == [("grpc", "http"), ("grpc", "grpc_free")]
    assert all(r["target"] is None and r["cpu_cost_ratio_median"] is not None for r in grpc["ratios"])
    # Envoy: ext_authz over HTTP and gRPC to authgate on each server, the free auth service over each, basic_auth,
    # no auth; Envoy's CPU counted in each, each authgate's in the two that ask it, the free gRPC service's in its
    # own.
    assert set(envoy["variants"]) == {
        "envoy_http",
        "envoy_grpc",
        "envoy_http-uvicorn",
        "envoy_grpc-uvicorn",
        "envoy_free",
        "envoy_grpc_free",
        "envoy_basic",
        "envoy_none",
    }
    for key, variant in envoy["variants"].items():
        assert variant["rps_median"] > 0 and "envoy" in variant["serves"], key
        assert ("authgate:envoy" in variant["serves"]) == (key in ("envoy_http", "envoy_grpc")), key
        assert ("authgate:envoy-uvicorn" in variant["serves"]) == key.endswith("-uvicorn"), key
        assert ("grpc_free" in variant["serves"]) == (key == "envoy_grpc_free"), key
    assert {(r["subject"], r["baseline"]) for r in envoy["ratios"]} >= {
        ("envoy_http", "envoy_free"),
        ("envoy_grpc", "envoy_http"),
        ("envoy_grpc", "envoy_grpc_free"),
        ("envoy_grpc_free", "envoy_http"),
        ("envoy_http", "envoy_basic"),
    }
    # Issue 24's gRPC row on each server: its target is in the run, met or missed by the median.
    for subject, baseline in (("envoy_grpc", "envoy_http"), ("envoy_grpc-uvicorn", "envoy_http-uvicorn")):
        (row,) = [r for r in envoy["ratios"] if (r["subject"], r["baseline"]) == (subject, baseline)]
        assert row["target"] == 0.8 and row["met"] == (row["median"] >= 0.8), row
    envoy_limit = next(r for r in envoy["ratios"] if (r["subject"], r["baseline"]) == ("envoy_http", "envoy_free"))
    assert envoy_limit["target"] == 0.8
    # nginx: authgate, the raw-ASGI floor and the free auth service (a separate nginx answering 200) on each
    # auth_request path; the targets against the limit on both servers.
    assert {"authreq_free", "authreq_keepalive_free", "authreq_keepalive_baseline"} <= set(nginx["variants"])
    assert nginx["variants"]["authreq_keepalive_free"]["serves"] == ["nginx", "nginx_free"]
    targets = {(r["subject"], r["baseline"]): r["target"] for r in nginx["ratios"]}
    for server_key in ("", "-uvicorn"):
        assert targets[("authreq_keepalive" + server_key, "authreq_keepalive_free")] == 0.8
        assert targets[("authreq" + server_key, "authreq_free")] == 0.8
        assert ("authreq_keepalive_baseline" + server_key, "authreq_keepalive_free") in targets
    # Denials: the flood against allows on each server, every answer checked against authgate's metrics,
    # addresses banned by the throttle along the way; the same floods on the raw-ASGI floor with its throttle,
    # and the flood on the complete floor (the same process's /auth/complete, the required work per denial).
    assert set(denial["variants"]) == {
        f"{kind}{floor}{server}"
        for kind in ("deny", "allow")
        for floor in ("", "-floor")
        for server in ("", "-uvicorn")
    } | {"deny-complete-floor", "deny-complete-floor-uvicorn"}
    # (the floor a process of its own, so the flood's throttle tables stay out of the other cases' floor)
    assert denial["variants"]["deny-floor-uvicorn"]["serves"] == ["baseline:denials-uvicorn"]
    assert denial["variants"]["deny-complete-floor"]["serves"] == ["baseline:denials"]
    assert denial["variants"]["deny-complete-floor-uvicorn"]["serves"] == ["baseline:denials-uvicorn"]
    assert all(v["rps_median"] > 0 and v["cpu_us_per_request_median"] for v in denial["variants"].values())
    assert {(r["subject"], r["baseline"], r["target"]) for r in denial["ratios"]} == {
        ("deny", "allow", 0.7),
        ("deny-uvicorn", "allow-uvicorn", 0.7),
        ("deny-floor", "allow-floor", None),
        ("deny-floor-uvicorn", "allow-floor-uvicorn", None),
        ("deny", "deny-floor", None),
        ("deny-uvicorn", "deny-floor-uvicorn", None),
        ("deny-complete-floor", "allow-floor", None),
        ("deny-complete-floor-uvicorn", "allow-floor-uvicorn", None),
        ("deny", "deny-complete-floor", None),
        ("deny-uvicorn", "deny-complete-floor-uvicorn", None),
    }
    for server_key in ("granian", "uvicorn"):
        flood = denial["flood"][server_key]
        assert flood["denials_counted"] > 0 and flood["addresses_banned_at_end"] >= 1
    # JWT: a repeated JWT against a static token through nginx and direct, a static token as long as the JWT,
    # the first verification's cost per algorithm.
    assert set(jwt["variants"]) == {"jwt", "jwt_static", "jwt_direct", "jwt_static_direct", "jwt_long_direct"}
    assert {(r["subject"], r["baseline"]) for r in jwt["ratios"] if r["target"] == 0.9} == {
        ("jwt", "jwt_static"),
        ("jwt_direct", "jwt_static_direct"),
    }
    assert set(jwt["first_verification_us"]) == {"RS256", "ES256"}
    machine = {"nproc", "cpu", "kernel", "python", "uvicorn", "granian", "nginx", "h2load", "grpcio", "envoy"}
    assert machine <= set(doc["machine"])
    missed = [v for v in doc["verdicts"] if not v[1]]
    assert (out.returncode == 1) == bool(missed)

    markdown = (run_dir / "results.md").read_text()
    assert "| # | comparison |" in markdown and "authgate / raw-ASGI floor, same server (granian)" in markdown
    assert "gRPC Check / HTTP auth request" in markdown
    assert "Envoy→authgate HTTP (granian) / Envoy→free auth service (the limit)" in markdown
    assert markdown in out.stdout
    assert (run_dir / "results.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_an_uncaught_exception_is_a_harness_failure_not_a_missed_target(tmp_path):
    """bench/run.py exits 1 only for a finished run with a target missed; Python's own 1 for an exception
    nothing caught would pass for one (and leave no results behind). An unwritable --out fails before any case."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "run.py"), "--cases", "direct", "--out", str(blocker)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" in out.stderr


def test_grpc_levers_prints_a_row_per_variant():
    """bench/grpc_levers.py (grpcio against itself, docs/benchmarks.md's gRPC row) runs and prints its table."""
    require_tool("h2load")
    out = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench" / "grpc_levers.py"),
            "--rounds",
            "1",
            "--seconds",
            "1",
            "aio",
            "sync-8-to-loop",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "variant" not in line]
    assert [row.split(" | ")[0] for row in rows] == ["| aio", "| sync-8-to-loop"], out.stdout
    assert all(float(row.split(" | ")[2].rstrip(" |").replace(",", "")) > 0 for row in rows), out.stdout

"""Case 6: how long after a kubelet-style Secret swap authgate accepts the new token, timed ``--rotations``
times; no wrk, no ratio, its own target."""

from __future__ import annotations

import hashlib
import random
import statistics
import time
from typing import Any

import httpx

from bench.measure import ORIGINAL, Log, Params
from bench.servers import POLICY_NO_THROTTLE, Credentials, Stack
from bench.wrk import Wrk


def run(stack: Stack, wrk: Wrk, p: Params, log: Log) -> dict[str, Any]:
    ag = stack.authgate("rotation", stack.small_files(), policy=POLICY_NO_THROTTLE)
    secret = ag.secret  # type: ignore[attr-defined]
    rng = random.Random(6)  # spacing between swaps, not a secret
    samples: list[float] = []
    timeouts = 0
    with httpx.Client(timeout=2.0) as client:
        for i in range(p.rotations):
            token = Credentials.generate().token
            digest = hashlib.sha256(token.encode()).hexdigest()
            files = {**stack.small_files()}
            files["tokens"] += f"rotated-{i} sha256:{digest}\n"
            started = time.monotonic()
            secret.write(files)  # kubelet's swap: new timestamped dir, ..data renamed over, old dir removed
            deadline = started + 10.0
            while time.monotonic() < deadline:
                answer = client.get(ag.base_url + "/auth/api", headers={**ORIGINAL, "Authorization": f"Bearer {token}"})
                if answer.status_code == 200:
                    samples.append(time.monotonic() - started)
                    break
                time.sleep(0.005)
            else:
                timeouts += 1
            time.sleep(rng.uniform(0.2, 0.6))  # spread swaps over any polling phase
    log("  rotations: " + " ".join(f"{s:.2f}" for s in samples) + (f" (+{timeouts} timeouts)" if timeouts else ""))
    ordered = sorted(samples) or [float("inf")]
    p99 = ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered)) - 1))] if not timeouts else float("inf")
    return {
        "case": "rotation",
        "title": "6. Rotation: kubelet-style swap → new token accepted",
        "samples_s": samples,
        "timeouts": timeouts,
        "p50_s": statistics.median(ordered),
        "p99_s": p99,
        "max_s": ordered[-1],
        "target_s": 2.0,
        "met": p99 <= 2.0,
    }

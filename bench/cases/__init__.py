"""The benchmark cases, one module each, registered in ``CASES`` in the order a full run takes them.

A case is a function ``run(stack, wrk, params, log)`` that starts what it needs from the ``Stack``
(bench/servers.py: authgate, the raw-ASGI floor, nginx, Traefik, Caddy, Envoy, each on first use), names its
variants and ratios and returns ``summarize(...)`` of ``measure(...)`` (bench/measure.py: the
checks, the interleaved rounds, the medians, the CPU per request); a case with a figure of its own (scale's
RSS, rotation's swap times) adds it to that dict, and bench/report.py shows it.

A new case is one module here with its ``run``, one line in ``CASES`` (its name is the ``--cases`` one) and,
if it needs a process the stack does not start yet, a method on ``Stack``. The title it returns starts with
its number in the tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.cases import bcrypt, denial, direct, envoy, grpc, jwt, nginx, rotation, scale, throttle, traefik
from bench.measure import Log, Params
from bench.servers import Stack
from bench.wrk import Wrk

Case = Callable[[Stack, Wrk, Params, Log], dict[str, Any]]

CASES: dict[str, Case] = {
    "direct": direct.run,
    "nginx": nginx.run,
    "bcrypt": bcrypt.run,
    "traefik": traefik.run,
    "scale": scale.run,
    "rotation": rotation.run,
    "throttle": throttle.run,
    "grpc": grpc.run,
    "envoy": envoy.run,
    "jwt": jwt.run,
    "denial": denial.run,
}

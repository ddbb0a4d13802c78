"""The decision's log lines, on logger ``authgate.decision``: every denial (info), every allow (debug, only
when that level is on at start), and the front-door problem lines, at most one a minute per route, problem
and doors seen.

They have one home, apart from the decision core that calls them (app.decider), so that a change to how
they are written (say denial lines aggregated per client and reason) is made here and nowhere else. Lines
are JSON through app.logs; every field goes in ``extra``.
"""

from __future__ import annotations

import logging

from app.decision import Decision, RequestFacts
from app.doors import FrontDoors, Reading
from app.logs import EveryInterval

log = logging.getLogger("authgate.decision")


class DecisionLog:
    def __init__(self) -> None:
        # The level is set once, at start. When allows are logged, each one is decided in full so that its
        # method and path are known: nothing is answered from the allow memo then (app.fast_lane).
        self.allows = log.isEnabledFor(logging.DEBUG)
        self.problems = EveryInterval(60.0)

    @staticmethod
    def denied(route_name: str, decision: Decision, facts: RequestFacts) -> None:
        log.info(
            "denied",
            extra={
                "event": "decision",
                "route": route_name,
                "status": decision.status,
                "reason": decision.reason,
                "scheme": decision.scheme,
                "principal": decision.principal,
                "method": facts.method,
                "path": facts.path,
                "client": facts.client,
            },
        )

    @staticmethod
    def allowed(route_name: str, decision: Decision, facts: RequestFacts) -> None:
        log.debug(
            "allowed",
            extra={
                "event": "decision",
                "route": route_name,
                "status": 200,
                "reason": decision.reason,
                "scheme": decision.scheme,
                "principal": decision.principal,
                "method": facts.method,
                "path": facts.path,
            },
        )

    def front_door_problem(self, doors: FrontDoors, route_label: str, reading: Reading) -> None:
        """A request whose original method and path could not be trusted: logged at most once a minute per
        route, kind and doors seen, naming the fix."""
        assert reading.problem is not None
        held_back = self.problems.due((doors.names, route_label, reading.problem, reading.seen))
        if held_back is None:
            return
        fields = {
            "event": "front_door",
            "route": route_label,
            "problem": reading.problem,
            "proxy": ",".join(doors.names),
            "seen": ",".join(reading.seen),
            "similar_not_logged": held_back,
        }
        if reading.problem == "missing":
            marks = "; ".join(f"{door.name}: {door.mark_names}" for door in doors.trusted)
            hint = f" (the request carries what {', '.join(reading.seen)} sets)" if reading.seen else ""
            log.error(
                "route %s: requests lack what the configured front door always sends (%s)%s: %s. Until then "
                "anonymous exceptions, CORS preflights and method/path-limited tokens are refused.",
                route_label,
                marks,
                hint,
                doors.missing_fix(reading.seen),
                extra=fields,
            )
        else:
            log.warning(
                "route %s: the front doors' accounts of the original request disagree (%s); one of them was "
                "written by the client. Anonymous exceptions and method/path-limited tokens are refused for "
                "such requests.",
                route_label,
                ", ".join(reading.seen),
                extra=fields,
            )

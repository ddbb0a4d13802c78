"""The decision's log lines, on logger ``authgate.decision``: denials (info), every allow (debug, only when
that level is on at start), and the front-door problem lines, at most one a minute per route, problem and
doors seen.

Denials are aggregated (:class:`DenialLog`): a client chooses how many it causes (a credential-stuffing flood
is one a request), so a line for each would make the log, not the decision, the cost of an attack, and bury
everything else in it. Per route, status, reason and scheme, the first denial of each window is logged in
full (client, method, path, principal), the others are counted, and when the window closes one summary line
says how many were not logged. At debug level every denial is logged in full, as every allow is. The counts
of every denial, logged or not, are in ``authgate_decisions_total`` (app.metrics).

They have one home, apart from the decision core that calls them (app.decider), so that a change to how
they are written is made here and nowhere else. Lines are JSON through app.logs; every field goes in
``extra``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from app.decision import Decision
from app.doors import FrontDoors, Reading
from app.logs import EveryInterval

log = logging.getLogger("authgate.decision")

# Seconds per window of the denial log: the first denial of each kind in a window is logged in full, the rest
# in one summary line when it closes.
DENIAL_WINDOW_SECONDS = 60.0
DenialKey = tuple[str, int, str, str]  # route (a configured one, or "_unknown"), status, reason, scheme


def log_not_logged(not_logged: dict[DenialKey, int], seconds: float, logger: logging.Logger = log) -> None:
    """The lines that close a window of the denial log: one ``denials_not_logged`` line per kind (route, status,
    reason, scheme) with denials not logged in those ``seconds``, saying how many."""
    for (route, status, reason, scheme), count in not_logged.items():
        if count:
            logger.info(
                "not logged: %d more denials of this kind in the last %s s",
                count,
                seconds,
                extra={
                    "event": "denials_not_logged",
                    "route": route,
                    "status": status,
                    "reason": reason,
                    "scheme": scheme,
                    "not_logged": count,
                    "window_seconds": seconds,
                },
            )


class DenialLog:
    """The denial lines: per kind (route label, status, reason, scheme: the labels of the denial's
    ``authgate_decisions_total``, so a bounded set), the first denial of each window of ``window`` seconds in
    full, the others counted, and one ``denials_not_logged`` line per kind when the window closes, with the
    number not logged. ``every``: log every denial in full (debug level).

    A window opens with the first denial after the last one closed and closes ``window`` seconds later: by a
    timer on the running event loop, so the summary comes even if no denial follows; or, without a running
    loop, by the next denial after it. Everything runs on the event loop (app.decider): no lock."""

    def __init__(
        self, window: float = DENIAL_WINDOW_SECONDS, every: bool = False, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self.every = every
        self.clock = clock
        self._not_logged: dict[DenialKey, int] = {}  # the kinds seen this window, and how many went unlogged
        self._opened = 0.0  # when the current window opened (meaningful while _not_logged is not empty)
        self._timer: asyncio.TimerHandle | None = None

    def denied(self, route_label: str, route_name: str, decision: Decision, reading: Reading) -> None:
        if not self.every:
            not_logged = self._not_logged
            if not_logged and self._timer is None and self.clock() - self._opened >= self.window:
                self.close_window()  # no timer closes it (no running loop): the first denial after it does
                not_logged = self._not_logged
            key = (route_label, decision.status, decision.reason, decision.scheme)
            count = not_logged.get(key)
            if count is not None:
                not_logged[key] = count + 1
                return
            if not not_logged:
                self._open()
            not_logged[key] = 0
        log.info(
            "denied",
            extra={
                "event": "decision",
                "route": route_name,
                "status": decision.status,
                "reason": decision.reason,
                "scheme": decision.scheme,
                "principal": decision.principal,
                "method": reading.method,
                "path": reading.path,
                "client": reading.client,
            },
        )

    def _open(self) -> None:
        self._opened = self.clock()
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a synchronous caller): the next denial after the window closes it
                return
            self._timer = loop.call_later(self.window, self._closed_by_timer)

    def _closed_by_timer(self) -> None:
        self._timer = None
        self.close_window()

    def close_window(self) -> None:
        """Logs one ``denials_not_logged`` line per kind with denials not logged in the window, and starts
        afresh: the next denial of any kind is logged in full."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        log_not_logged(self._not_logged, round(self.clock() - self._opened, 1))
        self._not_logged = {}


class DecisionLog:
    def __init__(self, denial_window: float = DENIAL_WINDOW_SECONDS) -> None:
        # The level is set once, at start. When allows are logged, each one is decided in full so that its
        # method and path are known: nothing is answered from the allow memo then (app.fast_lane).
        self.allows = log.isEnabledFor(logging.DEBUG)
        # Denials are logged at info; none at all above it. At debug level, every one in full.
        self.denials = DenialLog(denial_window, every=self.allows) if log.isEnabledFor(logging.INFO) else None
        self.problems = EveryInterval(60.0)

    @staticmethod
    def allowed(route_name: str, decision: Decision, reading: Reading) -> None:
        log.debug(
            "allowed",
            extra={
                "event": "decision",
                "route": route_name,
                "status": 200,
                "reason": decision.reason,
                "scheme": decision.scheme,
                "principal": decision.principal,
                "method": reading.method,
                "path": reading.path,
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

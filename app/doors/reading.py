"""Reading the original request from the doors the operator trusts, cross-checked against every other door.

The rule (docs/security.md):

* The account used is that of a trusted door (``--proxy``) whose marks the request carries in full.
* Every other account the request carries — another trusted door's, or an untrusted door's marks that a
  client may have written — must agree with it on method and path. Each door always overwrites its own
  marks, so when two accounts are present one of them is the real door's: if they agree, either is true;
  if they differ, authgate cannot tell which, and the reading is ``conflict``.
* No trusted account at all is ``missing``: authgate sits behind a door it was not configured for.

Either problem leaves method and path unknown, which refuses anonymous exceptions, CORS preflights and
method/path-limited tokens (never an allow); credentials that carry no such limits are unaffected.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from app.doors.base import Door, View

Problem = Literal["missing", "conflict"]


class Reading(NamedTuple):
    method: str | None
    path: str | None
    client: str | None
    problem: Problem | None = None
    door: str | None = None  # the trusted door whose account was used
    # With a problem: the doors whose marks the request carries (``missing``: those most likely in front).
    seen: tuple[str, ...] = ()


def _disagree(view: View, other: View) -> bool:
    return (other.method is not None and other.method != view.method) or (
        other.path is not None and other.path != view.path
    )


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


class FrontDoors:
    """The trusted doors (in ``--proxy`` order) and the others whose marks are cross-checked.

    ``missing``: what a request lacking every trusted account means and how to fix it, for a wire whose
    doors are not chosen with ``--proxy`` (gRPC); by default the fix is the ``--proxy`` of the doors seen."""

    def __init__(self, trusted: tuple[Door, ...], others: tuple[Door, ...], missing: str | None = None) -> None:
        self.trusted = trusted
        self.others = others
        self.names = tuple(door.name for door in trusted)
        self.missing = missing
        # The common case, one trusted door (``--proxy ingress-nginx``): when the request carries none of the
        # other doors' marks, their accounts are all None and the reading is the lone door's own, exactly as
        # :meth:`read_all` finds it; one set test replaces reading every other door (``headers.keys().isdisjoint``:
        # at most one lookup per mark, however many headers came). None: no such shortcut
        # (several trusted doors, or another door whose marks are not a fixed set of header names).
        marks = [getattr(door, "marks", None) for door in others]
        self._lone: Door | None = None
        self._other_marks: frozenset[bytes] = frozenset()
        if len(trusted) == 1 and all(mark is not None for mark in marks):
            self._lone = trusted[0]
            self._other_marks = frozenset(name for mark in marks for name in mark)  # type: ignore[union-attr]

    def missing_fix(self, seen: tuple[str, ...]) -> str:
        if self.missing is not None:
            return self.missing
        fix = ",".join(seen) if seen else "the proxy that calls authgate"
        return f"authgate is behind a proxy it is not configured for. Fix: --proxy {fix} (chart: config.proxy)"

    def could_be(
        self, headers: dict[bytes, bytes], rest: bytes | None, scope: dict[str, Any], paths: tuple[bytes, ...]
    ) -> bool:
        """False only if no trusted door's account can name one of ``paths`` (raw, as in the policy's
        exceptions): a substring test on each trusted door's path header, a fraction of a full reading.
        The cross-check can only take an exception away, never grant one, so trusted doors suffice."""
        for door in self.trusted:
            target = door.raw_target(headers, rest, scope)
            if target is not None and any(path in target for path in paths):
                return True
        return False

    def redirecting_door(self, headers: dict[bytes, bytes], rest: bytes | None, scope: dict[str, Any]) -> Door | None:
        """The trusted door whose account of this request is believed, when a redirect reaches the browser
        through it (:attr:`Door.redirects_to_sign_in`); None otherwise."""
        reading = self.read(headers, rest, scope)
        if reading.problem is not None:
            return None
        for door in self.trusted:
            if door.name == reading.door:
                return door if door.redirects_to_sign_in else None
        return None

    def read(self, headers: dict[bytes, bytes], rest: bytes | None, scope: dict[str, Any]) -> Reading:
        """The reading of one request (the rule: this module's docstring)."""
        door = self._lone
        if door is not None and headers.keys().isdisjoint(self._other_marks):
            # No other door's marks: the lone trusted door's account is the only one, so there is nothing to
            # cross-check; a complete one is the reading (as read_all finds it), anything else goes the long way.
            view = door.view(headers, rest, scope)
            if view is not None:
                method, path, client = view
                if method is not None and path is not None:  # complete (View.complete and _text() written out)
                    if client:  # an empty address is none, as in read_all
                        address: str | None = client.decode("latin-1")
                    elif door.vouches_for_client and scope.get("client"):
                        address = str(scope["client"][0])
                    else:
                        address = None
                    return Reading(method.decode("latin-1"), path.decode("latin-1"), address, None, door.name)
        return self.read_all(headers, rest, scope)

    def read_all(self, headers: dict[bytes, bytes], rest: bytes | None, scope: dict[str, Any]) -> Reading:
        """:meth:`read` without its shortcut: every door's account read and cross-checked."""
        chosen: tuple[Door, View] | None = None
        accounts: list[tuple[Door, View]] = []
        for door in self.trusted:
            view = door.view(headers, rest, scope)
            if view is None:
                continue
            accounts.append((door, view))
            if view.complete and (chosen is None or (door.signed(headers) and not chosen[0].signed(headers))):
                chosen = (door, view)
        for door in self.others:
            view = door.view(headers, rest, scope)
            if view is not None:
                accounts.append((door, view))
        peer = str(scope["client"][0]) if scope.get("client") else None
        if chosen is None:
            # Name the doors most likely in front: complete accounts bearing a mark a client cannot forge
            # through the other door (a client's own copy of a door's headers lacks it).
            likely = tuple(d.name for d, v in accounts if v.complete and d.signed(headers))
            return Reading(None, None, peer, "missing", None, likely or tuple(d.name for d, _ in accounts))
        door, view = chosen
        client = _text(view.client) or (peer if door.vouches_for_client else None)
        if any(other is not view and _disagree(view, other) for _, other in accounts):
            return Reading(None, None, client, "conflict", door.name, tuple(d.name for d, _ in accounts))
        return Reading(_text(view.method), _text(view.path), client, None, door.name)

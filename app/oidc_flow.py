"""One OpenID sign-in in flight: its ``state``, ``nonce``, PKCE verifier, the page to return to and the exact
``redirect_uri`` sent, sealed (app.session_keys, the session cookie's keys) into a short-lived cookie.

The cookie (``<cookie_name>-oidc``, ``__Host-authgate-oidc`` by default) is ``Secure``, ``HttpOnly``,
``Path=/``, without ``Domain`` and ``SameSite=Lax``, so that the provider's redirect back (a top-level GET from
another site) carries it and nothing else can read or set it. It lives FLOW_SECONDS and is cleared by the
callback whatever the outcome, so a callback can be used once. Nothing is kept server side: every replica can
finish a sign-in any other one began.
"""

from __future__ import annotations

import hmac
import json
from typing import NamedTuple

from app.session_keys import SessionKeys

FLOW_SECONDS = 600
_KIND = "oidc-flow"  # a sealed session never opens as a flow, nor a flow as a session (it lacks their fields)


class FlowState(NamedTuple):
    state: str
    nonce: str
    verifier: str
    rd: str  # the page first asked for (already checked by app.redirects)
    redirect_uri: str
    expires: int  # Unix seconds


def seal_flow(keys: SessionKeys, flow: FlowState) -> str:
    payload = {
        "k": _KIND,
        "s": flow.state,
        "n": flow.nonce,
        "v": flow.verifier,
        "r": flow.rd,
        "u": flow.redirect_uri,
        "e": flow.expires,
    }
    return keys.seal(json.dumps(payload, separators=(",", ":")).encode())


def open_flow(keys: SessionKeys | None, values: tuple[str, ...], now: float) -> FlowState | str:
    """The flow a request's cookie values hold, or why not: ``flow_missing``, ``flow_invalid`` (forged,
    altered, several cookies, sealed under a key no longer listed) or ``flow_expired``."""
    if not values:
        return "flow_missing"
    if keys is None or len(values) != 1:
        return "flow_invalid"
    opened = keys.open(values[0])
    if isinstance(opened, str):
        return "flow_invalid"
    try:
        payload = json.loads(opened[0])
        fields = (payload["s"], payload["n"], payload["v"], payload["r"], payload["u"])
        expires = payload["e"]
        kind = payload["k"]
    except (ValueError, TypeError, KeyError):
        return "flow_invalid"
    if kind != _KIND or not all(isinstance(f, str) for f in fields) or type(expires) is not int:
        return "flow_invalid"
    if now >= expires:
        return "flow_expired"
    return FlowState(*fields, expires)


def state_matches(flow: FlowState, sent: str | None) -> bool:
    """The callback's ``state`` against the flow's, in constant time."""
    return sent is not None and hmac.compare_digest(flow.state.encode(), sent.encode())

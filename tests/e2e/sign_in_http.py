"""Signing in through a front door with a raw HTTP client, as a browser does it, header for header.

For suites that need a session cookie but not a whole browser (tests/e2e/test_sign_in_doors.py is the
Chromium flow): a navigation carries what Chromium sends (``Accept: text/html``, ``Sec-Fetch-Mode:
navigate``); the form is fetched from ``<prefix>sign_in`` through the door (its CSRF cookie and the token
it repeats), and posted back from the same origin. Cookies are kept by hand: a ``__Host-`` cookie is
``Secure``, and these doors listen on plain HTTP on loopback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from http.client import HTTPMessage
from urllib.parse import urlencode

from tests.e2e.conftest import Answer, Gateway

COOKIE = "__Host-authgate"
CSRF_COOKIE = "__Host-authgate-csrf"
# What Chromium sends on a top-level navigation typed into the address bar.
NAVIGATION = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Site": "none",
    "Sec-Fetch-Dest": "document",
}
# What Chromium sends on a same-origin fetch() from a page of the application.
SAME_ORIGIN_FETCH = {"Accept": "application/json", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "same-origin"}


def set_cookies(headers: HTTPMessage) -> dict[str, str]:
    """Each ``Set-Cookie`` of an answer as name -> the whole header value."""
    return {value.split("=", 1)[0].strip(): value for value in headers.get_all("Set-Cookie") or []}


def cookie_pair(set_cookie: str) -> str:
    """``name=value`` of one ``Set-Cookie`` value, as a browser sends it back."""
    return set_cookie.split(";", 1)[0].strip()


def sign_in(
    gateway: Gateway,
    *,
    prefix: str,
    user: str,
    password: str,
    rd: str,
    origin: str,
    extra: Mapping[str, str] | None = None,
) -> tuple[Answer, str]:
    """Fetches the sign-in form through ``gateway`` and posts it; returns the post's answer and the session
    cookie (``name=value``) it set. ``origin`` is the origin the browser would name (``http://host:port``)."""
    page = gateway.request("GET", f"{prefix}sign_in?{urlencode({'rd': rd})}", {**NAVIGATION, **(extra or {})})
    assert page.status == 200, (page.status, page.body[:300])
    csrf_cookie = set_cookies(page.headers)[CSRF_COOKIE]
    match = re.search(rb'name="csrf" value="([^"]+)"', page.body)
    assert match is not None, page.body[:500]
    form = urlencode({"csrf": match.group(1).decode(), "rd": rd, "username": user, "password": password}).encode()
    headers = {
        **NAVIGATION,
        "Sec-Fetch-Site": "same-origin",
        "Origin": origin,
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": cookie_pair(csrf_cookie),
        **(extra or {}),
    }
    answer = gateway.request("POST", f"{prefix}sign_in", headers, form)
    assert answer.status == 303, (answer.status, answer.body[:300])
    return answer, cookie_pair(set_cookies(answer.headers)[COOKIE])

"""Every ``rd`` attack against the sign-in and sign-out forms (app.redirects)."""

from __future__ import annotations

import pytest

from app.redirects import safe_redirect

OWN = "prefect.example.com"
ALLOWED = (".apps.example.com", "grafana.example.com:8443")


@pytest.mark.parametrize(
    "rd",
    [
        "/",
        "/ui/flows?tab=runs&x=%2F",
        "/ui/#/dashboard",
        "/caf%C3%A9",
        "https://prefect.example.com/ui",
        "https://PREFECT.example.com/ui",
        "https://a.apps.example.com/x",
        "https://apps.example.com/",
        "https://grafana.example.com:8443/d",
    ],
)
def test_own_paths_and_allowed_hosts_pass(rd):
    assert safe_redirect(rd, OWN, ALLOWED) == rd


@pytest.mark.parametrize(
    "rd",
    [
        None,
        "",
        "//evil.example",  # protocol-relative
        "///evil.example",
        "/\\evil.example",  # a backslash is a slash to browsers
        "\\\\evil.example",
        "/\t/evil.example",  # browsers drop tabs and newlines
        "/\n/evil.example",
        "/%2F/evil.example",  # encoded slash, decoded by a later redirect
        "/%2f%2fevil.example",
        "/%5Cevil.example",
        "%2F%2Fevil.example",
        " /ok",
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "https://evil.example/",
        "https:evil.example",  # no authority
        "https:/evil.example",
        "http://prefect.example.com/ui",  # downgrade to http
        "https://prefect.example.com@evil.example/",  # user info
        "https://evil.example@prefect.example.com/",
        "https://prefect.example.com.evil.example/",  # own host as a prefix
        "https://evilapps.example.com/",  # not a subdomain of .apps.example.com
        "https://grafana.example.com/",  # listed with a port, asked without
        "https://grafana.example.com:9999/",
        "https://prefect.example.com:99999/",  # a port out of range
        "https://[::1/",
        "ftp://prefect.example.com/",
        "evil.example",
        "/" + "a" * 3000,
        "/\x00",
        "/caf\u00e9",  # raw non-ASCII: a browser would have percent-encoded it
        "/\u20ac",
    ],
)
def test_attacks_fall_back_to_the_root(rd):
    assert safe_redirect(rd, OWN, ALLOWED) == "/"


def test_http_only_when_sessions_are_not_secure():
    assert safe_redirect("http://prefect.example.com/ui", OWN, (), secure=False) == "http://prefect.example.com/ui"
    assert safe_redirect("http://evil.example/", OWN, (), secure=False) == "/"


def test_unknown_own_host_admits_paths_only():
    assert safe_redirect("/ui", None, ()) == "/ui"
    assert safe_redirect("https://prefect.example.com/ui", None, ()) == "/"

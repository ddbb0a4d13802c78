"""Every ``rd`` attack against the sign-in form (app.redirects): only a path on the same host passes."""

from __future__ import annotations

import pytest

from app.redirects import safe_redirect


@pytest.mark.parametrize(
    "rd",
    ["/", "/ui/flows?tab=runs&x=%2F", "/ui/#/dashboard", "/caf%C3%A9", "/a//b"],
)
def test_own_paths_pass(rd):
    assert safe_redirect(rd) == rd


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
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "/ok%5C",
        "/%09/evil.example",
        " /ok",
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "https://evil.example/",
        "https://prefect.example.com/ui",  # a scheme at all: never, even for the same host
        "https:evil.example",
        "http:/evil.example",
        "evil.example",
        "ui/flows",
        "/" + "a" * 3000,
        "/\x00",
        "/\x7f",
        "/caf\u00e9",  # raw non-ASCII: a browser would have percent-encoded it
        "/\u20ac",
    ],
)
def test_attacks_fall_back_to_the_root(rd):
    assert safe_redirect(rd) == "/"

"""The cross-check between doors (app/doors/reading.py): a forged account never decides."""

from __future__ import annotations

import itertools

import pytest

from app.doors import front_doors
from tests.unit.doors.wire import FORGED_NGINX, FORGED_TRAEFIK, NGF, NGINX, TRAEFIK, read


@pytest.mark.parametrize("proxy", [("ingress-nginx",), ("traefik",), ("ingress-nginx", "traefik"), ("envoy",)])
@pytest.mark.parametrize(
    ("door", "forged"),
    [("nginx", FORGED_TRAEFIK), ("traefik", FORGED_NGINX), ("nginx", {b"x-forwarded-method": b"GET"})],
    ids=["nginx+forged-traefik", "traefik+forged-nginx", "nginx+forged-method-only"],
)
def test_a_forged_account_never_becomes_the_reading(proxy, door, forged):
    """Whatever --proxy says and whichever door is in front, a client's own headers claiming another
    request leave method and path unknown (no exception can match) — never the forged values."""
    headers = {**(NGINX if door == "nginx" else TRAEFIK), **forged}
    rest = b"api/flows/filter" if proxy == ("envoy",) else None
    reading = read(proxy, headers, rest, method="POST")
    assert (reading.method, reading.path) != ("GET", "/api/health")
    assert reading.problem is not None and (reading.method, reading.path) == (None, None)


def test_the_wrong_single_door_is_missing_and_names_what_was_seen():
    assert read(("ingress-nginx",), TRAEFIK)[3:] == ("missing", None, ("traefik",))
    assert read(("traefik",), NGINX)[3:] == ("missing", None, ("ingress-nginx",))
    nothing = read(("ingress-nginx", "traefik"), {b"authorization": b"Bearer x"})
    assert nothing == (None, None, "10.9.9.9", "missing", None, ())


def test_agreeing_accounts_are_fine_and_the_address_comes_from_the_real_door():
    # A client that writes nginx's headers truthfully behind Traefik changes nothing; Traefik's account is
    # chosen because its X-Forwarded-Proto is something ingress-nginx always clears.
    truthful = {**TRAEFIK, b"x-original-url": b"http://x/api/flows/filter", b"x-original-method": b"POST"}
    reading = read(("ingress-nginx", "traefik"), {**truthful, b"x-real-ip": b"192.0.2.66"})
    assert reading == ("POST", "/api/flows/filter", "198.51.100.7", None, "traefik", ())
    # And behind nginx (no X-Forwarded-Proto), a truthful Traefik set leaves nginx's X-Real-IP in charge.
    truthful = {**NGINX, b"x-forwarded-uri": b"/api/flows/filter", b"x-forwarded-method": b"POST"}
    reading = read(("traefik", "ingress-nginx"), {**truthful, b"x-forwarded-for": b"192.0.2.66"})
    assert reading.door == "ingress-nginx" and reading.client == "198.51.100.7"


@pytest.mark.parametrize("proxy", [("ingress-nginx", "traefik"), ("ingress-nginx",), ("traefik",)])
@pytest.mark.parametrize("door", [NGINX, TRAEFIK], ids=["nginx", "traefik"])
def test_forged_gateway_fabric_headers_through_the_ingress_doors_conflict(proxy, door):
    reading = read(proxy, {**door, b"path": b"/api/health", b"method": b"GET"})
    assert (reading.method, reading.path) == (None, None) and reading.problem is not None


@pytest.mark.parametrize("proxy", [("ingress-nginx", "traefik"), ("path-prefix",), ("nginx-gateway-fabric",)])
def test_could_be_never_misses_a_path_the_reading_would_give(proxy):
    """The memo's shortcut: whenever the full reading names an anonymous path, could_be says so too."""
    from app.doors import front_doors

    doors = front_doors(proxy)
    for target in (b"/api/health", b"/api/health?x=1", b"/api/flows", b"/x/api/health"):
        headers = {
            b"x-original-url": b"http://h" + target,
            b"x-original-method": b"GET",
            b"path": target,
            b"method": b"GET",
        }
        rest = target[1:].split(b"?")[0]
        reading = doors.read(headers, rest, {"method": "GET", "client": None})
        hit = reading.path == "/api/health"
        assert doors.could_be(headers, rest, {}, (b"/api/health",)) or not hit
    assert not doors.could_be(
        {b"x-original-url": b"http://h/api/flows", b"path": b"/api/flows"}, b"api/flows", {}, (b"/api/health",)
    )


_PARTS = {
    "nginx": NGINX,
    "traefik": TRAEFIK,
    "ngf": NGF,
    "forged-nginx": FORGED_NGINX,
    "forged-traefik": FORGED_TRAEFIK,
    "nginx-method-only": {b"x-original-method": b"GET"},
    "nginx-url-only": {b"x-original-url": b"/api/health"},
    "nginx-empty-address": {**NGINX, b"x-real-ip": b""},
    "nginx-no-address": {k: v for k, v in NGINX.items() if k != b"x-real-ip"},
    "traefik-method-only": {b"x-forwarded-method": b"GET"},
    "ngf-path-only": {b"path": b"/api/health"},
    "other": {b"authorization": b"Bearer x", b"x-forwarded-for": b"192.0.2.1"},
}


@pytest.mark.parametrize("proxy", ["ingress-nginx", "traefik", "nginx-gateway-fabric", "path-prefix"])
@pytest.mark.parametrize("peer", [{"client": ("10.9.9.9", 5555)}, {"client": None}, {}])
def test_the_lone_door_shortcut_reads_exactly_as_every_door_read(proxy, peer):
    """One trusted door: read() skips the other doors when none of their marks is there; whatever the headers
    (any one or two doors' sets, forged, partial), it gives what reading and cross-checking every door gives."""
    doors = front_doors((proxy,))
    assert doors._lone is not None  # the shortcut is on for every single door
    for rest in (None, b"api/flows/filter?limit=1"):
        for first, second in itertools.combinations_with_replacement([{}, *_PARTS.values()], 2):
            headers = {**first, **second}
            scope = {**peer, "method": "POST"}
            assert doors.read(headers, rest, scope) == doors.read_all(headers, rest, scope), (headers, rest)


def test_several_trusted_doors_take_no_shortcut():
    assert front_doors(("ingress-nginx", "traefik"))._lone is None


@pytest.mark.parametrize(
    "envoy_http",
    [
        (b"GET", b"/api/flows?limit=1", b"10.1.1.1"),
        (b"GET", b"/api/flows", b""),  # no source address: the peer, when there is one
        (b"", b"/api/flows", b"10.1.1.1"),  # no method: incomplete
        (b"GET", b"api/flows", b"10.1.1.1"),  # a target that is no path: incomplete
        (b"", b"", b""),  # no HTTP attributes: no account at all
    ],
)
@pytest.mark.parametrize("peer", [{"client": ("10.9.9.9", 5555)}, {}])
def test_the_grpc_wires_lone_door_reads_exactly_as_every_door_read(envoy_http, peer):
    """The gRPC wire trusts Envoy's CheckRequest alone (app.doors.envoy_grpc.GRPC_DOORS): its shortcut gives
    what reading and cross-checking every door gives, with or without header doors' marks in http.headers."""
    from app.doors.envoy_grpc import GRPC_DOORS

    assert GRPC_DOORS._lone is not None
    for first, second in itertools.combinations_with_replacement([{}, *_PARTS.values()], 2):
        headers = {**first, **second}
        scope = {**peer, "envoy_http": envoy_http}
        assert GRPC_DOORS.read(headers, None, scope) == GRPC_DOORS.read_all(headers, None, scope), headers

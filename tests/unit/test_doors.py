"""Reading the original request: each front door's wire format, and the cross-check between doors."""

from __future__ import annotations

import pytest

from app.doors import front_doors
from app.doors.base import last_hop, path_of

PEER = {"client": ("10.9.9.9", 5555), "method": "GET"}

# What each real door sends for a client's `POST /api/flows/filter` from 198.51.100.7.
NGINX = {
    b"x-original-url": b"https://prefect.example.com/api/flows/filter?limit=1",
    b"x-original-method": b"POST",
    b"x-real-ip": b"198.51.100.7",
    b"x-forwarded-for": b"198.51.100.7",
    b"x-sent-from": b"nginx-ingress-controller",
}
TRAEFIK = {
    b"x-forwarded-method": b"POST",
    b"x-forwarded-uri": b"/api/flows/filter?limit=1",
    b"x-forwarded-host": b"prefect.example.com",
    b"x-forwarded-proto": b"https",
    b"x-forwarded-for": b"203.0.113.1, 198.51.100.7",
}
# A client's forgery claiming to be `GET /api/health`, in each door's headers.
FORGED_NGINX = {b"x-original-url": b"https://prefect.example.com/api/health", b"x-original-method": b"GET"}
FORGED_TRAEFIK = {b"x-forwarded-uri": b"/api/health", b"x-forwarded-method": b"GET"}


def read(proxy: tuple[str, ...], headers: dict[bytes, bytes], rest: bytes | None = None, method: str = "GET"):
    return front_doors(proxy).read(headers, rest, {**PEER, "method": method})


@pytest.mark.parametrize("proxy", [("ingress-nginx",), ("ingress-nginx", "traefik"), ("traefik", "ingress-nginx")])
def test_behind_nginx_the_original_request_is_nginx_s(proxy):
    reading = read(proxy, NGINX)
    assert reading == ("POST", "/api/flows/filter", "198.51.100.7", None, "ingress-nginx", ())


@pytest.mark.parametrize("proxy", [("traefik",), ("ingress-nginx", "traefik")])
def test_behind_traefik_the_original_request_is_traefik_s(proxy):
    reading = read(proxy, TRAEFIK)
    assert reading == ("POST", "/api/flows/filter", "198.51.100.7", None, "traefik", ())


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


def test_envoy_without_an_original_path_is_missing_and_behind_nginx_conflicts():
    assert read(("envoy",), {})[3] == "missing"
    # --proxy envoy behind nginx: the auth-url path carries no original path ...
    assert read(("envoy",), NGINX)[3:5] == ("missing", None)
    # ... and had it one, nginx's own account would contradict it.
    assert read(("envoy",), NGINX, b"api/health")[3] == "conflict"
    assert read(("envoy",), {}, b"api/flows", method="DELETE")[:2] == ("DELETE", "/api/flows")


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


def test_a_raw_hash_stays_in_the_path_and_only_the_query_is_cut():
    headers = {**NGINX, b"x-original-url": b"http://h/api/health#/../flows?x=1", b"x-original-method": b"GET"}
    assert read(("ingress-nginx",), headers).path == "/api/health#/../flows"
    assert path_of(b"/a?b#c") == b"/a" and last_hop(b"1.1.1.1, 2.2.2.2 ") == b"2.2.2.2" and last_hop(b"") is None


def test_only_envoy_asks_to_remove_identity_headers_on_an_anonymous_allow():
    envoy = front_doors(("envoy",)).trusted[0]
    assert envoy.allow_headers(identified=False) == [
        (b"x-envoy-auth-headers-to-remove", b"x-auth-request-user, x-auth-request-scheme")
    ]
    assert envoy.allow_headers(identified=True) == []
    for door in front_doors(("ingress-nginx", "traefik")).trusted:
        assert door.allow_headers(identified=False) == []


# What NGINX Gateway Fabric sends for the same request (fixed auth path; X-Forwarded-For only if the
# operator listed it in allowedHeaders, and then it is the client's own claim).
NGF = {b"path": b"/api/flows/filter?limit=1", b"method": b"POST", b"x-forwarded-for": b"192.0.2.99"}


def test_nginx_gateway_fabric_reads_path_and_method_and_vouches_for_no_address():
    reading = read(("nginx-gateway-fabric",), NGF)
    assert reading == ("POST", "/api/flows/filter", "10.9.9.9", None, "nginx-gateway-fabric", ())


@pytest.mark.parametrize("proxy", [("ingress-nginx", "traefik"), ("ingress-nginx",), ("traefik",)])
@pytest.mark.parametrize("door", [NGINX, TRAEFIK], ids=["nginx", "traefik"])
def test_forged_gateway_fabric_headers_through_the_ingress_doors_conflict(proxy, door):
    reading = read(proxy, {**door, b"path": b"/api/health", b"method": b"GET"})
    assert (reading.method, reading.path) == (None, None) and reading.problem is not None


def test_path_prefix_and_gateway_fabric_together_cover_both_gateway_api_implementations():
    both = ("path-prefix", "nginx-gateway-fabric")
    # Cilium (Envoy): the original path is appended to the filter's path.
    assert read(both, {b"x-forwarded-for": b"198.51.100.7"}, b"api/flows", method="DELETE")[:4] == (
        "DELETE",
        "/api/flows",
        "198.51.100.7",
        None,
    )
    # NGINX Gateway Fabric: a fixed path, the original request in Path and Method.
    assert read(both, NGF)[:2] == ("POST", "/api/flows/filter")
    # A client's Path/Method headers behind Envoy (only if allowedHeaders let them through) must agree.
    forged = read(both, {b"path": b"/api/health", b"method": b"GET"}, b"api/flows", method="DELETE")
    assert forged.problem == "conflict"

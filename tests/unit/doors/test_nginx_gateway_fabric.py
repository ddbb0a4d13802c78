"""NGINX Gateway Fabric: Path/Method headers, no client address (app/doors/nginx_gateway_fabric.py)."""

from __future__ import annotations

from tests.unit.doors.wire import NGF, read


def test_nginx_gateway_fabric_reads_path_and_method_and_vouches_for_no_address():
    reading = read(("nginx-gateway-fabric",), NGF)
    # Not the client's X-Forwarded-For claim, and not the peer either (that is NGF itself).
    assert reading == ("POST", "/api/flows/filter", None, None, "nginx-gateway-fabric", ())


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

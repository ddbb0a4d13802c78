"""Path-prefix (Envoy ext_authz HTTP, Envoy Gateway, Istio, Cilium): the request line (app/doors/path_prefix.py)."""

from __future__ import annotations

from app.doors import front_doors
from tests.unit.doors.wire import NGINX, read


def test_envoy_without_an_original_path_is_missing_and_behind_nginx_conflicts():
    assert read(("envoy",), {})[3] == "missing"
    # --proxy envoy behind nginx: the auth-url path carries no original path ...
    assert read(("envoy",), NGINX)[3:5] == ("missing", None)
    # ... and had it one, nginx's own account would contradict it.
    assert read(("envoy",), NGINX, b"api/health")[3] == "conflict"
    assert read(("envoy",), {}, b"api/flows", method="DELETE")[:2] == ("DELETE", "/api/flows")


def test_only_envoy_asks_to_remove_identity_headers_on_an_anonymous_allow():
    envoy = front_doors(("envoy",)).trusted[0]
    assert envoy.allow_headers(identified=False) == [
        (b"x-envoy-auth-headers-to-remove", b"x-auth-request-user, x-auth-request-scheme")
    ]
    assert envoy.allow_headers(identified=True) == []
    for door in front_doors(("ingress-nginx", "traefik")).trusted:
        assert door.allow_headers(identified=False) == []

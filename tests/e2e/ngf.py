"""Real Debian nginx configured the way NGINX Gateway Fabric renders an HTTPRoute with the Gateway API
``ExternalAuth`` filter (NGF ``internal/controller/nginx/config/servers.go``, checked in NGF's source, 2026-08),
from the chart's rendered HTTPRoutes:

- per rule, the path prefix as ``location = /api`` + ``location /api/`` (``/`` as ``location /``), with
  ``auth_request`` to an internal location, ``auth_request_set`` + ``proxy_set_header`` per
  ``allowedResponseHeaders`` entry, and the WebSocket upgrade headers;
- the internal location ``proxy_pass``-es to the auth Service + the filter's fixed ``http.path`` (the
  client's path is *not* appended), with ``proxy_pass_request_headers off``, ``proxy_pass_request_body off``
  and exactly ``Host``, ``Path: $request_uri``, ``Method: $request_method``,
  ``Authorization: $http_authorization``, plus each ``allowedHeaders`` name copied from the client's own
  request (``$http_<name>``): an ``X-Forwarded-For`` there is the client's claim.

Not mirrored: NJS header/method matching, TLS, NGF's other policies. ``translate`` maps the in-cluster
Service references to loopback addresses, the only liberty taken.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def _header_var(name: str) -> str:
    return "$http_" + name.lower().replace("-", "_")


def _auth_location(name: str, auth_target: str, allowed_headers: Sequence[str]) -> str:
    lines = [
        f"        location {name} {{",
        "            internal;",
        f"            proxy_pass {auth_target};",
        "            proxy_pass_request_headers off;",
        "            proxy_pass_request_body off;",
        '            proxy_set_header Content-Length "";',
        "            proxy_set_header Host $host;",
        "            proxy_set_header Path $request_uri;",
        "            proxy_set_header Method $request_method;",
        "            proxy_set_header Authorization $http_authorization;",
        *(
            f"            proxy_set_header {h} {_header_var(h)};"
            for h in allowed_headers
            if h.lower() != "authorization"
        ),
        "            proxy_http_version 1.1;",
        "        }",
    ]
    return "\n".join(lines)


def _proxy_location(modifier: str, path: str, auth: str | None, backend: str, response_headers: Sequence[str]) -> str:
    sets = []
    for number, header in enumerate(response_headers):
        var = f"$ngf_auth_{number}"
        sets += [
            f"            auth_request_set {var} $upstream_http_{header.lower().replace('-', '_')};",
            f"            proxy_set_header {header} {var};",
        ]
    return "\n".join(
        [
            f"        location {modifier}{path} {{",
            *([f"            auth_request {auth};"] if auth is not None else []),
            *sets,
            "            proxy_http_version 1.1;",
            "            proxy_set_header Host $host;",
            "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "            proxy_set_header Upgrade $http_upgrade;",
            "            proxy_set_header Connection $connection_upgrade;",
            "            proxy_read_timeout 3600s;",
            f"            proxy_pass http://{backend};",
            "        }",
        ]
    )


def render_servers(
    routes: Sequence[dict[str, Any]], *, listen_port: int, translate: Callable[[dict[str, Any]], str]
) -> str:
    """``server`` blocks for HTTPRoutes (dicts as rendered); ``translate(backendRef)`` -> ``HOST:PORT``."""
    by_host: dict[str, list[str]] = {}
    for route in routes:
        for host in route["spec"].get("hostnames", ["_"]):
            blocks = by_host.setdefault(host, [])
            for rule_number, rule in enumerate(route["spec"]["rules"]):
                [match] = rule["matches"]
                prefix = match["path"]["value"]
                [backend_ref] = rule["backendRefs"]
                backend = translate(backend_ref)
                auth_name = f"/_ngf-internal-{route['metadata']['name']}-rule{rule_number}-ext-auth"
                response_headers: Sequence[str] = ()
                auth: str | None = None  # a rule without the filter has no auth_request
                for flt in rule.get("filters", []):
                    if flt["type"] == "ExternalAuth":
                        external = flt["externalAuth"]
                        assert external["protocol"] == "HTTP"
                        target = f"http://{translate(external['backendRef'])}{external['http']['path']}"
                        blocks.append(_auth_location(auth_name, target, external["http"].get("allowedHeaders", [])))
                        response_headers = external["http"].get("allowedResponseHeaders", [])
                        auth = auth_name
                if prefix == "/":
                    blocks.append(_proxy_location("", "/", auth, backend, response_headers))
                else:
                    stripped = prefix.rstrip("/")
                    blocks.append(_proxy_location("= ", stripped, auth, backend, response_headers))
                    blocks.append(_proxy_location("", stripped + "/", auth, backend, response_headers))
    return "".join(
        "    server {\n"
        f"        server_name {host};\n"
        f"        listen 127.0.0.1:{listen_port};\n" + "\n".join(blocks) + "\n    }\n"
        for host, blocks in by_host.items()
    )


def render_ngf_conf(
    routes: Sequence[dict[str, Any]], *, listen_port: int, prefix: Path, translate: Callable[[dict[str, Any]], str]
) -> str:
    from tests.e2e.nginx import nginx_conf

    return nginx_conf(
        prefix=prefix,
        listen_port=listen_port,
        servers=render_servers(routes, listen_port=listen_port, translate=translate),
        head="# Rendered by tests/e2e/ngf.py in the shape of NGINX Gateway Fabric's ExternalAuth locations.\n",
    )

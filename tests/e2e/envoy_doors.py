"""A real Envoy configured the way each Envoy-based controller translates the chart's rendered objects.

Each function takes a render of the chart (tests/chart/render.py) and returns a static Envoy bootstrap
(tests/support/envoy.py) with the listener, routes, ext_authz filter and clusters that controller would push
over xDS for those objects. ``address(ref)`` maps an in-cluster Service reference (``{"name", "namespace",
"port"}``) to a loopback port — the only liberty taken besides what each function lists as not mirrored.

- :func:`envoy_gateway` — Envoy Gateway's SecurityPolicy ``extAuth.http`` and ``extAuth.grpc`` on the
  HTTPRoutes it targets (envoyproxy/gateway ``internal/xds/translator/extauth.go``, ``listener.go``,
  ``route.go``): one ext_authz filter per policy, *disabled* in the connection manager and enabled on the
  routes of the HTTPRoute the policy targets; ``transport_api_version: V3``; ``failure_mode_allow`` =
  ``failOpen``; ``allowed_headers`` = ``headersToExtAuth`` as exact, case-insensitive matchers; HTTP:
  ``path_prefix`` = ``http.path``, ``server_uri`` to the backend's cluster with ``timeout``,
  ``allowed_upstream_headers`` = ``headersToBackend`` as exact, case-insensitive matchers; gRPC:
  ``envoy_grpc`` to the backend's cluster (HTTP/2) with ``timeout``; on each route an ``ExtAuthzPerRoute``
  whose ``check_settings.context_extensions`` are the policy's ``contextExtensions`` (none: empty).
  (Envoy Gateway releases before ``IgnoreCase: true`` was set made those matchers case-sensitive: Envoy
  compares them with lower-case header names, so a capitalised ``headersToBackend`` entry copied nothing.)
  PathPrefix ``/api`` is ``path_separated_prefix``, ``/`` is ``prefix``; ``timeouts.request`` is the route timeout; the
  connection manager has Envoy Gateway's defaults: ``use_remote_address``, ``normalize_path``,
  ``merge_slashes``, ``path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT``, WebSocket upgrades.
- :func:`contour` — Contour's HTTPProxy ``virtualhost.authorization`` with an ExtensionService
  (projectcontour/contour ``internal/envoy/v3/listener.go`` ``FilterExternalAuthz``, ``route.go``): one
  gRPC ext_authz filter on the virtual host's listener, ``envoy_grpc`` to the ExtensionService's cluster
  ``extension/<namespace>/<name>`` (h2c: HTTP/2 in clear) with ``timeout`` = ``responseTimeout``,
  ``clear_route_cache``, ``failure_mode_allow`` = ``failOpen``, ``status_on_error: 403``,
  ``include_peer_certificate``, ``transport_api_version: V3``; per route ``authPolicy.context`` as
  ``check_settings.context_extensions``; ``enableWebsockets`` as the route's upgrade config;
  ``timeoutPolicy.response``/``idle`` as the route's ``timeout``/``idle_timeout``; conditions ``prefix`` as
  a plain ``prefix`` match; an included HTTPProxy's routes under the include's prefix. Not mirrored: the
  TLS of the virtual host (Contour puts authorization on the HTTPS listener only; here the same filter
  chain listens in clear).
- :func:`gateway_api` — the Gateway API ``ExternalAuth`` filter as an Envoy-based implementation (Cilium 1.20)
  runs it, from the filter's definition (kubernetes-sigs/gateway-api GEP-1494, ``apis/v1/httproute_types.go``
  ``HTTPExternalAuthFilter``: "prepended to the path", "MUST fail closed"): one ext_authz filter per rule,
  enabled on that rule's route; ``protocol: HTTP``: ``path_prefix`` = ``http.path``, ``allowed_headers`` =
  ``allowedHeaders``, ``allowed_upstream_headers`` = ``allowedResponseHeaders``; ``protocol: GRPC``: a gRPC
  service to the ``backendRef``, ``allowed_headers`` = ``grpc.allowedHeaders``, no per-route context
  (authgate decides with ``--grpc-default-route``); ``failure_mode_allow: false``. Cilium's own translation
  was not read (it is not in the searchable sources here): the matchers' case-insensitivity and the
  connection manager's defaults are Envoy Gateway's, and the service's timeout is 10 s for both protocols
  (the filter has none; Envoy's gRPC default, 200 ms, refused checks on a loaded test machine).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from tests.chart.render import Render
from tests.support.envoy import (
    EXT_AUTHZ_PER_ROUTE,
    bootstrap,
    cluster,
    ext_authz_filter,
    http_listener,
    virtual_host,
)

FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
EXT_AUTHZ = "envoy.filters.http.ext_authz"
# The listener every translation below names; a test reaches it with EnvoyProcess.url(LISTENER).
LISTENER = "http"

Address = Callable[[Mapping[str, Any]], int]


def _exact(names: Sequence[str], *, ignore_case: bool) -> dict[str, Any]:
    return {"patterns": [{"exact": name, "ignore_case": ignore_case} for name in names]}


def _cluster_for(clusters: dict[str, dict[str, Any]], name: str, port: int, *, http2: bool = False) -> str:
    clusters.setdefault(name, cluster(name, port, http2=http2))
    return name


def _service_cluster(ref: Mapping[str, Any], namespace: str) -> str:
    return f"{ref.get('namespace', namespace)}/{ref['name']}/{ref['port']}"


def _route_for_prefix(prefix: str, *, separated: bool) -> dict[str, Any]:
    if prefix == "/":
        return {"prefix": "/"}
    return {"path_separated_prefix": prefix.rstrip("/")} if separated else {"prefix": prefix}


def _enable(context_extensions: Mapping[str, str]) -> dict[str, Any]:
    """The per-route config that turns a filter disabled in the connection manager on for one route: a
    ``FilterConfig`` holding an ``ExtAuthzPerRoute`` whose ``check_settings`` carry the route's
    ``context_extensions`` (Envoy Gateway's ``patchRoute`` passes one on every route, empty without
    ``contextExtensions``; Envoy 1.40 refuses a ``FilterConfig`` with no ``config`` that does not disable)."""
    settings = {"context_extensions": dict(context_extensions)} if context_extensions else {}
    return {"@type": FILTER_CONFIG, "config": {"@type": EXT_AUTHZ_PER_ROUTE, "check_settings": settings}}


def _policies_by_route(render: Render) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for policy in render.all("SecurityPolicy"):
        for target in policy["spec"]["targetRefs"]:
            assert target["kind"] == "HTTPRoute"
            found[target["name"]] = policy
    return found


def _http_routes(render: Render) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(HTTPRoute, rule) pairs, longest path first (every controller orders prefix matches that way)."""
    pairs = [(route, rule) for route in render.all("HTTPRoute") for rule in route["spec"]["rules"]]
    yield from sorted(pairs, key=lambda pair: -len(pair[1]["matches"][0]["path"]["value"]))


def _hostnames(render: Render) -> list[str]:
    return sorted({host for route in render.all("HTTPRoute") for host in route["spec"].get("hostnames", ["*"])})


def envoy_gateway(render: Render, *, listen_port: int, address: Address) -> dict[str, Any]:
    """Envoy Gateway's xDS for the rendered HTTPRoutes and SecurityPolicies (HTTP or gRPC ext_authz)."""
    policies = _policies_by_route(render)
    clusters: dict[str, dict[str, Any]] = {}
    filters: dict[str, dict[str, Any]] = {}
    routes = []
    for route, rule in _http_routes(render):
        namespace = route["metadata"]["namespace"]
        [backend] = rule["backendRefs"]
        upstream = _cluster_for(clusters, _service_cluster(backend, namespace), address(backend))
        [match] = rule["matches"]
        assert match["path"]["type"] == "PathPrefix"
        action: dict[str, Any] = {"cluster": upstream}
        if "timeouts" in rule and "request" in rule["timeouts"]:
            action["timeout"] = rule["timeouts"]["request"]
        xds_route: dict[str, Any] = {
            "match": _route_for_prefix(match["path"]["value"], separated=True),
            "route": action,
        }
        policy = policies.get(route["metadata"]["name"])
        if policy is not None:
            meta = policy["metadata"]
            name = f"{EXT_AUTHZ}/securitypolicy/{meta['namespace']}/{meta['name']}"
            if name not in filters:
                filters[name] = _envoy_gateway_filter(policy, clusters, address)
            extensions = {
                item["name"]: item["value"]
                for item in policy["spec"]["extAuth"].get("contextExtensions", [])
                if item.get("type", "Value") == "Value"
            }
            xds_route["typed_per_filter_config"] = {name: _enable(extensions)}
        routes.append(xds_route)
    hcm = {
        "use_remote_address": True,
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
    }
    listener = http_listener(
        LISTENER,
        listen_port,
        [virtual_host("gateway", _hostnames(render), routes)],
        [{**f, "disabled": True} for f in filters.values()],
        hcm_extra=hcm,
    )
    return bootstrap(listeners=[listener], clusters=list(clusters.values()))


def _envoy_gateway_filter(policy: Mapping[str, Any], clusters: dict[str, dict[str, Any]], address: Address) -> Any:
    meta = policy["metadata"]
    ext = policy["spec"]["extAuth"]
    config: dict[str, Any] = {"transport_api_version": "V3", "failure_mode_allow": bool(ext.get("failOpen", False))}
    if ext.get("headersToExtAuth"):
        config["allowed_headers"] = _exact(ext["headersToExtAuth"], ignore_case=True)
    timeout = ext.get("timeout", "10s")
    if "http" in ext:
        http = ext["http"]
        [ref] = http["backendRefs"]
        name = _cluster_for(clusters, _service_cluster(ref, meta["namespace"]), address(ref))
        service: dict[str, Any] = {
            "server_uri": {
                "uri": f"http://{ref['name']}.{ref.get('namespace', meta['namespace'])}:{ref['port']}{http['path']}",
                "cluster": name,
                "timeout": timeout,
            },
            "path_prefix": http["path"],
        }
        if http.get("headersToBackend"):
            service["authorization_response"] = {
                "allowed_upstream_headers": _exact(http["headersToBackend"], ignore_case=True)
            }
        config["http_service"] = service
    else:
        [ref] = ext["grpc"]["backendRefs"]
        name = _cluster_for(clusters, _service_cluster(ref, meta["namespace"]), address(ref), http2=True)
        authority = f"{ref['name']}.{ref.get('namespace', meta['namespace'])}:{ref['port']}"
        config["grpc_service"] = {"envoy_grpc": {"cluster_name": name, "authority": authority}, "timeout": timeout}
    return ext_authz_filter(config, name=f"{EXT_AUTHZ}/securitypolicy/{meta['namespace']}/{meta['name']}")


def contour(render: Render, *, listen_port: int, address: Address) -> dict[str, Any]:
    """Contour's xDS for the rendered root HTTPProxy (with authorization), the HTTPProxies it includes and the
    ExtensionService. An included proxy's routes join the root's virtual host with the include's prefix
    before their own (Contour's ``includes``: conditions concatenated, ``/_auth`` + ``/`` = ``/_auth/``), its
    Services resolved in its own namespace."""
    [proxy] = [p for p in render.all("HTTPProxy") if "virtualhost" in p["spec"]]
    namespace = proxy["metadata"]["namespace"]
    authorization = proxy["spec"]["virtualhost"]["authorization"]
    ref = authorization["extensionRef"]
    extension = render.one("ExtensionService", ref["name"])
    assert extension["metadata"]["namespace"] == ref.get("namespace", namespace)
    assert extension["spec"]["protocol"] == "h2c" and extension["spec"]["protocolVersion"] == "v3"
    [service] = extension["spec"]["services"]
    clusters: dict[str, dict[str, Any]] = {}
    auth_cluster = _cluster_for(
        clusters,
        f"extension/{extension['metadata']['namespace']}/{extension['metadata']['name']}",
        address({**service, "namespace": extension["metadata"]["namespace"]}),
        http2=True,
    )
    authz = ext_authz_filter(
        {
            "grpc_service": {
                "envoy_grpc": {"cluster_name": auth_cluster},
                "timeout": authorization.get("responseTimeout", extension["spec"]["timeoutPolicy"]["response"]),
            },
            "clear_route_cache": True,
            "failure_mode_allow": bool(authorization.get("failOpen", False)),
            "status_on_error": {"code": 403},
            "metadata_context_namespaces": [],
            "include_peer_certificate": True,
            "transport_api_version": "V3",
        }
    )
    routes = []
    # (prefix, route, namespace of its Services): the root's own, then each included proxy's.
    merged = [(r["conditions"][0]["prefix"], r, namespace) for r in proxy["spec"]["routes"]]
    for include in proxy["spec"].get("includes", []):
        included = render.one("HTTPProxy", include["name"])
        included_namespace = included["metadata"]["namespace"]
        assert included_namespace == include.get("namespace", namespace)
        [include_condition] = include["conditions"]
        for r in included["spec"]["routes"]:
            prefix = include_condition["prefix"].rstrip("/") + r["conditions"][0]["prefix"]
            merged.append((prefix, r, included_namespace))
    for prefix, proxy_route, services_namespace in sorted(merged, key=lambda m: -len(m[0])):
        [backend] = proxy_route["services"]
        backend = {**backend, "namespace": backend.get("namespace", services_namespace)}
        upstream = _cluster_for(clusters, _service_cluster(backend, services_namespace), address(backend))
        action: dict[str, Any] = {"cluster": upstream}
        timeouts = proxy_route.get("timeoutPolicy", {})
        if "response" in timeouts:
            action["timeout"] = timeouts["response"]
        if "idle" in timeouts:
            action["idle_timeout"] = timeouts["idle"]
        if proxy_route.get("enableWebsockets"):
            action["upgrade_configs"] = [{"upgrade_type": "websocket"}]
        xds_route: dict[str, Any] = {"match": _route_for_prefix(prefix, separated=False), "route": action}
        policy = proxy_route.get("authPolicy", {})
        if policy.get("disabled"):
            xds_route["typed_per_filter_config"] = {EXT_AUTHZ: {"@type": EXT_AUTHZ_PER_ROUTE, "disabled": True}}
        elif policy.get("context"):
            xds_route["typed_per_filter_config"] = {
                EXT_AUTHZ: {"@type": EXT_AUTHZ_PER_ROUTE, "check_settings": {"context_extensions": policy["context"]}}
            }
        routes.append(xds_route)
    host = proxy["spec"]["virtualhost"]["fqdn"]
    listener = http_listener(
        LISTENER,
        listen_port,
        [virtual_host(host, [host, f"{host}:*"], routes)],
        [authz],
        hcm_extra={"use_remote_address": True, "normalize_path": True, "upgrade_configs": []},
    )
    return bootstrap(listeners=[listener], clusters=list(clusters.values()))


def gateway_api(render: Render, *, listen_port: int, address: Address) -> dict[str, Any]:
    """An Envoy-based implementation's xDS for HTTPRoutes with the ``ExternalAuth`` filter (HTTP or gRPC)."""
    clusters: dict[str, dict[str, Any]] = {}
    filters: dict[str, dict[str, Any]] = {}
    routes = []
    for route, rule in _http_routes(render):
        namespace = route["metadata"]["namespace"]
        [backend] = rule["backendRefs"]
        upstream = _cluster_for(clusters, _service_cluster(backend, namespace), address(backend))
        action: dict[str, Any] = {"cluster": upstream}
        if "timeouts" in rule and "request" in rule["timeouts"]:
            action["timeout"] = rule["timeouts"]["request"]
        [match] = rule["matches"]
        xds_route: dict[str, Any] = {
            "match": _route_for_prefix(match["path"]["value"], separated=True),
            "route": action,
        }
        for number, flt in enumerate(rule.get("filters", [])):
            if flt["type"] != "ExternalAuth":
                continue
            external = flt["externalAuth"]
            ref = external["backendRef"]
            grpc = external["protocol"] == "GRPC"
            auth_cluster = _cluster_for(clusters, _service_cluster(ref, namespace), address(ref), http2=grpc)
            name = f"{EXT_AUTHZ}/{namespace}/{route['metadata']['name']}/{number}"
            config: dict[str, Any] = {"failure_mode_allow": False, "transport_api_version": "V3"}
            settings = external["grpc" if grpc else "http"]
            if grpc:
                # The filter names no timeout; Envoy's default for a gRPC check is 200 ms, which a loaded test
                # machine can exceed (a bare 403 then): the same 10 s as the HTTP service below.
                config["grpc_service"] = {"envoy_grpc": {"cluster_name": auth_cluster}, "timeout": "10s"}
            else:
                assert external["protocol"] == "HTTP"
                config["http_service"] = {
                    "server_uri": {
                        "uri": f"http://{ref['name']}{settings['path']}",
                        "cluster": auth_cluster,
                        "timeout": "10s",
                    },
                    "path_prefix": settings["path"],
                }
                if settings.get("allowedResponseHeaders"):
                    config["http_service"]["authorization_response"] = {
                        "allowed_upstream_headers": _exact(settings["allowedResponseHeaders"], ignore_case=True)
                    }
            if settings.get("allowedHeaders"):
                config["allowed_headers"] = _exact(settings["allowedHeaders"], ignore_case=True)
            filters[name] = {**ext_authz_filter(config, name=name), "disabled": True}
            xds_route["typed_per_filter_config"] = {name: _enable({})}
        routes.append(xds_route)
    listener = http_listener(
        LISTENER,
        listen_port,
        [virtual_host("gateway", _hostnames(render), routes)],
        list(filters.values()),
        hcm_extra={"use_remote_address": True, "normalize_path": True, "merge_slashes": True},
    )
    return bootstrap(listeners=[listener], clusters=list(clusters.values()))


TRANSLATIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "envoy-gateway": envoy_gateway,
    "contour": contour,
    "gateway-api": gateway_api,
}

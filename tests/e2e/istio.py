"""A Gateway's Envoy configured the way a default istiod configures it for the chart's Istio objects: the
rendered ``HTTPRoute``s, the ``action: CUSTOM`` ``AuthorizationPolicy``s, and the meshConfig extension
provider the chart's NOTES print. Written from istio/istio's source:

* ``pilot/pkg/security/authz/builder/builder.go`` (``build``, ``buildHTTP``, ``getBadCustomDenyRules``,
  ``policyName``): per provider, an RBAC filter whose *shadow* rules are the CUSTOM policies' rules (stat
  prefix ``istio_ext_authz_``), followed by the provider's ext_authz filter, which runs only when a shadow rule
  matched. More than one provider on a workload without ``PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS``
  (default false; Istio <= 1.29 has no such flag and always refuses): no ext_authz at all, but an
  *enforcing* DENY RBAC filter with every policy's rules — "RBAC: access denied" on every path they cover.
* ``pilot/pkg/security/authz/builder/extauthz.go`` (``generateHTTPConfig``, ``generateGRPCConfig``,
  ``generateHeaders``, ``timeoutOrDefault``): ``pathPrefix`` → ``path_prefix``,
  ``includeRequestHeadersInCheck`` → ``allowed_headers``, ``headersToUpstreamOnAllow`` →
  ``allowed_upstream_headers``, ``headersToDownstreamOnDeny`` → ``allowed_client_headers``,
  ``headersToDownstreamOnAllow`` → ``allowed_client_headers_on_success`` (exact, ignore case),
  ``statusOnError`` → ``status_on_error`` (unset: Envoy's 403), ``failOpen`` →
  ``failure_mode_allow`` (unset: false); the gRPC service's authority is the cluster name with ``|`` → ``_.``.
* ``pilot/pkg/security/authz/model/generator.go`` and its golden files
  (``builder/testdata/http/allow-full-rule-out.yaml``): ``hosts`` → ``:authority`` exact, ignoring case;
  ``paths`` ``/x`` → exact, ``/x/*`` → prefix ``/x/``, ``/*`` → prefix ``/``; ``notPaths`` → a ``not_rule``.
* The gateway's HTTP connection manager: ``use_remote_address`` (a gateway is the edge) and meshConfig
  ``pathNormalization`` at its default, ``BASE`` (``normalize_path``, escaped slashes kept, slashes not merged).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml

from tests.support.envoy import cluster, ext_authz_filter, http_listener, virtual_host

RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
EXT_AUTHZ_PREFIX = "istio-ext-authz"
SHADOW_STAT_PREFIX = "istio_ext_authz_"
# istiod's default: several CUSTOM providers on one workload are refused (Istio 1.30; <= 1.29 has no flag).
MULTIPLE_CUSTOM_PROVIDERS_DEFAULT = False
HCM_GATEWAY = {
    "use_remote_address": True,
    "normalize_path": True,
    "merge_slashes": False,
    "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
}


def providers_from_notes(notes: str) -> list[dict[str, Any]]:
    """The ``meshConfig.extensionProviders`` the chart's NOTES ask the operator to add."""
    block = notes.split("  meshConfig:\n", 1)[1].split("\n\n", 1)[0]
    providers: list[dict[str, Any]] = yaml.safe_load(block)["extensionProviders"]
    return providers


def cluster_name(service: str, port: int) -> str:
    """istiod's outbound cluster of a Service port (``model.BuildSubsetKey``)."""
    return f"outbound|{port}||{service}"


def _string_list(names: Sequence[str]) -> dict[str, Any]:
    return {"patterns": [{"exact": name, "ignore_case": True} for name in names]}


def _filter_enabled(provider: str) -> dict[str, Any]:
    """When the provider's ext_authz runs: a shadow rule of *its* policies matched (builder.go
    ``generateFilterMatcherForProvider``; the policy names carry the provider, see ``policyName``)."""
    return {
        "filter": "envoy.filters.http.rbac",
        "path": [{"key": SHADOW_STAT_PREFIX + "shadow_effective_policy_id"}],
        "value": {"string_match": {"prefix": f"{EXT_AUTHZ_PREFIX}-{provider}-"}},
    }


def ext_authz_config(provider: Mapping[str, Any]) -> dict[str, Any]:
    """The ext_authz filter's config for one extension provider (HTTP or gRPC)."""
    if "envoyExtAuthzHttp" in provider:
        spec = provider["envoyExtAuthzHttp"]
        service: dict[str, Any] = {
            "path_prefix": spec.get("pathPrefix", ""),
            "server_uri": {
                "uri": f"http://{spec['service']}",
                "cluster": cluster_name(spec["service"], spec["port"]),
                "timeout": spec.get("timeout", "600s"),
            },
        }
        if spec.get("includeRequestHeadersInCheck"):
            service["authorization_request"] = {"allowed_headers": _string_list(spec["includeRequestHeadersInCheck"])}
        response: dict[str, Any] = {}
        if spec.get("headersToUpstreamOnAllow"):
            response["allowed_upstream_headers"] = _string_list(spec["headersToUpstreamOnAllow"])
        if spec.get("headersToDownstreamOnDeny"):
            response["allowed_client_headers"] = _string_list(spec["headersToDownstreamOnDeny"])
        if spec.get("headersToDownstreamOnAllow"):
            response["allowed_client_headers_on_success"] = _string_list(spec["headersToDownstreamOnAllow"])
        if response:
            service["authorization_response"] = response
        config: dict[str, Any] = {"http_service": service}
    else:
        spec = provider["envoyExtAuthzGrpc"]
        name = cluster_name(spec["service"], spec["port"])
        config = {
            "grpc_service": {
                "envoy_grpc": {"cluster_name": name, "authority": name.replace("|", "_.")},
                "timeout": spec.get("timeout", "600s"),
            }
        }
    if spec.get("statusOnError"):
        config["status_on_error"] = {"code": int(spec["statusOnError"])}
    config["failure_mode_allow"] = bool(spec.get("failOpen", False))
    config["transport_api_version"] = "V3"
    config["filter_enabled_metadata"] = _filter_enabled(provider["name"])
    return config


def _path(value: str) -> dict[str, Any]:
    if value == "/*":
        match: dict[str, Any] = {"prefix": "/"}
    elif value.endswith("/*"):
        match = {"prefix": value[:-1]}
    else:
        match = {"exact": value}
    return {"url_path": {"path": match}}


def _permission(operation: Mapping[str, Any]) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    if operation.get("hosts"):
        hosts = [
            {"header": {"name": ":authority", "string_match": {"exact": h, "ignore_case": True}}}
            for h in operation["hosts"]
        ]
        rules.append({"or_rules": {"rules": hosts}})
    if operation.get("paths"):
        rules.append({"or_rules": {"rules": [_path(p) for p in operation["paths"]]}})
    if operation.get("notPaths"):
        rules.append({"not_rule": {"or_rules": {"rules": [_path(p) for p in operation["notPaths"]]}}})
    return {"and_rules": {"rules": rules}}


def _rbac_policies(policy: Mapping[str, Any], provider: str) -> dict[str, Any]:
    """One RBAC policy per rule of an AuthorizationPolicy, named as istiod names them."""
    meta = policy["metadata"]
    found = {}
    for index, rule in enumerate(policy["spec"]["rules"]):
        name = f"{EXT_AUTHZ_PREFIX}-{provider}-ns[{meta['namespace']}]-policy[{meta['name']}]-rule[{index}]"
        found[name] = {
            "permissions": [_permission(to["operation"]) for to in rule["to"]],
            "principals": [{"and_ids": {"ids": [{"any": True}]}}],
        }
    return found


def custom_filters(
    policies: Sequence[Mapping[str, Any]],
    providers: Sequence[Mapping[str, Any]],
    *,
    multiple_custom_providers: bool = MULTIPLE_CUSTOM_PROVIDERS_DEFAULT,
) -> list[dict[str, Any]]:
    """The HTTP filters istiod puts on the Gateway for its CUSTOM ``policies`` (``builder.buildHTTP``)."""
    by_provider: dict[str, dict[str, Any]] = {}
    for policy in sorted(policies, key=lambda p: p["metadata"]["name"]):
        assert policy["spec"]["action"] == "CUSTOM"
        name = policy["spec"]["provider"]["name"]
        by_provider.setdefault(name, {}).update(_rbac_policies(policy, name))
    known = {p["name"]: p for p in providers}
    filters: list[dict[str, Any]] = []
    if len(by_provider) > 1 and not multiple_custom_providers:
        # "multiple CUSTOM authorization providers per workload requires PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_
        # PROVIDERS": enforcing deny rules for every policy, no ext_authz.
        for name in sorted(by_provider):
            denied = {f"{key}-deny-due-to-bad-CUSTOM-action": p for key, p in by_provider[name].items()}
            filters.append(
                {
                    "name": "envoy.filters.http.rbac",
                    "typed_config": {"@type": RBAC, "rules": {"action": "DENY", "policies": denied}},
                }
            )
        return filters
    for name in sorted(by_provider):
        filters.append(
            {
                "name": "envoy.filters.http.rbac",
                "typed_config": {
                    "@type": RBAC,
                    "shadow_rules": {"action": "DENY", "policies": by_provider[name]},
                    "shadow_rules_stat_prefix": SHADOW_STAT_PREFIX,
                },
            }
        )
        filters.append(ext_authz_filter(ext_authz_config(known[name])))
    return filters


def gateway_routes(
    httproutes: Sequence[Mapping[str, Any]], upstream_cluster: str | Callable[[Mapping[str, Any]], str]
) -> list[dict[str, Any]]:
    """The HTTPRoutes' rules as Envoy routes, longest path first (as istiod sorts them); the WebSocket
    upgrade is allowed on the connection manager. ``upstream_cluster``: one cluster for every rule, or the
    cluster of a rule's one ``backendRef``."""
    routes = []
    for route in httproutes:
        for rule in route["spec"]["rules"]:
            [backend] = rule["backendRefs"]
            target = upstream_cluster if isinstance(upstream_cluster, str) else upstream_cluster(backend)
            [match] = rule["matches"]
            assert match["path"]["type"] == "PathPrefix"
            value = match["path"]["value"]
            envoy_match = {"prefix": "/"} if value == "/" else {"path_separated_prefix": value}
            timeout = rule.get("timeouts", {}).get("request", "0s")
            routes.append((len(value), {"match": envoy_match, "route": {"cluster": target, "timeout": timeout}}))
    return [r for _, r in sorted(routes, key=lambda item: -item[0])]


def gateway_listener(
    name: str,
    port: int,
    hostnames: Sequence[str],
    httproutes: Sequence[Mapping[str, Any]],
    filters: Sequence[Mapping[str, Any]],
    upstream_cluster: str | Callable[[Mapping[str, Any]], str],
) -> dict[str, Any]:
    hosts = [domain for host in hostnames for domain in (host, f"{host}:*")]
    return http_listener(
        name,
        port,
        [virtual_host(name, hosts, gateway_routes(httproutes, upstream_cluster))],
        filters,
        hcm_extra=HCM_GATEWAY,
    )


def provider_cluster(provider: Mapping[str, Any], port: int) -> dict[str, Any]:
    """The outbound cluster istiod builds for the provider's Service, here on 127.0.0.1:``port``."""
    grpc = "envoyExtAuthzGrpc" in provider
    spec = provider["envoyExtAuthzGrpc" if grpc else "envoyExtAuthzHttp"]
    return cluster(cluster_name(spec["service"], spec["port"]), port, http2=grpc)

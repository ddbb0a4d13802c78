"""The ``authgate`` command: serve, check, hash-token, new-token, new-session-key (and token/user through the
Kubernetes API)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path

from app import __version__
from app.credentials import (
    MIN_PLAIN_TOKEN_LENGTH,
    NAME_RE,
    TOKEN68_RE,
    load_secret_files,
    read_secret_dir,
)
from app.errors import ConfigError
from app.jwt_keys import secret_key_sets
from app.kube.cli import add_commands, add_token_attributes, new_token_attributes
from app.policy import load_policy
from app.session_keys import new_key_line
from app.sessions import require_keys
from app.settings import (
    DEFAULT_HEALTH_PORT,
    DEFAULT_SERVER,
    ENV_NAMES,
    LOG_LEVELS,
    PROXY_KINDS,
    SERVER_KINDS,
    load_settings,
)
from app.token_lines import TokenAdminError, digest_field, format_token_line, generate_token


def _add_serve(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = sub.add_parser("serve", help="run the decision server")
    env = "(env %s)"
    serve.add_argument("--host", help="listen address, default 0.0.0.0 " + env % "AUTHGATE_HOST")
    serve.add_argument("--port", help="listen port, default 8080 " + env % "AUTHGATE_PORT")
    serve.add_argument(
        "--secret-dir", help="mounted Secret directory, default /etc/authgate/secret " + env % "AUTHGATE_SECRET_DIR"
    )
    serve.add_argument("--config", help="policy YAML file " + env % "AUTHGATE_CONFIG")
    serve.add_argument(
        "--proxy",
        help=f"the front door(s) in front: {', '.join(PROXY_KINDS)}, or a comma list of the header-based ones "
        "(all believed, cross-checked); default ingress-nginx,traefik " + env % "AUTHGATE_PROXY",
    )
    serve.add_argument(
        "--log-level", help=f"one of {', '.join(LOG_LEVELS)}; default info " + env % "AUTHGATE_LOG_LEVEL"
    )
    serve.add_argument(
        "--server",
        help=f"the HTTP server: {', '.join(SERVER_KINDS)}; default {DEFAULT_SERVER} " + env % "AUTHGATE_SERVER",
    )
    serve.add_argument(
        "--watch-secret",
        metavar="NAMESPACE/NAME",
        help="read credentials from this Secret through the Kubernetes API " + env % "AUTHGATE_WATCH_SECRET",
    )
    serve.add_argument(
        "--health-port",
        help="also serve /healthz, /readyz and /metrics on this port of their own (same --host), where probes "
        "never wait behind the decision port's connections; off by default, the chart and manifests/ use "
        f"{DEFAULT_HEALTH_PORT} " + env % "AUTHGATE_HEALTH_PORT",
    )
    limits = serve.add_argument_group("request limits (a proxy gets a fast 408/431/503, which it turns into a denial)")
    limits.add_argument(
        "--read-timeout",
        help="seconds for a request's head and body to arrive, default 10 " + env % "AUTHGATE_READ_TIMEOUT",
    )
    limits.add_argument(
        "--max-head-bytes", help="request line and headers, default 65536 " + env % "AUTHGATE_MAX_HEAD_BYTES"
    )
    limits.add_argument("--max-headers", help="header lines, default 100 " + env % "AUTHGATE_MAX_HEADERS")
    limits.add_argument("--max-connections", help="open connections, default 1024 " + env % "AUTHGATE_MAX_CONNECTIONS")
    grpc = serve.add_argument_group("Envoy gRPC external authorization (Contour, Istio, Envoy Gateway, Cilium)")
    grpc.add_argument(
        "--grpc-port",
        help="also serve envoy.service.auth.v3.Authorization/Check and grpc.health.v1 on this port (same "
        "--host); off by default " + env % "AUTHGATE_GRPC_PORT",
    )
    grpc.add_argument(
        "--grpc-default-route",
        metavar="ROUTE",
        help="the route of a CheckRequest whose context_extensions carry no 'route'; without it, the route "
        "claiming its original path (path_prefixes), else it is refused (403) " + env % "AUTHGATE_GRPC_DEFAULT_ROUTE",
    )
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from app.server import serve  # the HTTP servers and litestar only for the server

    settings = load_settings(
        {
            "host": args.host,
            "port": args.port,
            "secret_dir": args.secret_dir,
            "config": args.config,
            "proxy": args.proxy,
            "log_level": args.log_level,
            "watch_secret": args.watch_secret,
            "read_timeout": args.read_timeout,
            "max_head_bytes": args.max_head_bytes,
            "max_headers": args.max_headers,
            "max_connections": args.max_connections,
            "grpc_port": args.grpc_port,
            "grpc_default_route": args.grpc_default_route,
            "health_port": args.health_port,
            "server": args.server,
        }
    )
    policy = load_policy(settings.config)  # fail fast, before binding the port, on a bad policy
    route = settings.grpc_default_route
    if route is not None and route not in policy.routes:
        where = "--grpc-default-route" if args.grpc_default_route is not None else ENV_NAMES["grpc_default_route"]
        raise ConfigError(f"{route!r} is not a route of the policy (routes: {', '.join(policy.routes)})", where)
    if settings.watch_secret is not None:
        # Fail at start, not after a liveness timeout, when there is no usable Kubernetes configuration.
        from app.kube.api import KubeError, new_api_client

        try:
            new_api_client().close()  # type: ignore[no-untyped-call]
        except KubeError as exc:
            raise ConfigError(str(exc), "--watch-secret") from None
    return serve(settings)


def _check(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(Path(args.config) if args.config else None)
        directory = Path(args.secret_dir)
        files = read_secret_dir(directory)
        credentials = load_secret_files(files, str(directory))
        issuers = [issuer for route in policy.routes.values() for issuer in route.jwt_issuers]
        jwks = secret_key_sets(files, {i.location for i in issuers if i.source == "secret"}, str(directory))
        require_keys(credentials, policy)
    except (FileNotFoundError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    now = dt.datetime.now(dt.UTC)
    print(f"policy: {policy.source}")
    for route in policy.routes.values():
        principals = "*" if route.principals is None else ",".join(sorted(route.principals))
        anonymous = ", ".join(f"{m} {p}" for m, p in sorted(route.anonymous)) or "-"
        claimed = ",".join(route.path_prefixes) or "-"
        print(
            f"  route {route.name}: schemes={','.join(route.schemes)} realm={route.realm!r} "
            f"principals={principals} anonymous={anonymous} path_prefixes={claimed}"
        )
        for issuer in route.jwt_issuers:
            keys = issuer.location
            if issuer.source == "secret":
                keys += f" ({len(jwks[issuer.location].keys)} kid(s))"
            print(
                f"    jwt issuer {issuer.issuer or '(from discovery)'}: keys={issuer.source}:{keys} "
                f"audiences={','.join(sorted(issuer.audiences))} algorithms={','.join(issuer.algorithms)}"
            )
    print(f"tokens: {len(credentials.tokens_by_digest)}")
    for token in sorted(credentials.tokens, key=lambda t: t.name):
        parts = [f"  {token.name}", "plain" if token.plain else "digest"]
        if token.expires is not None:
            state = "EXPIRED" if token.expires <= now else "expires"
            parts.append(f"{state}={token.expires.isoformat().replace('+00:00', 'Z')}")
        if token.routes is not None:
            unknown = sorted(token.routes - set(policy.routes))
            parts.append(
                "routes="
                + ",".join(sorted(token.routes))
                + (f" (not in the policy: {','.join(unknown)})" if unknown else "")
            )
        if token.methods is not None:
            parts.append("methods=" + ",".join(sorted(token.methods)))
        if token.paths is not None:
            parts.append("paths=" + ",".join(token.paths))
        print(" ".join(parts))
    print(f"users: {len(credentials.users)}")
    for user in sorted(credentials.users.values(), key=lambda u: u.name):
        print(f"  {user.name} {user.kind}")
    if credentials.session_keys is not None:
        sealing = credentials.session_keys.keys
        print(f"session keys: {len(sealing)} (the first, line {sealing[0].line}, seals; every one opens)")
    oidc = policy.session.oidc
    if oidc is not None:
        held = oidc.client_secret_key in credentials.oidc_secrets
        print(
            f"openid sign-in: issuer={oidc.issuer} client_id={oidc.client_id} "
            f"principal_claim={oidc.principal_claim} client secret ({oidc.client_secret_key}): "
            f"{'present' if held else 'MISSING'}"
        )
        if not held:
            print(
                f"warning: the Secret holds no {oidc.client_secret_key!r}: sign-in with the provider answers 503",
                file=sys.stderr,
            )
    if any(t.plain for t in credentials.tokens):
        print(
            "warning: plain tokens are readable by anyone who can read the Secret; "
            "store 'authgate hash-token' digests instead",
            file=sys.stderr,
        )
    return 0


def _new_session_key(args: argparse.Namespace) -> int:
    print(new_key_line())
    return 0


def _hash_token(args: argparse.Namespace) -> int:
    token = sys.stdin.read().rstrip("\r\n")
    if not TOKEN68_RE.fullmatch(token) or len(token) < MIN_PLAIN_TOKEN_LENGTH:
        print(
            f"error: a token is at least {MIN_PLAIN_TOKEN_LENGTH} of A-Z a-z 0-9 - . _ ~ + / (then = padding), "
            "read from standard input",
            file=sys.stderr,
        )
        return 1
    print(digest_field(token))
    return 0


def _name(value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"use 1-128 of A-Z a-z 0-9 . _ @ -, got {value!r}")
    return value


def _new_token(args: argparse.Namespace) -> int:
    try:
        attrs, _ = new_token_attributes(args, dt.datetime.now(dt.UTC))
    except TokenAdminError as exc:
        raise ConfigError(str(exc)) from None  # a bad argument: exit status 2, like argparse's own
    token = generate_token()
    line = format_token_line(args.name, digest_field(token), attrs)
    print("# the token (shown once; give it to the client):", file=sys.stderr)
    print(token)
    print("# the line for the Secret's 'tokens' file (holds only the digest):", file=sys.stderr)
    print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authgate", description="Kubernetes external-auth validator.")
    parser.add_argument("--version", action="version", version=f"authgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)

    check = sub.add_parser("check", help="validate the Secret files and policy; print what loads (no secrets)")
    check.add_argument("--secret-dir", required=True)
    check.add_argument("--config")
    check.set_defaults(func=_check)

    hash_token = sub.add_parser("hash-token", help="read a token on stdin, print its sha256: digest")
    hash_token.set_defaults(func=_hash_token)

    new_session_key = sub.add_parser(
        "new-session-key", help="print a fresh key line for the Secret's session-keys file (put it first to seal)"
    )
    new_session_key.set_defaults(func=_new_session_key)

    new_token = sub.add_parser("new-token", help="make a strong random token and its Secret line")
    new_token.add_argument("name", type=_name)
    add_token_attributes(new_token)
    new_token.set_defaults(func=_new_token)

    add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        parser.exit(2, f"authgate: error: {exc}\n")
    except KeyboardInterrupt:
        return 130

"""``authgate token ...`` and ``authgate user ...``: credential lifecycle through the Kubernetes API.

Each change is a read-modify-write of the Secret guarded by its ``resourceVersion`` (``app.kube.api``), the
edit itself is a pure text edit (``app.kube.tokens``), and the edited Secret is parsed with the server's
own loader before it is written, so the CLI can never write a Secret the server would reject.

Output: a new token goes alone to standard output (so it can be piped into another Secret or a vault)
and is never stored or logged; everything else goes to standard error. Failures are one line,
``authgate: error: ...``, with exit status 1; every kubeconfig fault is a configuration error like any
other, exit status 2. A warning (an unverified TLS connection, a route no policy could check) is one
line, ``authgate: warning: ...``, once per command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from app.credentials import HTPASSWD_FILE, TOKENS_FILE, load_secret_files
from app.errors import ConfigError
from app.kube.tokens import (
    NewToken,
    add_token,
    check_name,
    list_tokens,
    list_users,
    remove_user,
    revoke_token,
    rotate_token,
    set_user,
)
from app.policy import Policy, load_policy
from app.token_lines import (
    TokenAdminError,
    check_routes,
    parse_duration,
    parse_time,
    route_names,
    token_attributes,
    unknown_routes,
)

DEFAULT_SECRET_NAME = "authgate"  # noqa: S105 - a Secret object name, not a secret
DEFAULT_OVERLAP = "24h"
POLICY_ENV = "AUTHGATE_CONFIG"  # what `serve` reads its policy from: in the server's pod, the same file
Files = dict[str, bytes]
Handler = Callable[[argparse.Namespace], int]


if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from app.kube.api import SecretRef

# app.kube.api pulls in the Kubernetes client (~30 MB, a second to import): the functions below import it when a
# token/user command actually runs, so `authgate serve` in its default file mode never loads it.


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Registers ``token`` and ``user`` on the main parser; each leaf sets ``func(args) -> int``."""
    target = argparse.ArgumentParser(add_help=False)
    where = target.add_argument_group("which Secret (in-cluster config, else kubeconfig)")
    where.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    where.add_argument("--context", help="kubeconfig context (default: the current one)")
    where.add_argument("-n", "--namespace", help="namespace (default: the context's, else the pod's, else default)")
    where.add_argument("--secret", default=DEFAULT_SECRET_NAME, help=f"Secret name (default: {DEFAULT_SECRET_NAME})")

    token = subparsers.add_parser("token", help="create, list, rotate, revoke tokens in the Secret")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    create = token_sub.add_parser("create", parents=[target], help="add a new token; prints it once")
    create.add_argument("name")
    add_token_attributes(create)
    create.set_defaults(func=token_create)
    listing = token_sub.add_parser("list", parents=[target], help="names, expiry, attributes (never a secret)")
    listing.add_argument("--json", action="store_true", help="one JSON array, an object per token")
    listing.set_defaults(func=token_list)
    revoke = token_sub.add_parser("revoke", parents=[target], help="remove a token now")
    revoke.add_argument("name")
    revoke.set_defaults(func=token_revoke)
    rotate = token_sub.add_parser("rotate", parents=[target], help="new token; the old one expires after --overlap")
    rotate.add_argument("name")
    rotate.add_argument(
        "--overlap",
        default=DEFAULT_OVERLAP,
        help=f"how long the old token keeps working (default {DEFAULT_OVERLAP}; 0h replaces it at once)",
    )
    rotate.set_defaults(func=token_rotate)

    user = subparsers.add_parser("user", help="add or remove htpasswd users (bcrypt) in the Secret")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="COMMAND")
    add = user_sub.add_parser("add", parents=[target], help="add a user; password from stdin or a prompt")
    add.add_argument("name")
    add.add_argument("--replace", action="store_true", help="set a new password for an existing user")
    add.set_defaults(func=user_add)
    remove = user_sub.add_parser("remove", parents=[target], help="remove a user")
    remove.add_argument("name")
    remove.set_defaults(func=user_remove)
    users = user_sub.add_parser("list", parents=[target], help="user names")
    users.set_defaults(func=user_list)


def add_token_attributes(parser: argparse.ArgumentParser) -> None:
    """The options of a new token, shared by ``token create`` and ``new-token``."""
    parser.add_argument(
        "--expires", help="a duration from now (30m, 24h, 90d, 2w) or an RFC 3339 time (2027-01-31T00:00:00Z)"
    )
    parser.add_argument("--routes", help="comma-separated policy routes (default: every route)")
    parser.add_argument("--methods", help="comma-separated HTTP methods (default: any)")
    parser.add_argument("--paths", help="comma-separated path prefixes (default: any)")
    parser.add_argument(
        "--config",
        metavar="POLICY",
        help=f"the server's policy YAML: --routes must name its routes (default: ${POLICY_ENV}, if set)",
    )


def new_token_attributes(args: argparse.Namespace, now: dt.datetime) -> tuple[dict[str, str], Policy | None]:
    """The checked attributes of ``args``, and the policy (``--config``) their routes were checked against."""
    attrs = token_attributes(now, expires=args.expires, routes=args.routes, methods=args.methods, paths=args.paths)
    config = args.config or os.environ.get(POLICY_ENV)
    if not config:
        return attrs, None
    try:
        policy = load_policy(Path(config))
    except ConfigError as exc:
        if args.config:
            raise
        raise ConfigError(f"{exc} (the policy ${POLICY_ENV} names; --config chooses another)") from None
    check_routes(route_names(attrs), policy.routes, config)
    return attrs, policy


# --- plumbing shared by the commands ----------------------------------------------------------------


def _ref(args: argparse.Namespace) -> SecretRef:
    from app.kube.api import SecretRef, default_namespace

    namespace = args.namespace or default_namespace(args.kubeconfig, args.context)
    return SecretRef(namespace, args.secret)


def _text(files: Mapping[str, bytes], key: str) -> str:
    return files.get(key, b"").decode("utf-8")


def _validated(files: Files, ref: SecretRef) -> Files:
    """Parses the edited Secret exactly as the server will, so a bad edit is refused before the write."""
    load_secret_files(files, f"secret {ref}")
    return files


def _fail(message: str) -> int:
    print(f"authgate: error: {message}", file=sys.stderr)
    return 1


def _run(args: argparse.Namespace, body: Callable[[SecretRef], int]) -> int:
    """The one place that turns expected failures into one line and exit status 1."""
    from app.kube.api import KubeconfigError, KubeError

    try:
        return body(_ref(args))
    except KubeconfigError:
        raise  # the operator's configuration, not the API: main() says so and exits 2
    except (KubeError, TokenAdminError, ConfigError) as exc:
        return _fail(str(exc))
    except UnicodeDecodeError:
        return _fail("the Secret's file is not valid UTF-8")


def _client(args: argparse.Namespace) -> ApiClient:
    """The command's one API client; an unverified TLS connection is said once, here."""
    from app.kube.api import new_api_client, unverified_tls

    api = new_api_client(args.kubeconfig, args.context)
    insecure = unverified_tls(api)
    if insecure is not None:
        _warn(insecure)
    return api


def _edit(args: argparse.Namespace, ref: SecretRef, key: str, change: Callable[[str], str]) -> str:
    """Applies ``change`` to one file of the Secret with the resourceVersion-guarded update."""

    def edit(files: Mapping[str, bytes]) -> Files:
        new = dict(files)
        new[key] = change(_text(files, key)).encode()
        return _validated(new, ref)

    from app.kube.api import update_secret

    api = _client(args)
    try:
        result = update_secret(api, ref, edit)
    finally:
        api.close()  # type: ignore[no-untyped-call]
    return result.resource_version


def _read_files(args: argparse.Namespace, ref: SecretRef) -> Mapping[str, bytes]:
    from app.kube.api import read_secret

    api = _client(args)
    try:
        return read_secret(api, ref).files
    finally:
        api.close()  # type: ignore[no-untyped-call]


def _warn(message: str) -> None:
    print(f"authgate: warning: {message}", file=sys.stderr)


def _routes_in_use(text: str) -> set[str]:
    return {route for info in list_tokens(text) for route in route_names(info.attributes)}


def _print_new_token(name: str, token: str, ref: SecretRef) -> None:
    print(f"token for {name!r} (shown only now; the Secret {ref} keeps its sha256 digest):", file=sys.stderr)
    print(token)


# --- token ------------------------------------------------------------------------------------------


def token_create(args: argparse.Namespace) -> int:
    def body(ref: SecretRef) -> int:
        check_name(args.name)
        attrs, policy = new_token_attributes(args, dt.datetime.now(dt.UTC))
        made: dict[str, str] = {}
        unchecked: list[str] = []

        def change(text: str) -> str:
            if policy is None:  # no policy to check against: the routes the Secret's tokens use
                unchecked[:] = unknown_routes(route_names(attrs), _routes_in_use(text), str(ref))
            new = add_token(text, args.name, attrs)
            made["token"] = new.token  # the edit may run again after a conflict: keep the one written
            return new.text

        version = _edit(args, ref, TOKENS_FILE, change)
        if unchecked:
            _warn(
                f"--routes: no other token in secret {ref} uses {', '.join(map(repr, unchecked))} and no policy was "
                "given to check it: a token for a route the policy lacks never works (check with --config POLICY)"
            )
        print(f"added token {args.name!r} to secret {ref} (resourceVersion {version})", file=sys.stderr)
        _print_new_token(args.name, made["token"], ref)
        return 0

    return _run(args, body)


def token_rotate(args: argparse.Namespace) -> int:
    def body(ref: SecretRef) -> int:
        try:
            overlap = parse_duration(args.overlap)
        except TokenAdminError as exc:
            raise TokenAdminError(f"--overlap: {exc}") from None
        made: dict[str, NewToken] = {}

        def change(text: str) -> str:
            new = rotate_token(text, args.name, overlap, dt.datetime.now(dt.UTC))
            made["rotation"] = new  # the edit may run again after a conflict: keep the one written
            return new.text

        version = _edit(args, ref, TOKENS_FILE, change)
        outgoing = made["rotation"].outgoing
        if outgoing is None:
            old = "the old token was replaced and no longer works"
        else:
            old = f"the old token keeps working until {outgoing.until} as {outgoing.name!r}"
        print(f"rotated token {args.name!r} in secret {ref} (resourceVersion {version}); {old}", file=sys.stderr)
        _print_new_token(args.name, made["rotation"].token, ref)
        return 0

    return _run(args, body)


def token_revoke(args: argparse.Namespace) -> int:
    def body(ref: SecretRef) -> int:
        version = _edit(args, ref, TOKENS_FILE, lambda text: revoke_token(text, args.name))
        print(f"revoked token {args.name!r} in secret {ref} (resourceVersion {version})", file=sys.stderr)
        return 0

    return _run(args, body)


def token_list(args: argparse.Namespace) -> int:
    def body(ref: SecretRef) -> int:
        files = _read_files(args, ref)
        now = dt.datetime.now(dt.UTC)
        infos = list_tokens(_text(files, TOKENS_FILE))
        rows = []
        for info in infos:
            expired = info.expires is not None and _expired(info.expires, now)
            rows.append(
                {
                    "name": info.name,
                    "stored": "sha256" if info.hashed else "plain",
                    "expired": expired,
                    **info.attributes,
                }
            )
        if args.json:
            print(json.dumps(rows, indent=2, sort_keys=True))
            return 0
        if not rows:
            print(f"no tokens in secret {ref}", file=sys.stderr)
            return 0
        width = max(len(str(row["name"])) for row in rows)
        print(f"{'NAME':<{width}}  {'STORED':<6}  {'EXPIRES':<22}  ATTRIBUTES")
        for info, row in zip(infos, rows, strict=True):
            expires = (info.expires or "never") + (" (expired)" if row["expired"] else "")
            others = " ".join(f"{k}={v}" for k, v in info.attributes.items() if k != "expires")
            print(f"{info.name:<{width}}  {row['stored']:<6}  {expires:<22}  {others}".rstrip())
        return 0

    return _run(args, body)


def _expired(expires: str, now: dt.datetime) -> bool:
    try:
        return parse_time(expires) <= now
    except TokenAdminError:
        return False


# --- user -------------------------------------------------------------------------------------------


def read_password(stdin: TextIO | None = None) -> str:
    """From a pipe: the first line. At a terminal: a prompt, twice, without echo."""
    stdin = stdin or sys.stdin
    if not stdin.isatty():
        return stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise TokenAdminError("the passwords differ")
    return first


def user_add(args: argparse.Namespace) -> int:
    def body(ref: SecretRef) -> int:
        check_name(args.name)
        password = read_password()
        version = _edit(
            args, ref, HTPASSWD_FILE, lambda text: set_user(text, args.name, password, replace=args.replace)
        )
        print(f"set user {args.name!r} (bcrypt) in secret {ref} (resourceVersion {version})", file=sys.stderr)
        return 0

    return _run(args, body)


def user_remove(args: argparse.Namespace) -> int:
    def body(ref: SecretRef) -> int:
        version = _edit(args, ref, HTPASSWD_FILE, lambda text: remove_user(text, args.name))
        print(f"removed user {args.name!r} from secret {ref} (resourceVersion {version})", file=sys.stderr)
        return 0

    return _run(args, body)


def user_list(args: argparse.Namespace) -> int:
    def body(ref: SecretRef) -> int:
        files = _read_files(args, ref)
        for name in list_users(_text(files, HTPASSWD_FILE)):
            print(name)
        return 0

    return _run(args, body)

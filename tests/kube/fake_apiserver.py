"""A fake of the few Kubernetes API endpoints authgate uses -- not a Kubernetes API server.

No kube-apiserver can run here (REFERENCE section 5), so this speaks just enough of the documented wire
format (kubernetes.io "API Concepts": efficient detection of changes, watch bookmarks, 410 Gone;
conflicts on ``metadata.resourceVersion``) for the real ``kubernetes`` Python client to be driven
against it over HTTP (or HTTPS, given a certificate):

- ``GET   /api/v1/namespaces/{ns}/secrets/{name}``                     -> Secret, or 404 Status
- ``PATCH /api/v1/namespaces/{ns}/secrets/{name}`` (merge / strategic merge patch) -> Secret;
  a ``metadata.resourceVersion`` in the patch that is not the current one -> 409 Conflict Status
- ``GET   /api/v1/namespaces/{ns}/secrets?fieldSelector=metadata.name%3D{name}`` -> SecretList with
  the list's ``metadata.resourceVersion``
- the same with ``watch=true&resourceVersion=RV[&allowWatchBookmarks=true][&timeoutSeconds=N]``
  -> a chunked stream of ``{"type": ..., "object": ...}`` lines: ADDED / MODIFIED / DELETED for
  changes after RV, BOOKMARK with only ``metadata.resourceVersion``, and for an RV older than the kept
  history an ``ERROR`` event holding a 410 ``Expired`` Status; the stream ends cleanly after
  ``timeoutSeconds``.

Discovery, as a client reads it before asking for a resource (Helm's ``lookup`` under ``--dry-run=server``):
``GET /version``, ``/api``, ``/apis`` (no groups), ``/api/v1`` (Secrets only).

The cluster's ServiceAccount token issuer, as a real API server serves it to a client bound to
``system:service-account-issuer-discovery`` (here: the kubeconfig's token):

- ``GET /.well-known/openid-configuration`` -> ``issuer`` (the cluster's ``--service-account-issuer``) and a
  ``jwks_uri`` naming the API server's *external* address (as seen on real clusters: not reachable from a pod)
- ``GET /openid/v1/jwks`` -> the public keys of ``service_account_keys``, as ``application/jwk-set+json``

- ``POST /apis/authentication.k8s.io/v1/tokenreviews`` -> the review's ``status``: authenticated for a token it
  signed, unexpired, for one of ``spec.audiences``, whose pod (if bound to one) is not in ``deleted_pods``

``service_account_token`` signs a projected token the way the API server does (RS256, ``kid``; ``iss``, ``aud``,
``sub = system:serviceaccount:NS:NAME``, ``kubernetes.io`` claims, ``iat``/``nbf``/``exp``).

Faults for tests: ``conflict_next_patch`` (a concurrent writer changes the Secret between the client's
read and its patch, so the patch gets a genuine 409), ``expire_history`` (next watch from an old RV gets
the 410 ERROR event), ``drop_streams_after`` (close the connection mid-stream without the final
chunk), ``stall_streams`` (headers then silence), ``forbid`` (403 for a verb), ``stop``/``start`` on
the same port (API down: connections refused), and ``restart`` (what a kube-apiserver restart looks
like to a client: its watch cache starts at the current resourceVersion, so a watch from an older one
gets 410 Gone, and until its RBAC caches are loaded it answers 403 to everything; ``rbac_loaded`` ends
that window).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as dt
import json
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

SECRET_PATH = "/api/v1/namespaces/{ns}/secrets"
TOKEN = "fake-apiserver-token"  # what the kubeconfig written by write_kubeconfig presents
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


def plural(kind: str) -> str:
    """The resource name of a kind, as the API names it (Ingress -> ingresses, NetworkPolicy -> networkpolicies)."""
    lower = kind.lower()
    if lower.endswith("y"):
        return lower[:-1] + "ies"
    if lower.endswith("s"):
        return lower + "es"
    return lower + "s"


def status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``meta/v1 Status`` object as the API server sends with every error."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (for a Secret's maps the same as a strategic merge patch)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass
class Event:
    resource_version: int
    type: str
    object: dict[str, Any]


@dataclass
class Requests:
    """What the clients asked, for assertions (method, path with query)."""

    log: list[tuple[str, str]] = field(default_factory=list)

    def count(self, method: str, contains: str = "") -> int:
        return sum(1 for m, p in self.log if m == method and contains in p)


class FakeApiServer:
    """See the module docstring. One instance per test; ``start()``/``stop()`` may be called repeatedly."""

    def __init__(
        self, port: int = 0, bookmark_interval: float | None = None, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.port = port
        self.tls = tls  # (certificate, key): serve HTTPS
        self.bookmark_interval = bookmark_interval
        self.requests = Requests()
        self._cond = threading.Condition()
        self._rv = 100
        self._secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self._history: list[Event] = []
        self._oldest_watchable = 0  # watches from an RV below this get 410
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        # faults
        self.forbidden_verbs: set[str] = set()
        self._concurrent_writes: list[Callable[[dict[str, bytes]], dict[str, bytes]]] = []
        self.drop_after_events: int | None = None
        self.stall = threading.Event()
        self.gone_next_watches = 0
        self.stall_next_watches = 0  # those streams send headers, then nothing, until the server stops
        self.open_streams = 0
        self.forbidden_answers = 0  # 403s sent, for tests that wait for a refusal
        self._connections: set[socket.socket] = set()
        # the ServiceAccount token issuer (see the module docstring)
        self.service_account_issuer = SERVICE_ACCOUNT_ISSUER
        self.service_account_keys: list[Any] = []  # tests.support.jose.SigningKey
        self.deleted_pods: set[str] = set()  # their bound tokens fail TokenReview
        # discovery: (apiVersion, kind) of every other resource a client must find ("apps/v1", "Deployment")
        self.discovery_kinds: set[tuple[str, str]] = set()

    def service_account_token(
        self, namespace: str, name: str, audiences: list[str], issued_at: int, lifetime: int = 3600, **extra: Any
    ) -> str:
        """A projected ServiceAccount token as the API server signs it, with the first of its keys."""
        claims = {
            "aud": audiences,
            "exp": issued_at + lifetime,
            "iat": issued_at,
            "iss": self.service_account_issuer,
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": name, "uid": str(uuid.uuid4())},
                **extra,
            },
            "nbf": issued_at,
            "sub": f"system:serviceaccount:{namespace}:{name}",
        }
        signed: str = self.service_account_keys[0].sign(claims)
        return signed

    def review(self, spec: dict[str, Any]) -> dict[str, Any]:
        import jwt

        wanted = spec.get("audiences") or None
        for key in self.service_account_keys:
            try:
                claims = jwt.decode(
                    spec.get("token", ""),
                    key.private.public_key(),
                    algorithms=[key.alg],
                    audience=wanted,
                    issuer=self.service_account_issuer,
                    options={"verify_aud": wanted is not None},
                )
            except jwt.PyJWTError:
                continue
            pod = claims.get("kubernetes.io", {}).get("pod", {}).get("name")
            if pod is not None and pod in self.deleted_pods:
                break
            return {"authenticated": True, "user": {"username": claims["sub"]}, "audiences": wanted or claims["aud"]}
        return {"authenticated": False, "error": "invalid bearer token"}

    # --- lifecycle --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> FakeApiServer:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = False  # server_close() joins the handler threads: nothing outlives a test
        self.port = server.server_address[1]
        self._closing = False
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-apiserver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Closes the listener and every open stream (abruptly, as a dying API server would)."""
        if self._server is None:
            return
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            connections = list(self._connections)
        self.stall.clear()
        self._server.shutdown()
        for conn in connections:  # idle keep-alive connections would otherwise keep their threads
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(timeout=10)
        self._server = None

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- state, as kubectl would change it ---------------------------------------------------------

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _record(self, kind: str, obj: dict[str, Any]) -> None:
        self._history.append(Event(int(obj["metadata"]["resourceVersion"]), kind, copy.deepcopy(obj)))
        self._cond.notify_all()

    def put_secret(
        self,
        namespace: str,
        name: str,
        files: Mapping[str, bytes],
        *,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> str:
        """Creates or replaces the Secret's data (a new one with ``labels`` and ``annotations``); returns its
        new resourceVersion."""
        with self._cond:
            rv = str(self._next_rv())
            existing = self._secrets.get((namespace, name))
            data = {k: base64.b64encode(v).decode() for k, v in files.items()}
            if existing is None:
                obj = {
                    "kind": "Secret",
                    "apiVersion": "v1",
                    "type": "Opaque",
                    "data": data,
                    "metadata": {
                        "name": name,
                        "namespace": namespace,
                        "uid": str(uuid.uuid4()),
                        "resourceVersion": rv,
                        "creationTimestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        **({"labels": dict(labels)} if labels else {}),
                        **({"annotations": dict(annotations)} if annotations else {}),
                    },
                }
                self._secrets[(namespace, name)] = obj
                self._record("ADDED", obj)
            else:
                existing["data"] = data
                existing["metadata"]["resourceVersion"] = rv
                self._record("MODIFIED", existing)
            return rv

    def delete_secret(self, namespace: str, name: str) -> None:
        with self._cond:
            obj = self._secrets.pop((namespace, name))
            obj["metadata"]["resourceVersion"] = str(self._next_rv())
            self._record("DELETED", obj)

    def files(self, namespace: str, name: str) -> dict[str, bytes]:
        with self._cond:
            obj = self._secrets[(namespace, name)]
            return {k: base64.b64decode(v) for k, v in obj.get("data", {}).items()}

    def resource_version(self, namespace: str, name: str) -> str:
        with self._cond:
            return str(self._secrets[(namespace, name)]["metadata"]["resourceVersion"])

    # --- faults -----------------------------------------------------------------------------------

    def conflict_next_patch(self, mutate: Callable[[dict[str, bytes]], dict[str, bytes]]) -> None:
        """Before the next PATCH is checked, another writer applies ``mutate``: the patch's RV is stale."""
        with self._cond:
            self._concurrent_writes.append(mutate)

    def expire_history(self) -> None:
        """Forget every change so far (etcd compaction): a watch from any RV up to now gets 410."""
        with self._cond:
            self._oldest_watchable = self._rv + 1
            self._history.clear()

    def restart(self, *, rbac_loading: bool = True) -> FakeApiServer:
        """Starts again after ``stop()`` as a restarted kube-apiserver would answer.

        Other objects were written meanwhile (leases, events: the resourceVersion moved on) and the new
        watch cache holds no history before now, so every client's last resourceVersion is too old (410).
        With ``rbac_loading`` every request gets 403 until ``rbac_loaded()``.
        """
        with self._cond:
            self._next_rv()
        self.expire_history()
        if rbac_loading:
            self.forbidden_verbs |= {"get", "list", "watch", "patch"}
        return self.start()

    def rbac_loaded(self) -> None:
        self.forbidden_verbs.clear()

    def send_garbage_line(self, line: str) -> None:
        """A line on open watch streams that is not a JSON event (a misbehaving proxy in between)."""
        with self._cond:
            self._history.append(Event(self._rv, "RAW", {"line": line}))
            self._cond.notify_all()

    def send_bookmark(self) -> None:
        with self._cond:
            self._history.append(Event(self._rv, "BOOKMARK", {}))
            self._cond.notify_all()

    # --- request handling -------------------------------------------------------------------------

    def _secret_or_404(self, namespace: str, name: str) -> tuple[int, dict[str, Any]]:
        obj = self._secrets.get((namespace, name))
        if obj is None:
            return 404, status(404, "NotFound", f'secrets "{name}" not found', {"name": name, "kind": "secrets"})
        return 200, copy.deepcopy(obj)

    def handle_get(self, namespace: str, name: str) -> tuple[int, dict[str, Any]]:
        with self._cond:
            return self._secret_or_404(namespace, name)

    def handle_list(self, namespace: str, name: str | None) -> tuple[int, dict[str, Any]]:
        with self._cond:
            items = [
                copy.deepcopy(o)
                for (ns, n), o in sorted(self._secrets.items())
                if ns == namespace and (name is None or n == name)
            ]
            for item in items:
                item.pop("kind", None)
                item.pop("apiVersion", None)
            return 200, {
                "kind": "SecretList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }

    def handle_patch(self, namespace: str, name: str, content_type: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        if content_type not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            return 415, status(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - "
                f"accepted media types include: application/merge-patch+json ({content_type})",
            )
        try:
            patch = json.loads(raw)
        except ValueError as exc:
            return 400, status(400, "BadRequest", f"error decoding patch: {exc}")
        if not isinstance(patch, dict):
            return 400, status(400, "BadRequest", "merge patch must be a JSON object")
        with self._cond:
            code, current = self._secret_or_404(namespace, name)
            if code != 200:
                return code, current
            while self._concurrent_writes:
                mutate = self._concurrent_writes.pop(0)
                files = {k: base64.b64decode(v) for k, v in current.get("data", {}).items()}
                self.put_secret(namespace, name, mutate(files))
                current = copy.deepcopy(self._secrets[(namespace, name)])
            wanted = patch.get("metadata", {}).get("resourceVersion")
            if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
                return 409, status(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on secrets "{name}": the object '
                    "has been modified; please apply your changes to the latest version and try "
                    "again",
                    {"name": name, "kind": "secrets"},
                )
            updated = merge_patch(current, patch)
            for value in updated.get("data", {}).values():
                base64.b64decode(value, validate=True)
            updated["metadata"]["resourceVersion"] = str(self._next_rv())
            self._secrets[(namespace, name)] = updated
            self._record("MODIFIED", updated)
            return 200, copy.deepcopy(updated)

    def watch_events(self, namespace: str, name: str, since: int) -> tuple[list[dict[str, Any]], int] | None:
        """Events after ``since`` for that Secret (and the RV reached), or None if ``since`` is too old."""
        if since < self._oldest_watchable - 1:
            return None
        out: list[dict[str, Any]] = []
        reached = since
        for event in self._history:
            if event.resource_version <= since and event.type not in ("BOOKMARK", "RAW"):
                continue
            if event.type == "RAW":
                out.append({"type": "RAW", "line": event.object["line"]})
                continue
            if event.type == "BOOKMARK":
                if event.resource_version >= reached:
                    out.append(
                        {
                            "type": "BOOKMARK",
                            "object": {
                                "kind": "Secret",
                                "apiVersion": "v1",
                                "metadata": {"resourceVersion": str(event.resource_version)},
                            },
                        }
                    )
                    reached = event.resource_version
                continue
            meta = event.object["metadata"]
            if meta["namespace"] == namespace and meta["name"] == name:
                out.append({"type": event.type, "object": copy.deepcopy(event.object)})
            reached = max(reached, event.resource_version)
        return out, reached


def _handler_for(fake: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # chunked watch streams need it
        timeout = 30  # a forgotten client connection cannot hold a handler thread forever

        def setup(self) -> None:
            super().setup()
            with fake._cond:
                fake._connections.add(self.connection)

        def finish(self) -> None:
            with fake._cond:
                fake._connections.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def _send_json(self, code: int, body: dict[str, Any], content_type: str = "application/json") -> None:
            raw = json.dumps(body).encode()
            self.send_response(code, HTTPStatus(code).phrase)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _route(self) -> tuple[str, str | None, dict[str, list[str]]] | None:
            parts = urlsplit(self.path)
            segments = parts.path.strip("/").split("/")
            if segments[:3] != ["api", "v1", "namespaces"] or len(segments) not in (5, 6) or segments[4] != "secrets":
                return None
            return segments[3], segments[5] if len(segments) == 6 else None, parse_qs(parts.query)

        def _authorized(self, verb: str) -> bool:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._send_json(401, status(401, "Unauthorized", "Unauthorized"))
                return False
            if verb in fake.forbidden_verbs:
                with fake._cond:
                    fake.forbidden_answers += 1
                self._send_json(
                    403,
                    status(
                        403,
                        "Forbidden",
                        f'secrets is forbidden: User "tester" cannot {verb} '
                        'resource "secrets" in API group "" in the namespace "ns"',
                    ),
                )
                return False
            return True

        def _issuer(self) -> bool:
            """The ServiceAccount issuer's discovery and keys; False when the path is neither."""
            path = urlsplit(self.path).path
            if path not in ("/.well-known/openid-configuration", "/openid/v1/jwks"):
                return False
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._send_json(401, status(401, "Unauthorized", "Unauthorized"))
            elif path == "/openid/v1/jwks":
                keys = [key.public_jwk() for key in fake.service_account_keys]
                self._send_json(200, {"keys": keys}, "application/jwk-set+json")
            else:
                self._send_json(
                    200,
                    {
                        "issuer": fake.service_account_issuer,
                        "jwks_uri": "https://172.18.0.2:6443/openid/v1/jwks",
                        "response_types_supported": ["id_token"],
                        "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["RS256"],
                    },
                )
            return True

        def _discovery(self) -> bool:
            """The version and discovery documents a client reads before it asks for a resource (Helm's
            ``lookup`` and its manifest checks do, with ``--dry-run=server``): Secrets and ``discovery_kinds``
            (names only: nothing but Secrets is served); False for other paths."""
            path = urlsplit(self.path).path
            kinds = {("v1", "Secret"), *fake.discovery_kinds}
            versions: dict[str, list[str]] = {}
            for api_version, kind in sorted(kinds):
                versions.setdefault(api_version, []).append(kind)
            groups = sorted({v.split("/")[0] for v in versions if "/" in v})
            if path == "/version":
                self._send_json(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"})
            elif path == "/api":
                self._send_json(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
            elif path == "/apis":
                listed = []
                for group in groups:
                    group_versions = [
                        {"groupVersion": v, "version": v.split("/")[1]} for v in versions if v.startswith(group + "/")
                    ]
                    listed.append({"name": group, "versions": group_versions, "preferredVersion": group_versions[0]})
                self._send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": listed})
            elif path == "/api/v1" or (path.startswith("/apis/") and path.removeprefix("/apis/") in versions):
                api_version = "v1" if path == "/api/v1" else path.removeprefix("/apis/")
                resources = [
                    {
                        "name": plural(kind),
                        "singularName": kind.lower(),
                        "namespaced": True,
                        "kind": kind,
                        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
                    }
                    for kind in versions.get(api_version, [])
                ]
                self._send_json(200, {"kind": "APIResourceList", "groupVersion": api_version, "resources": resources})
            else:
                return False
            return True

        def do_GET(self) -> None:
            fake.requests.log.append(("GET", self.path))
            if self._issuer() or self._discovery():
                return
            route = self._route()
            if route is None:
                self._send_json(404, status(404, "NotFound", "the server could not find the requested resource"))
                return
            namespace, name, query = route
            if name is not None:
                if self._authorized("get"):
                    self._send_json(*fake.handle_get(namespace, name))
                return
            selector = query.get("fieldSelector", [""])[0]
            wanted = selector.removeprefix("metadata.name=") if selector.startswith("metadata.name=") else None
            if selector and wanted is None:
                self._send_json(400, status(400, "BadRequest", f"unsupported field selector {selector!r}"))
                return
            watching = query.get("watch", ["false"])[0] in ("true", "1")
            if not self._authorized("watch" if watching else "list"):
                return
            if not watching:
                self._send_json(*fake.handle_list(namespace, wanted))
                return
            if wanted is None:
                self._send_json(400, status(400, "BadRequest", "this fake watches one Secret by fieldSelector"))
                return
            rv = query.get("resourceVersion", [""])[0]
            timeout = float(query.get("timeoutSeconds", ["1800"])[0])
            bookmarks = query.get("allowWatchBookmarks", ["false"])[0] == "true"
            self._stream(namespace, wanted, int(rv) if rv else fake._rv, timeout, bookmarks)

        def do_POST(self) -> None:
            """TokenReview (authentication.k8s.io/v1): a token this fake signed, for one of the audiences
            asked (or any), not expired, and, when bound to a pod, the pod not deleted."""
            fake.requests.log.append(("POST", self.path))
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if urlsplit(self.path).path != "/apis/authentication.k8s.io/v1/tokenreviews":
                self._send_json(404, status(404, "NotFound", "the server could not find the requested resource"))
                return
            if not self._authorized("create"):
                return
            review = json.loads(raw)
            self._send_json(201, {**review, "status": fake.review(review.get("spec", {}))})

        def do_PATCH(self) -> None:
            fake.requests.log.append(("PATCH", self.path))
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            route = self._route()
            if route is None or route[1] is None:
                self._send_json(405, status(405, "MethodNotAllowed", "the server does not allow this method"))
                return
            if self._authorized("patch"):
                content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
                self._send_json(*fake.handle_patch(route[0], route[1], content_type, raw))

        def _chunk(self, line: dict[str, Any]) -> None:
            raw = line["line"] if line.get("type") == "RAW" else json.dumps(line)
            data = raw.encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _stream(self, namespace: str, name: str, since: int, timeout: float, bookmarks: bool) -> None:
            import time

            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            deadline = time.monotonic() + timeout
            sent = 0
            last_bookmark = time.monotonic()
            with fake._cond:
                fake.open_streams += 1
                gone = fake.gone_next_watches > 0
                if gone:
                    fake.gone_next_watches -= 1
                stalled_forever = fake.stall_next_watches > 0
                if stalled_forever:
                    fake.stall_next_watches -= 1
            try:
                if gone:
                    self._chunk(
                        {
                            "type": "ERROR",
                            "object": status(410, "Expired", f"too old resource version: {since} ({fake._rv})"),
                        }
                    )
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                    return
                while True:
                    with fake._cond:
                        if fake._closing:
                            self._abort()
                            return
                        if fake.stall.is_set() or stalled_forever:
                            fake._cond.wait(0.05)
                            continue
                        found = fake.watch_events(namespace, name, since)
                        if found is None:
                            self._chunk(
                                {
                                    "type": "ERROR",
                                    "object": status(
                                        410, "Expired", f"too old resource version: {since} ({fake._oldest_watchable})"
                                    ),
                                }
                            )
                            break
                        events, reached = found
                        events = [e for e in events if bookmarks or e["type"] != "BOOKMARK"]
                        if not events and time.monotonic() < deadline:
                            interval = fake.bookmark_interval
                            if bookmarks and interval is not None and time.monotonic() - last_bookmark >= interval:
                                events = [
                                    {
                                        "type": "BOOKMARK",
                                        "object": {
                                            "kind": "Secret",
                                            "apiVersion": "v1",
                                            "metadata": {"resourceVersion": str(fake._rv)},
                                        },
                                    }
                                ]
                                reached = fake._rv
                            else:
                                fake._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))
                                continue
                    if not events:  # deadline: a clean end of the stream, like timeoutSeconds on the server
                        break
                    for event in events:
                        self._chunk(event)
                        sent += 1
                        if event["type"] == "BOOKMARK":
                            last_bookmark = time.monotonic()
                        if fake.drop_after_events is not None and sent >= fake.drop_after_events:
                            fake.drop_after_events = None
                            self._abort()
                            return
                    since = reached
                    with fake._cond:  # consumed bookmarks and raw lines are not sent again
                        fake._history = [e for e in fake._history if e.type not in ("BOOKMARK", "RAW")]
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return
            finally:
                with fake._cond:
                    fake.open_streams -= 1

        def _abort(self) -> None:
            """Drops the connection without the final chunk: the client sees a broken stream."""
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


def write_kubeconfig(
    path: Path, server_url: str, namespace: str = "default", context: str = "fake", *, insecure: bool = False
) -> Path:
    """A kubeconfig whose one context points at the fake with a bearer token (``insecure``: TLS unverified)."""
    cluster: dict[str, Any] = {"server": server_url}
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": cluster}],
        "users": [{"name": "tester", "user": {"token": TOKEN}}],
        "contexts": [{"name": context, "context": {"cluster": "fake", "user": "tester", "namespace": namespace}}],
        "current-context": context,
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path

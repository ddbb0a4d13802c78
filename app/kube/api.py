"""The few Kubernetes API calls authgate makes: build a client, read one Secret, edit it safely.

Edits are read-modify-write guarded by the Secret's ``resourceVersion``: a merge patch carrying
``metadata.resourceVersion`` is refused with 409 Conflict when anyone wrote the Secret in between, and
the edit is then re-run on a fresh copy. Nobody's change is silently overwritten.

Every failure an operator can hit (Secret missing, RBAC, API unreachable) becomes a ``KubeError`` whose
``str()`` is one line fit for ``authgate: error: ...``; every kubeconfig fault (missing, empty, not YAML,
not shaped like a kubeconfig, an unknown or unset context) is a ``KubeconfigError``, also a
``ConfigError`` (exit status 2), naming the file or the context.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import kubernetes.client
import kubernetes.config
import urllib3.exceptions
import yaml
from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from app.errors import AuthgateError, ConfigError

log = logging.getLogger("authgate.kube")

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
MERGE_PATCH = "application/merge-patch+json"
DEFAULT_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds for one-shot calls
CONFLICT_ATTEMPTS = 8

Files = dict[str, bytes]
Edit = Callable[[Mapping[str, bytes]], Files]
T = TypeVar("T")


class KubeError(AuthgateError):
    """A Kubernetes API problem, said in one line (what, which Secret, why)."""


class KubeconfigError(KubeError, ConfigError):
    """A kubeconfig file that is not YAML or not shaped like one: ``file[:line]: why``.

    A configuration error, like a bad policy file (the CLI exits 2), rather than a failure of the API.
    """


@dataclass(frozen=True, slots=True)
class SecretRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> SecretRef:
        """``NAMESPACE/NAME``, the form of ``--watch-secret``."""
        namespace, sep, name = text.partition("/")
        if not sep or not namespace or not name or "/" in name:
            raise ValueError(f"expected NAMESPACE/NAME, got {text!r}")
        return cls(namespace, name)


@dataclass(frozen=True, slots=True)
class SecretSnapshot:
    """A Secret's decoded data and the resourceVersion it was read at."""

    files: Files
    resource_version: str


@dataclass(frozen=True, slots=True)
class UpdateResult:
    changed: bool
    resource_version: str
    attempts: int


# --- client construction --------------------------------------------------------------------------


def in_cluster() -> bool:
    """Inside a pod the API address comes from the environment kubelet sets."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def kubeconfig_path(kubeconfig: str | None = None) -> str:
    """``--kubeconfig``, else ``KUBECONFIG`` (read now: the kubernetes package freezes it at import)."""
    return kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"


def check_kubeconfig(config_file: str, context: str | None = None) -> None:
    """Raises KubeconfigError naming the file, or the context, for every kubeconfig fault.

    The kubernetes client's loader answers a file that is not YAML or not a kubeconfig with a YAML parser
    error or a TypeError from deep inside, and a missing or empty file or an unknown context in words that
    name neither the file nor the contexts there are. ``config_file`` may list several files, like
    ``KUBECONFIG``: missing and empty ones are skipped as the loader does, unless none is left.
    """
    documents: list[dict[str, Any]] = []
    unusable: list[str] = []
    for part in filter(None, config_file.split(os.pathsep)):
        path = Path(part).expanduser()
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            unusable.append(f"{path} does not exist")
            continue
        except OSError as exc:
            raise KubeconfigError(f"kubeconfig cannot be read: {exc.strerror or exc}", str(path)) from None
        document = _parse_kubeconfig(raw, path)
        if document is None:
            unusable.append(f"{path} is empty")
            continue
        documents.append(document)
    if not documents:
        raise KubeconfigError(
            f"no usable Kubernetes configuration: the kubeconfig {'; '.join(unusable) or 'path is empty'}"
        )
    names = [str(entry["name"]) for document in documents for entry in document.get("contexts") or []]
    known = f"(contexts: {', '.join(names) or 'none'})"
    current = next((d["current-context"] for d in documents if d.get("current-context")), None)
    if context is not None and context not in names:
        raise KubeconfigError(f"context {context!r} is not in the kubeconfig {known}", config_file)
    if context is None and current is None:
        raise KubeconfigError(f"the kubeconfig sets no current-context: choose one with --context {known}", config_file)
    if context is None and current not in names:
        raise KubeconfigError(f"current-context {current!r} is not in the kubeconfig {known}", config_file)
    chosen = context or current
    body = next(e.get("context") for d in documents for e in d.get("contexts") or [] if e["name"] == chosen)
    for key in ("cluster", "user"):
        wanted = body.get(key) if isinstance(body, dict) else None
        present = [str(e["name"]) for d in documents for e in d.get(f"{key}s") or []]
        if wanted is not None and wanted not in present:
            raise KubeconfigError(
                f"context {chosen!r} names {key} {wanted!r}, which is not in the kubeconfig "
                f"({key}s: {', '.join(present) or 'none'})",
                config_file,
            )


def _parse_kubeconfig(raw: bytes, path: Path) -> dict[str, Any] | None:
    """The file's mapping, None when empty; KubeconfigError when not YAML or not shaped like a kubeconfig."""
    try:
        document = yaml.safe_load(raw)
    except yaml.MarkedYAMLError as exc:
        problem = ", ".join(filter(None, [exc.context, exc.problem])) or str(exc)
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        raise KubeconfigError(f"kubeconfig is not valid YAML: {_first_line(problem)}", str(path), line) from None
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"kubeconfig is not valid YAML: {_first_line(str(exc))}", str(path)) from None
    if document is None:
        return None
    if not isinstance(document, dict):
        raise KubeconfigError(
            "a kubeconfig is a YAML mapping (apiVersion, clusters, contexts, users, current-context), "
            f"this file holds a {_yaml_kind(document)}",
            str(path),
        )
    for key in ("clusters", "contexts", "users"):
        entries = document.get(key) or []
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "name" in e for e in entries):
            raise KubeconfigError(f"kubeconfig {key!r} must be a list of mappings, each with a 'name'", str(path))
    return document


def _yaml_kind(value: object) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _from_kubeconfig(config_file: str, load: Callable[[], T], context: str | None = None) -> T:
    """Runs one of the client's kubeconfig loaders after ``check_kubeconfig``.

    Shapes the check does not cover (a context naming a missing cluster, bad base64 in certificate
    data...) still fail inside the loader, with a ConfigException or a TypeError, KeyError,
    AttributeError or ValueError: they become one KubeconfigError naming the file instead.
    """
    check_kubeconfig(config_file, context)
    try:
        return load()
    except ConfigException as exc:
        reason = _first_line(str(exc)).removeprefix("Invalid kube-config file. ").removeprefix("Invalid kube-config. ")
        raise KubeconfigError(f"kubeconfig not usable: {reason}", config_file) from None
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        reason = f"{type(exc).__name__}: {_first_line(str(exc))}"
        raise KubeconfigError(f"kubeconfig not usable ({reason})", config_file) from None


def new_api_client(kubeconfig: str | None = None, context: str | None = None) -> ApiClient:
    """A client from the pod's service account, or from a kubeconfig (``KUBECONFIG`` or ``~/.kube/config``).

    An explicit ``kubeconfig`` or ``context`` always means kubeconfig, so an operator running the CLI
    in a pod can still aim at another cluster. ``KUBECONFIG`` is read here, at call time, because the
    kubernetes package freezes it at import.
    """
    configuration = kubernetes.client.Configuration()
    try:
        if kubeconfig is None and context is None and in_cluster():
            kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            config_file = kubeconfig_path(kubeconfig)
            _from_kubeconfig(
                config_file,
                lambda: kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=config_file, context=context, client_configuration=configuration, persist_config=False
                ),
                context,
            )
    except (ConfigException, OSError) as exc:
        raise KubeError(f"no usable Kubernetes configuration: {_first_line(str(exc))}") from None
    if not configuration.verify_ssl:  # said once by the caller (unverified_tls), not by urllib3 on every request
        warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
    # No hidden retries: urllib3's default (3, each logged as a "Retrying (Retry(total=2...))" warning)
    # would hide and multiply failures that the watcher retries with its own backoff and the CLI reports.
    configuration.retries = 0
    return ApiClient(configuration)


def unverified_tls(api: ApiClient) -> str | None:
    """One line to warn with when the client does not check the API server's certificate, else None."""
    configuration = api.configuration
    if configuration.verify_ssl or not str(configuration.host).startswith("https:"):
        return None
    return (
        f"the TLS certificate of {configuration.host} is not verified (insecure-skip-tls-verify in the "
        "kubeconfig): whoever is in between can read and change the Secret"
    )


def default_namespace(kubeconfig: str | None = None, context: str | None = None) -> str:
    """The namespace of the kubeconfig context, else the pod's own namespace, else ``default``."""
    if kubeconfig is None and context is None and in_cluster():
        try:
            return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
        except OSError:
            return "default"
    config_file = kubeconfig_path(kubeconfig)
    try:
        contexts, current = _from_kubeconfig(
            config_file,
            lambda: kubernetes.config.list_kube_config_contexts(config_file),  # type: ignore[no-untyped-call]
            context,
        )
    except (ConfigException, OSError):
        return "default"  # no usable configuration: new_api_client says so, in one line, right after
    chosen = current
    if context is not None:
        chosen = next((c for c in contexts if c.get("name") == context), None)
    body = chosen.get("context") if isinstance(chosen, dict) else None
    namespace = body.get("namespace") if isinstance(body, dict) else None
    return str(namespace) if namespace else "default"


# --- errors ---------------------------------------------------------------------------------------


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _status_message(exc: ApiException) -> str:
    """The ``message`` of the Status object the API server sends with every error."""
    import json

    try:
        body: Any = json.loads(exc.body or "")
    except ValueError:
        return _first_line(str(exc.reason or ""))
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return _first_line(body["message"])
    return _first_line(str(exc.reason or ""))


def describe_error(exc: BaseException, ref: SecretRef, verb: str, host: str = "") -> str:
    """One line for an operator: which Secret, which verb, what to do about it."""
    if isinstance(exc, ApiException):
        message = _status_message(exc)
        if exc.status == 404:
            return (
                f"secret {ref} not found (create it first: kubectl -n {ref.namespace} create secret generic "
                f"{ref.name} --from-file=tokens)"
            )
        if exc.status == 403:
            return f"permission denied: cannot {verb} secret {ref}: {message}"
        if exc.status == 401:
            return f"unauthorized: the Kubernetes API rejected the credentials ({message})"
        return f"Kubernetes API error {exc.status} on {verb} secret {ref}: {message}"
    where = f" at {host}" if host else ""
    reason = getattr(exc, "reason", None) or exc
    return f"cannot reach the Kubernetes API{where}: {_first_line(str(reason))}"


TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (urllib3.exceptions.HTTPError, OSError)


def resource_version_of(metadata: Any) -> str:
    return str(getattr(metadata, "resource_version", None) or "")


# --- secret read / edit ---------------------------------------------------------------------------


def decode_data(data: Mapping[str, str | bytes] | Mapping[str, str] | None) -> Files:
    """A Secret's ``.data`` (base64 strings) as bytes per key."""
    return {key: base64.b64decode(value) for key, value in (data or {}).items()}


def encode_data(files: Mapping[str, bytes]) -> dict[str, str]:
    return {key: base64.b64encode(value).decode("ascii") for key, value in files.items()}


def read_secret(api: ApiClient, ref: SecretRef, timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> SecretSnapshot:
    """GET the Secret; raises KubeError with a one-line reason."""
    core = CoreV1Api(api)
    try:
        secret = core.read_namespaced_secret(ref.name, ref.namespace, _request_timeout=timeout)
    except ApiException as exc:
        raise KubeError(describe_error(exc, ref, "get", api.configuration.host)) from None
    except TRANSPORT_ERRORS as exc:
        raise KubeError(describe_error(exc, ref, "get", api.configuration.host)) from None
    return SecretSnapshot(decode_data(secret.data), resource_version_of(secret.metadata))


def patch_body(old: Mapping[str, bytes], new: Mapping[str, bytes], resource_version: str) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) of the changed keys, with the resourceVersion as a precondition."""
    data: dict[str, str | None] = {key: None for key in old if key not in new}
    data.update({key: value for key, value in encode_data(new).items() if old.get(key) != new[key]})
    return {"metadata": {"resourceVersion": resource_version}, "data": data}


def update_secret(
    api: ApiClient,
    ref: SecretRef,
    edit: Edit,
    *,
    attempts: int = CONFLICT_ATTEMPTS,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
) -> UpdateResult:
    """Read, ``edit``, patch with the read resourceVersion; on 409 Conflict, start over.

    ``edit`` gets the current files and returns the new ones; it must be pure (it may run several
    times) and may raise to abort. No write happens when it changes nothing.
    """
    core = CoreV1Api(api)
    host = api.configuration.host
    for attempt in range(1, attempts + 1):
        current = read_secret(api, ref, timeout)
        new = edit(current.files)
        if new == current.files:
            return UpdateResult(False, current.resource_version, attempt)
        body = patch_body(current.files, new, current.resource_version)
        try:
            patched = core.patch_namespaced_secret(
                ref.name, ref.namespace, body, _content_type=MERGE_PATCH, _request_timeout=timeout
            )
        except ApiException as exc:
            if exc.status == 409 and attempt < attempts:
                log.info("secret %s changed since it was read (409 Conflict); retrying, attempt %s", ref, attempt + 1)
                sleep(random.uniform(0.05, 0.2) * attempt)  # noqa: S311 - jitter, not a secret
                continue
            raise KubeError(describe_error(exc, ref, "patch", host)) from None
        except TRANSPORT_ERRORS as exc:
            raise KubeError(describe_error(exc, ref, "patch", host)) from None
        return UpdateResult(True, resource_version_of(patched.metadata), attempt)
    raise KubeError(f"secret {ref} kept changing: gave up after {attempts} conflicting attempts")

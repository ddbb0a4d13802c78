"""Validating rendered custom resources against the upstream CRDs in ``tests/chart/upstream-crds/``.

What the API server would check on create, as far as it can be done offline:

- the version's ``openAPIV3Schema`` with JSON Schema (``jsonschema``), made strict the way
  ``kubectl --validate=strict`` is: an object schema that lists ``properties`` and neither
  ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields`` refuses unknown fields (the API
  server would silently prune them: a typo would vanish);
- every ``x-kubernetes-validations`` CEL rule on the way, evaluated with ``self`` bound to the value at that
  node (PyPI ``common-expression-language``). Transition rules (``oldSelf``) apply to updates only and are
  skipped; a rule that cannot be evaluated here is an error, not a pass.

The CRDs are copies kept in the repository (versions, sources and licences in that folder's README;
``scripts/refresh-crds.sh`` refreshes them); a missing file fails the test, it never skips.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import jsonschema
import pytest
import yaml

# The Rust extension itself, not the package: xds-protos (Envoy's protos, for --grpc-port) ships a top-level
# `cel` package of its own (cel.expr) with an empty cel/__init__.py, and whichever of the two pip installs
# last owns that file. cel.cel is common-expression-language's whatever the order.
from cel.cel import Context, evaluate

from tests.support.procs import REPO_ROOT

CRD_DIR = REPO_ROOT / "tests" / "chart" / "upstream-crds"
CRD_FILES = (
    "gateway-api-v1.6.1-experimental-httproutes.yaml",
    "gateway-api-v1.6.1-experimental-referencegrants.yaml",
    "envoy-gateway-v1.9.0-securitypolicies.yaml",
    "istio-1.30.3-crds.yaml",
    "traefik-v3.7.9-crds.yaml",
    "contour-v1.33.6-crds.yaml",
)
# The standard-channel HTTPRoute, to show which resources need the experimental channel.
STANDARD_HTTPROUTES = "gateway-api-v1.6.1-standard-httproutes.yaml"


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _load(name: str) -> list[dict[str, Any]]:
    path = CRD_DIR / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: see tests/chart/upstream-crds/README.md")
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "CustomResourceDefinition"]


@cache
def schemas(files: tuple[str, ...] = CRD_FILES) -> dict[tuple[str, str], dict[str, Any]]:
    """``(apiVersion, kind)`` -> openAPIV3Schema, for every served version in the files."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for name in files:
        for crd in _load(name):
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served", True) and "schema" in version:
                    found[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return found


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy that refuses unknown fields where the API server would prune them, and accepts what the
    API server accepts for ``x-kubernetes-int-or-string``. OpenAPI v3.0's boolean ``exclusiveMaximum`` /
    ``exclusiveMinimum`` (Contour's ExtensionService port: ``maximum: 65536, exclusiveMaximum: true``) become
    the numbers JSON Schema draft 7 expects."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("x-kubernetes-int-or-string"):
                node.pop("type", None)
                node.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
            for bound, exclusive in (("maximum", "exclusiveMaximum"), ("minimum", "exclusiveMinimum")):
                # pop() drops a false one; a true one takes the bound's value (and the bound goes)
                if isinstance(node.get(exclusive), bool) and node.pop(exclusive) and bound in node:
                    node[exclusive] = node.pop(bound)
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    # apiVersion, kind and metadata are the API server's own (a CRD may not even list them)
    properties = schema.setdefault("properties", {})
    properties["apiVersion"] = {"type": "string"}
    properties["kind"] = {"type": "string"}
    properties["metadata"] = {"type": "object"}
    return schema


def _defaulted(schema: dict[str, Any], value: Any) -> Any:
    """``value`` with the schema's ``default``s filled in, as the API server does before validating."""
    if isinstance(value, dict):
        result = dict(value)
        for key, sub in schema.get("properties", {}).items():
            if key not in result and "default" in sub:
                result[key] = copy.deepcopy(sub["default"])
            if key in result:
                result[key] = _defaulted(sub, result[key])
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_defaulted(schema["items"], item) for item in value]
    return value


# Kubernetes CEL names a property that is a CEL reserved word `__word__` (e.g. `p.__namespace__`).
_CEL_RESERVED = frozenset(
    {
        "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function", "if",
        "import", "let", "loop", "package", "namespace", "return", "var", "void", "while",
    }
)  # fmt: skip


def _cel_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {(f"__{k}__" if k in _CEL_RESERVED else k): _cel_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cel_value(v) for v in value]
    return value


def _rules(schema: dict[str, Any], value: Any, path: str) -> Iterator[Problem]:
    """Evaluates every x-kubernetes-validations rule from ``schema`` down, along ``value``."""
    for rule in schema.get("x-kubernetes-validations", []):
        text = rule["rule"]
        if "oldSelf" in text:
            continue
        context = Context()
        context.add_variable("self", _cel_value(value))
        try:
            ok = evaluate(text, context)
        except Exception as exc:  # the evaluator's own error types
            yield Problem(path, f"CEL rule could not be evaluated here ({exc}): {text}")
            continue
        if ok is not True:
            yield Problem(path, f"{rule.get('message') or 'CEL rule failed'}: {text}")
    if isinstance(value, dict):
        for key, child in value.items():
            sub = schema.get("properties", {}).get(key)
            if sub is None and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            if sub is not None:
                yield from _rules(sub, child, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, child in enumerate(value):
            yield from _rules(schema["items"], child, f"{path}[{index}]")


def validate(obj: dict[str, Any], files: tuple[str, ...] = CRD_FILES) -> list[Problem]:
    """Everything wrong with one custom resource; [] when the API server would take it."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    schema = schemas(files).get(key)
    if schema is None:
        return [Problem(f"{key[1]}", f"no served CRD version for {key[0]} {key[1]} in {', '.join(files)}")]
    defaulted = _defaulted(schema, obj)
    problems = [
        Problem("/".join(map(str, error.absolute_path)) or "(root)", error.message)
        for error in jsonschema.Draft7Validator(_strict(schema)).iter_errors(defaulted)
    ]
    problems.extend(_rules(schema, defaulted, obj["kind"]))
    return problems


def is_custom(obj: dict[str, Any]) -> bool:
    return (obj.get("apiVersion", ""), obj.get("kind", "")) in schemas()


__all__ = ["STANDARD_HTTPROUTES", "Problem", "is_custom", "schemas", "validate"]

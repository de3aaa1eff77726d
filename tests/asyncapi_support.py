"""The AsyncAPI contract (``api/asyncapi.yaml``) as a test oracle.

* :func:`official_schema` is the AsyncAPI 3.0.0 JSON Schema from the npm package
  ``@asyncapi/specs`` (pinned in ``scripts/npm/package-lock.json``), which ``scripts/bootstrap``
  installs into ``.stack/npm``. Nothing is fetched from the network at test time: every
  reference is resolved inside the schema or the document, and any other one fails.
* :class:`Contract` checks a Kafka record (key, headers, value, as bytes) against the schemas of
  the channel whose address is the record's topic.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "api" / "asyncapi.yaml"
NPM_PINS = ROOT / "scripts" / "npm"
SPECS_PACKAGE = "@asyncapi/specs"
# The URI the document is registered under, so that "#/components/..." references inside any
# of its schemas resolve against the whole document.
DOCUMENT_URI = "urn:payments-pipeline:asyncapi"


def npm_dir() -> Path:
    stack_dir = Path(os.environ.get("STACK_DIR") or ".stack")
    return (stack_dir if stack_dir.is_absolute() else ROOT / stack_dir) / "npm"


def no_remote(uri: str) -> Resource[Any]:
    raise LookupError(
        f"schema reference {uri} is not in the document or the AsyncAPI schema; "
        "the contract tests never fetch anything from the network"
    )


@cache
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text())
    return loaded


def pinned_specs_version() -> str:
    """The version of ``@asyncapi/specs`` that scripts/npm/package.json pins."""
    pins = json.loads((NPM_PINS / "package.json").read_text())
    return str(pins["dependencies"][SPECS_PACKAGE])


def installed_specs() -> Path:
    package = npm_dir() / "node_modules" / SPECS_PACKAGE
    if not (package / "package.json").exists():
        raise AssertionError(
            f"{SPECS_PACKAGE} is not installed in {package.parent.parent}: run scripts/bootstrap "
            "(or `make up`), which installs it with npm ci from scripts/npm/package-lock.json"
        )
    return package


def official_schema(version: str = "3.0.0") -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (installed_specs() / "schemas" / f"{version}.json").read_text()
    )
    return loaded


def asyncapi_validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    """The official schema's own dialect (draft-07), resolving nothing from outside."""
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, registry=Registry(retrieve=no_remote))  # type: ignore[call-arg]


def resolve(doc: dict[str, Any], ref: str) -> tuple[str, Any]:
    """A local ``#/a/b`` reference -> (its JSON pointer, the object it points at)."""
    assert ref.startswith("#/"), f"only local references are used in the document, got {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[part]
    return ref[1:], node


@dataclass(frozen=True)
class Decoded:
    key: Any
    headers: dict[str, str]
    value: Any


class Contract:
    """The document's schemas, ready to check real records."""

    def __init__(self, doc: dict[str, Any] | None = None) -> None:
        self.doc = doc or document()
        resource = DRAFT7.create_resource(self.doc)
        self.registry: Registry[Any] = Registry(retrieve=no_remote).with_resource(
            DOCUMENT_URI, resource
        )

    # -- where things are ---------------------------------------------------------------------

    def channels_by_topic(self) -> dict[str, str]:
        return {ch["address"]: name for name, ch in self.doc["channels"].items()}

    def message_pointers(self, channel: str) -> list[str]:
        """JSON pointers of the messages a channel carries (after its references)."""
        pointers = []
        for name, message in self.doc["channels"][channel].get("messages", {}).items():
            if "$ref" in message:
                pointer, _ = resolve(self.doc, message["$ref"])
            else:
                pointer = f"/channels/{channel}/messages/{name}"
            pointers.append(pointer)
        return pointers

    def message(self, pointer: str) -> dict[str, Any]:
        _, found = resolve(self.doc, "#" + pointer)
        return dict(found)

    def validator(self, pointer: str) -> jsonschema.protocols.Validator:
        schema = {"$ref": f"{DOCUMENT_URI}#{pointer}"}
        return jsonschema.Draft7Validator(
            schema,
            registry=self.registry,
            format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER,
        )

    # -- records ------------------------------------------------------------------------------

    def decode(
        self,
        message: dict[str, Any],
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        value: bytes | None,
    ) -> Decoded:
        kafka = message.get("bindings", {}).get("kafka", {})
        key_type = kafka.get("x-key-content-type", "text/plain")
        value_type = message.get("contentType", self.doc.get("defaultContentType"))
        names = [name for name, _ in headers]
        if len(names) != len(set(names)):
            raise ValueError(f"repeated header names: {names}")
        return Decoded(
            key=_decode(key, key_type),
            headers={name: raw.decode("utf-8") for name, raw in headers},
            value=_decode(value, value_type),
        )

    def problems(
        self,
        topic: str,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        value: bytes | None,
    ) -> list[str]:
        """What is wrong with one record, against every message of its topic's channel (a
        record must match one of them); empty when it matches."""
        channel = self.channels_by_topic().get(topic)
        if channel is None:
            return [f"topic {topic} has no channel in {DOCUMENT.name}"]
        pointers = self.message_pointers(channel)
        if not pointers:
            return [f"channel {channel} declares no messages, yet {topic} has a record"]
        found: list[str] = []
        for pointer in pointers:
            mismatch = self._against(pointer, key, headers, value)
            if not mismatch:
                return []
            found.extend(f"{pointer}: {m}" for m in mismatch)
        return found

    def _against(
        self,
        pointer: str,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        value: bytes | None,
    ) -> list[str]:
        message = self.message(pointer)
        try:
            decoded = self.decode(message, key, headers, value)
        except (ValueError, UnicodeDecodeError) as exc:
            return [f"cannot decode the record as the message says: {exc}"]
        found = []
        parts: list[tuple[str, str, Any]] = [("payload", "/payload", decoded.value)]
        if "key" in message.get("bindings", {}).get("kafka", {}):
            parts.append(("key", "/bindings/kafka/key", decoded.key))
        if "headers" in message:
            parts.append(("headers", "/headers", decoded.headers))
        elif decoded.headers:
            found.append(f"headers: the message declares none, the record has {decoded.headers}")
        for part, sub, instance in parts:
            for error in self.validator(pointer + sub).iter_errors(instance):
                # for oneOf/anyOf, the most relevant reason of the closest branch
                error = jsonschema.exceptions.best_match([error]) or error
                while error.context:
                    error = jsonschema.exceptions.best_match(error.context) or error
                    if not error.context:
                        break
                where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                # jsonschema puts the instance first and the rule last: keep the rule
                text = error.message if len(error.message) <= 300 else "…" + error.message[-300:]
                found.append(f"{part} at {where}: {text}")
        return found


def _decode(raw: bytes | None, content_type: str) -> Any:
    if raw is None:
        return None
    if content_type == "application/json":
        return json.loads(raw)
    return raw.decode("utf-8")

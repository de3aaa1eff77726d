"""The AsyncAPI document (api/asyncapi.yaml) against the official AsyncAPI 3.0.0 JSON Schema
(npm @asyncapi/specs, pinned in scripts/npm), and against the producers' own code: the worker's
status records, the topics the settings name, the document the API serves."""

from __future__ import annotations

import copy
import json
import sys
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from api import create_app
from api.bootstrap import build_api_services
from payments.domain.events import StatusUpdate
from payments.domain.status import Status
from payments.settings import Settings
from streams.emitter import cloudevent_record
from streams.topics import EMITTED_TABLE, OPEN_TABLE
from tests import asyncapi_support as contract
from tests.fakes import FakePaymentRepository, FakeStripeGateway
from tests.stack_support import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

from localstack import connect

PAYMENT = UUID("2918548f-a4d9-4f63-a94e-d6fc8612dd42")


def asyncapi_errors(doc: dict[str, Any]) -> list[str]:
    validator = contract.asyncapi_validator(contract.official_schema("3.0.0"))
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message[:300]}"
        for e in validator.iter_errors(doc)
    ]


def test_the_document_is_valid_asyncapi_3_0_0() -> None:
    doc = contract.document()
    assert doc["asyncapi"] == "3.0.0"
    assert asyncapi_errors(doc) == []


def test_the_official_schema_is_the_pinned_package() -> None:
    installed = json.loads((contract.installed_specs() / "package.json").read_text())
    lock = json.loads((contract.NPM_PINS / "package-lock.json").read_text())
    pinned = contract.pinned_specs_version()
    assert installed["name"] == "@asyncapi/specs"
    assert installed["version"] == pinned
    assert lock["packages"]["node_modules/@asyncapi/specs"]["version"] == pinned
    assert lock["packages"]["node_modules/@asyncapi/specs"]["integrity"].startswith("sha512-")
    schema = contract.official_schema("3.0.0")
    assert schema["$id"] == "http://asyncapi.com/definitions/3.0.0/asyncapi.json"


@pytest.mark.parametrize(
    ("what", "path", "value"),
    [
        # AsyncAPI 2's verbs are not 3.0's
        ("operation action", ("operations", "emitPaymentStatusUpdate", "action"), "publish"),
        (
            "kafka binding field",
            ("channels", "paymentChanges", "bindings", "kafka", "retention"),
            1,
        ),
        ("schema keyword type", ("components", "schemas", "Currency", "type"), "text"),
        ("channel field", ("channels", "paymentStatusUpdates", "topic"), "x"),
    ],
)
def test_the_official_schema_refuses_a_broken_document(
    what: str, path: tuple[str, ...], value: Any
) -> None:
    """The check above means something: the schema does refuse what 3.0.0 does not allow."""
    doc = copy.deepcopy(contract.document())
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    assert asyncapi_errors(doc), f"a wrong {what} was accepted"


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_every_reference_resolves_and_operations_carry_their_channels_messages() -> None:
    doc = contract.document()
    for ref in refs(doc):
        contract.resolve(doc, ref)  # raises KeyError when it points nowhere
    for name, operation in doc["operations"].items():
        channel_pointer, _ = contract.resolve(doc, operation["channel"]["$ref"])
        for message in operation.get("messages", []):
            # AsyncAPI 3.0: an operation's messages are a subset of its channel's messages.
            assert message["$ref"].startswith(f"#{channel_pointer}/messages/"), (name, message)
    used = {contract.resolve(doc, op["channel"]["$ref"])[0] for op in doc["operations"].values()}
    assert used == {f"/channels/{name}" for name in doc["channels"]}, "a channel nobody uses"


def test_every_topic_the_project_names_has_a_channel_with_its_partitions() -> None:
    """The addresses and partition counts are the settings' defaults (the document says which
    setting names each) and the stack's Connect configuration; the live broker is compared
    with the document by tests/e2e/test_status_events_contract.py."""
    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    prefix, app_id = defaults["cdc_topic_prefix"], defaults["worker_app_id"]
    partitions = defaults["kafka_topic_partitions"]
    expected = {
        f"{prefix}.public.payments": partitions,
        # the heartbeat table is in the connector's tables
        f"{prefix}.public.dbz_heartbeat": partitions,
        f"__debezium-heartbeat.{prefix}": partitions,
        defaults["status_topic"]: partitions,
        defaults["dlq_topic"]: partitions,
        f"{app_id}-{OPEN_TABLE}-changelog": partitions,
        f"{app_id}-{EMITTED_TABLE}-changelog": partitions,
        f"{app_id}-__assignor-__leader": 1,  # Faust makes its leader topic with one partition
        # Kafka Connect's storage topics (scripts/localstack/connect.py writes them into
        # connect-distributed.properties)
        **connect.INTERNAL_TOPICS,
    }
    doc = contract.document()
    documented = {
        ch["address"]: ch["bindings"]["kafka"]["partitions"] for ch in doc["channels"].values()
    }
    assert documented == expected


def test_the_examples_match_their_schemas() -> None:
    checker = contract.Contract()
    checked = 0
    for name, message in checker.doc["components"]["messages"].items():
        pointer = f"/components/messages/{name}"
        for i, example in enumerate(message.get("examples", [])):
            for part in ("headers", "payload"):
                if part in example:
                    errors = list(checker.validator(f"{pointer}/{part}").iter_errors(example[part]))
                    assert not errors, (name, i, part, [e.message for e in errors])
                    checked += 1
    assert checked >= 2


def status_update(**changes: Any) -> StatusUpdate:
    fields: dict[str, Any] = {
        "payment_id": PAYMENT,
        "status": Status.SUCCEEDED,
        "previous_status": Status.PENDING,
        "amount_minor": 1999,
        "currency": "usd",
        "provider_payment_id": "pi_123",
        "source": "webhook",
        "version": 3,
        "occurred_at": datetime(2026, 11, 23, 15, 25, 26, 508334, tzinfo=UTC),
    }
    return StatusUpdate(**{**fields, **changes})


@pytest.mark.parametrize(
    "update",
    [
        status_update(),
        status_update(status=Status.FAILED, source="reconciler", version=2),
        status_update(status=Status.SUCCEEDED, previous_status=Status.FAILED, version=5),
        status_update(status=Status.CANCELED, source="api", provider_payment_id=None),
        status_update(status=Status.EXPIRED, source="expiry", tenant_id="acme"),
    ],
    ids=["succeeded", "failed", "failed-then-succeeded", "canceled-without-intent", "tenant"],
)
def test_the_workers_status_record_matches_the_contract(update: StatusUpdate) -> None:
    key, value, headers = cloudevent_record(update)
    assert contract.Contract().problems("payment-status-update", key, headers, value) == []
    tenant = dict(headers).get("ce_tenantid")
    assert tenant == (update.tenant_id.encode() if update.tenant_id else None)


def test_a_status_record_off_the_contract_is_caught() -> None:
    """The record check is an oracle: a wrong type, a missing header, an extra field fail."""
    checker = contract.Contract()
    key, value, headers = cloudevent_record(status_update())
    wrong_type = [(n, b"payments.payment.pending" if n == "ce_type" else v) for n, v in headers]
    no_id = [(n, v) for n, v in headers if n != "ce_id"]
    extra_field = json.dumps({**json.loads(value), "email": "ada@example.com"}).encode()
    float_amount = json.dumps({**json.loads(value), "amount_minor": 19.99}).encode()
    topic = "payment-status-update"
    assert checker.problems(topic, key, wrong_type, value)
    assert checker.problems(topic, key, no_id, value)
    assert checker.problems(topic, key, headers, extra_field)
    assert checker.problems(topic, key, headers, float_amount)
    assert checker.problems(topic, b"not-a-uuid", headers, value)


def test_the_api_serves_the_document_without_a_key() -> None:
    settings = Settings(api_keys="acme:k_live_1", stripe_webhook_secret="whsec_unit")
    services = build_api_services(
        settings, repository=FakePaymentRepository(), gateway=FakeStripeGateway()
    )
    client = create_app(settings, services=services).test_client()
    response = client.get("/asyncapi.yaml")
    assert response.status_code == 200
    assert response.mimetype == "application/yaml"
    assert response.data == contract.DOCUMENT.read_bytes()
    # and the rest still wants the key
    assert client.post("/payments", json={}).status_code == 401

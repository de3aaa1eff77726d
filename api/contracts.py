"""``GET /asyncapi.yaml``: the AsyncAPI 3.0 contract of every Kafka topic, served as written.

The document (``api/asyncapi.yaml``) is a public contract, like ``/openapi.json``: no API key.
It is read on the first request, not at import time, and served byte for byte as it is in the
repository, so what a consumer downloads is what the contract tests validated.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from flask import Blueprint, Response

contracts_bp = Blueprint("contracts", __name__)
ASYNCAPI_DOCUMENT = "asyncapi.yaml"
# RFC 9512's media type for YAML.
YAML_MEDIA_TYPE = "application/yaml"


@cache
def asyncapi_document() -> bytes:
    return files("api").joinpath(ASYNCAPI_DOCUMENT).read_bytes()


@contracts_bp.get("/asyncapi.yaml")
def asyncapi() -> Response:
    response = Response(asyncapi_document(), mimetype=YAML_MEDIA_TYPE)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response

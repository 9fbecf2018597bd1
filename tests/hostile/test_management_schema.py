"""schemathesis against the management API's own OpenAPI description, served by Protect at
``/v1/accounts/openapi.json``, with the admin session token: every generated request
(valid and invalid bodies, path parameters of any shape) gets no 5xx and an answer whose
status, content type and body the schema describes."""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from keylimit import Protect

from ._harness import ADMIN, FixedApp, hostile_config
from .conftest import CASES

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

# schemathesis drives the app in-process, on an event loop thread of its own.
schema = schemathesis.openapi.from_asgi("/v1/accounts/openapi.json", Protect(FixedApp(), hostile_config()))


@schema.parametrize()
@CASES
def test_management_api_answers_within_its_schema(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN}"}, checks=CHECKS)

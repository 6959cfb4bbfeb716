"""Schemathesis drives every operation in our OpenAPI document with generated input: no answer is a 500."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from schemathesis.checks import not_a_server_error

from tests.conftest import Api

FUZZ = hsettings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def fuzz_every_operation(api: Api, role: str) -> int:
    _, headers = api.user(role)
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", api.client.app)
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @FUZZ
        @given(case=operation.as_strategy())
        def run(case) -> None:  # type: ignore[no-untyped-def]
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        run()
        operations += 1
    return operations


def test_no_server_errors_as_a_customer(api: Api) -> None:
    assert fuzz_every_operation(api, "customer") >= 20


def test_no_server_errors_as_a_provider(api: Api) -> None:
    assert fuzz_every_operation(api, "provider") >= 20

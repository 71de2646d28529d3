"""The api's OpenAPI schema, fuzzed with schemathesis: no input may cause a 5xx answer.

Schemathesis reads the schema the api serves and generates requests from it: valid ones, and
invalid ones (wrong types, odd strings, huge numbers). Every answer must be a 2xx, or a 4xx
with a JSON error; a 500 would mean an input the code did not expect.
"""

import hypothesis
import schemathesis
from schemathesis import GenerationMode

from .services import run_app

# The live stream never ends by itself, so it is not fuzzed here (tests/test_api.py checks it).
SKIP = {"/api/stream"}


def test_no_input_causes_a_server_error(stack):
    with run_app(stack, "api", ready=True) as api:
        schema = schemathesis.openapi.from_url(api.url + "/openapi.json")
        operations = [r.ok() for r in schema.get_all_operations()]
        fuzzed = [op for op in operations if op.path not in SKIP]
        assert len(fuzzed) >= 5, [op.label for op in operations]
        calls = 0
        for op in fuzzed:
            calls += _fuzz(op, GenerationMode.POSITIVE)
            if list(op.iter_parameters()):  # without parameters there is nothing to get wrong
                calls += _fuzz(op, GenerationMode.NEGATIVE)
        print(f"{calls} fuzzed requests over {len(fuzzed)} operations")
        assert calls >= 100


def _fuzz(operation, mode) -> int:
    """Send generated requests to one operation; returns how many were sent."""
    sent = []

    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(
        max_examples=30, deadline=None, database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )  # fmt: skip
    def run(case):
        response = case.call(timeout=10)
        sent.append(response.status_code)
        where = (operation.label, mode.value, case.path_parameters, case.query)
        assert response.status_code < 500, (*where, response.status_code, response.text[:300])
        if response.status_code >= 400 and response.status_code != 404:
            assert "error" in response.json(), (*where, response.text[:300])

    run()
    return len(sent)

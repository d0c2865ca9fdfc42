"""Property-based API fuzzing with schemathesis against the real server's /openapi.json: a bounded
number of generated requests per operation (positive and negative data); no 5xx and no response
that violates the documented schema or content type.

The operations are driven with Hypothesis directly rather than through schemathesis' pytest
plugin, which does not load under this pytest version.
"""

from __future__ import annotations

import os

import schemathesis
from conftest import RunningServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

CHECKS = [schemathesis.checks.not_a_server_error, response_schema_conformance, content_type_conformance]
# Per operation and run; ~20 operations keep CI well under a minute. Raise it for a deeper search.
MAX_EXAMPLES = int(os.environ.get("HYDRODIAG_FUZZ_EXAMPLES", "10"))


def test_api_conforms_to_its_schema(server: RunningServer) -> None:
    schema = schemathesis.openapi.from_url(server.base_url + "/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        strategy = st.one_of(operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                             operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))

        @given(case=strategy)
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            fuzz()
        except Exception as exc:  # collect every operation's failure, then report them together
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    print(f"\nschemathesis: {operations} operations, up to {MAX_EXAMPLES} examples each")
    assert operations >= 15
    assert not failures, "\n\n".join(failures)

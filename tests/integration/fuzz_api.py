"""Bounded schema fuzzing of a served ingress: no 5xx from any endpoint (issue 15).

Schemathesis reads the OpenAPI the ingress serves (``/openapi.json``) and generates requests
for every operation from it, both fitting the schema (``positive``) and not (``negative``:
wrong types, missing and extra fields, out-of-range numbers). Each is sent over HTTP to the
real app; any status of 500 or more fails, with the request that caused it. Bounded and
repeatable: a fixed number of examples per operation and mode, derandomized, no example
database, no deadline (the machine is shared; speed is measured in ``benchmarks/``).

Requests carry a valid key by default, so they reach body parsing and the pipeline; with
``generated_auth=True`` the generated ``Authorization`` header is sent as generated.
Called from ``test_serving_http.py``, which has the served app (deploying another costs
minutes).
"""

from __future__ import annotations

import requests
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis.errors import Unsatisfiable

MAX_EXAMPLES = 25
PINNED = {"/v1/recommend": {"surface": "home"}}
"""Body fields fixed in the schema-fitting cases, so that they reach the pipeline (a random
surface name is a 404 before it); everything else in them stays generated."""


def fuzz(base: str, headers: dict[str, str], *, max_examples: int = MAX_EXAMPLES,
         generated_auth: bool = False) -> dict[str, dict[int, int]]:  # fmt: skip
    """Fuzz every operation of the app at ``base``; returns ``"METHOD path mode"`` → status →
    count. Raises AssertionError naming the request on any 5xx."""
    import schemathesis
    from schemathesis import GenerationMode

    raw = requests.get(f"{base}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(raw)
    seen: dict[str, dict[int, int]] = {}
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            label = f"{operation.method.upper()} {operation.path} {mode.value}"
            check = _checker(label, seen.setdefault(label, {}), base, session,
                             None if generated_auth else headers)  # fmt: skip
            strategy = operation.as_strategy(generation_mode=mode)
            if mode is GenerationMode.POSITIVE and operation.path in PINNED:
                strategy = strategy.map(lambda case, pin=PINNED[operation.path]: _pin(case, pin))
            run = settings(max_examples=max_examples, derandomize=True, database=None,
                           deadline=None, phases=[Phase.explicit, Phase.generate],
                           suppress_health_check=list(HealthCheck))(given(case=strategy)(check))  # fmt: skip
            try:
                run()
            except Unsatisfiable:
                # Nothing in the operation can be made invalid (no body, no typed parameter):
                # schemathesis finds no negative case; the positive ones ran.
                if mode is not GenerationMode.NEGATIVE:
                    raise
    return seen


def _checker(label: str, counts: dict[int, int], base: str, session, headers):
    def check(case) -> None:
        try:
            response = case.call(base_url=base, session=session, headers=headers, timeout=60)
        except ValueError:  # a generated header HTTP cannot carry (requests refuses it)
            reject()
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
        assert response.status_code < 500, (
            f"{label}: {response.status_code} for {case.method} {case.formatted_path} "
            f"query={case.query!r} headers={case.headers!r} body={case.body!r}: "
            f"{response.text[:300]}"
        )

    return check


def _pin(case, fields: dict):
    if isinstance(case.body, dict):
        case.body.update(fields)
    return case

"""Properties of tests/unit/test_fhir.py's "never raises" section that run hundreds of Hypothesis
examples (seconds each): arbitrary objects with a ``resourceType``, and the realistic examples with one
element replaced by arbitrary JSON, never make ``normalise_fhir`` raise or break its outcome invariant."""

from __future__ import annotations

import copy

import orjson
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_fhir import EXAMPLES, FHIR_KEYS, JSON, check_output, paths
from vitals_lake.fhir import looks_like_fhir, normalise_fhir


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FHIR_KEYS) | st.text(max_size=5), JSON, max_size=8), JSON)
def test_arbitrary_objects_with_resource_type_never_raise(doc, resource_type):
    doc["resourceType"] = resource_type
    record = orjson.dumps(doc)
    assert looks_like_fhir(pa.array([record], pa.binary())).tolist() == [True]
    [out] = normalise_fhir([record])
    check_output(out)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_examples_never_raise(data):
    # Realistic resources with one element replaced by arbitrary JSON reach the deep code paths.
    doc = copy.deepcopy(data.draw(st.sampled_from(EXAMPLES)))
    path = data.draw(st.sampled_from(paths(doc)))
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = data.draw(JSON)
    [out] = normalise_fhir([orjson.dumps(doc)])
    check_output(out)

"""FHIR R4 input: every record becomes one plain reading (less the Bundle entries it names) or one problem."""

from __future__ import annotations

import copy
import re
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from hypothesis import strategies as st

from tests.factories import bronze
from vitals_lake import contract as c
from vitals_lake import fhir
from vitals_lake.expectations import ID_RE
from vitals_lake.fhir import FhirOutcome, FhirProblem, looks_like_fhir, normalise_fhir
from vitals_lake.readings import parse_batch

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
VITAL_SIGNS_CATEGORY = [
    {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "vital-signs",
                "display": "Vital Signs",
            }
        ],
        "text": "Vital Signs",
    }
]
PROFILE = {"profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]}
WHEN = "2026-11-22T06:30:00.250+01:00"
CONTRACT_FIELDS = {
    c.EVENT_ID,
    c.PATIENT_ID,
    c.DEVICE_ID,
    c.TIMESTAMP,
    *c.VITAL_NAMES,
    c.TEMPERATURE_UNIT,
    c.CONSCIOUSNESS,
    c.SUPPLEMENTAL_OXYGEN,
    c.SUPERSEDES,
}

# --- Examples modelled on the FHIR R4 vital-signs examples (hl7.org/fhir/R4/observation-examples) --

HEART_RATE: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "heart-rate",
    "meta": PROFILE,
    "status": "final",
    "category": VITAL_SIGNS_CATEGORY,
    "code": {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}], "text": "Heart rate"},
    "subject": {"reference": "Patient/P000001"},
    "effectiveDateTime": WHEN,
    "valueQuantity": {"value": 44, "unit": "beats/minute", "system": UCUM, "code": "/min"},
}

RESPIRATORY_RATE: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "respiratory-rate",
    "meta": PROFILE,
    "status": "final",
    "category": VITAL_SIGNS_CATEGORY,
    "code": {"coding": [{"system": LOINC, "code": "9279-1", "display": "Respiratory rate"}]},
    "subject": {"reference": "Patient/P000001"},
    "effectiveDateTime": WHEN,
    "valueQuantity": {"value": 26, "unit": "breaths/minute", "system": UCUM, "code": "/min"},
}

# The R4 "satO2" example: several codings for one concept, an identifier, a DeviceMetric as device.
SPO2: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "satO2",
    "meta": PROFILE,
    "identifier": [{"system": "http://goodcare.org/observation/id", "value": "o1223435-10"}],
    "status": "final",
    "category": VITAL_SIGNS_CATEGORY,
    "code": {
        "coding": [
            {"system": LOINC, "code": "2708-6", "display": "Oxygen saturation in Arterial blood"},
            {"system": LOINC, "code": "59408-5", "display": "Oxygen saturation by Pulse oximetry"},
            {"system": "urn:iso:std:iso:11073:10101", "code": "150456", "display": "MDC_PULS_OXIM_SAT_O2"},
        ]
    },
    "subject": {"reference": "Patient/P000001"},
    "effectiveDateTime": WHEN,
    "valueQuantity": {"value": 95, "unit": "%", "system": UCUM, "code": "%"},
    "device": {"reference": "DeviceMetric/example"},
}

BODY_TEMPERATURE: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "body-temperature",
    "meta": PROFILE,
    "status": "final",
    "category": VITAL_SIGNS_CATEGORY,
    "code": {"coding": [{"system": LOINC, "code": "8310-5", "display": "Body temperature"}]},
    "subject": {"reference": "Patient/P000001"},
    "effectiveDateTime": WHEN,
    "valueQuantity": {"value": 36.5, "unit": "C", "system": UCUM, "code": "Cel"},
    "device": {"reference": "Device/thermo-7"},
}

BLOOD_PRESSURE: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "blood-pressure",
    "meta": PROFILE,
    "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:187e0c12-8dd2-67e2-99b2-bf273c878281"}],
    "status": "final",
    "category": VITAL_SIGNS_CATEGORY,
    "code": {
        "coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}],
        "text": "Blood pressure systolic & diastolic",
    },
    "subject": {"reference": "Patient/P000001"},
    "effectiveDateTime": WHEN,
    "performer": [{"reference": "Practitioner/example"}],
    "interpretation": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                    "code": "L",
                }
            ]
        }
    ],
    "bodySite": {"coding": [{"system": SNOMED, "code": "368209003", "display": "Right arm"}]},
    "device": {"reference": "Device/cuff-3"},
    "component": [
        {
            "code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"}]},
            "valueQuantity": {"value": 107, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
        },
        {
            "code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"}]},
            "valueQuantity": {"value": 60, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
        },
    ],
}


def component(loinc: str, value: float, unit: str) -> dict[str, Any]:
    return {
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


VITALS_PANEL_COMPONENTS: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "vitals-panel-c",
    "meta": PROFILE,
    "status": "final",
    "category": VITAL_SIGNS_CATEGORY,
    "code": {"coding": [{"system": LOINC, "code": "85353-1", "display": "Vital signs panel"}]},
    "subject": {"reference": "Patient/P000002"},
    "effectiveDateTime": WHEN,
    "device": {"reference": "Device/monitor-12"},
    "component": [
        component("8867-4", 118, "/min"),
        component("9279-1", 24, "/min"),
        component("59408-5", 91.5, "%"),
        component("8310-5", 38.9, "Cel"),
        component("8480-6", 96, "mm[Hg]"),
        component("8462-4", 58, "mm[Hg]"),
    ],
}


def contained_member(member_id: str, loinc: str, value: float, unit: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": member_id,
        "status": "final",
        "category": VITAL_SIGNS_CATEGORY,
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


# The R4 "vitals-panel" example groups its members with hasMember; here they travel contained.
VITALS_PANEL_MEMBERS: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "vitals-panel",
    "meta": PROFILE,
    "contained": [
        contained_member("hr", "8867-4", 88, "/min"),
        contained_member("rr", "9279-1", 18, "/min"),
        {**copy.deepcopy(BLOOD_PRESSURE), "id": "bp", "subject": {"reference": "Patient/P000003"}},
        contained_member("temp", "8310-5", 37.2, "Cel"),
        contained_member("weight", "29463-7", 81.2, "kg"),  # in the profile, not carried: skipped
    ],
    "status": "final",
    "category": VITAL_SIGNS_CATEGORY,
    "code": {"coding": [{"system": LOINC, "code": "85353-1"}], "text": "Vital signs panel"},
    "subject": {"reference": "Patient/P000003"},
    "effectiveDateTime": WHEN,
    "hasMember": [
        {"reference": "#hr"},
        {"reference": "#rr"},
        {"reference": "#bp"},
        {"reference": "#temp"},
        {"reference": "#weight"},
    ],
}


def entry(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"resource": resource}
    if full_url:
        out["fullUrl"] = full_url
    return out


BUNDLE: dict[str, Any] = {
    "resourceType": "Bundle",
    "id": "bundle-vitals",
    "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"},
    "type": "collection",
    "timestamp": "2026-11-22T06:30:05+01:00",
    "entry": [
        entry({**copy.deepcopy(HEART_RATE), "device": {"reference": "Device/monitor-12"}}),
        entry({**copy.deepcopy(BLOOD_PRESSURE), "device": {"reference": "Device/monitor-12"}}),
        entry({**copy.deepcopy(BODY_TEMPERATURE), "device": {"reference": "Device/monitor-12"}}),
        entry({**copy.deepcopy(SPO2), "device": {"reference": "Device/monitor-12"}}),
        entry(copy.deepcopy(RESPIRATORY_RATE)),
    ],
}


def variant(resource: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy with top-level elements replaced (``None`` removes one)."""
    out = copy.deepcopy(resource)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def one(resource: dict[str, Any] | bytes) -> FhirOutcome:
    record = resource if isinstance(resource, bytes) else orjson.dumps(resource)
    [out] = normalise_fhir([record])
    check_outcome(out)
    return out


def check_outcome(out: FhirOutcome) -> None:
    """The invariant readings.py relies on: no reading <-> exactly one whole-record problem."""
    assert isinstance(out, FhirOutcome)
    assert all(p.rule in fhir.FHIR_RULES and p.detail for p in out.problems), out.problems
    if out.reading is None:
        assert len(out.problems) == 1 and out.problems[0].part is None, out.problems
    else:
        assert all(p.part for p in out.problems), out.problems
        doc = orjson.loads(out.reading)
        assert isinstance(doc, dict) and set(doc) <= CONTRACT_FIELDS
        assert doc[c.PATIENT_ID] and doc[c.TIMESTAMP]
        for key in (c.EVENT_ID, c.SUPERSEDES):
            assert key not in doc or re.fullmatch(ID_RE, doc[key]), doc[key]


def outcome_reading(out: FhirOutcome) -> dict[str, Any]:
    assert out.reading is not None, out.problems
    doc = orjson.loads(out.reading)
    assert isinstance(doc, dict)
    return doc


def reading(resource: dict[str, Any]) -> dict[str, Any]:
    out = one(resource)
    assert out.problems == (), out.problems
    return outcome_reading(out)


def problem(resource: dict[str, Any] | bytes) -> FhirProblem:
    out = one(resource)
    assert out.reading is None, orjson.loads(out.reading)
    [p] = out.problems
    assert p.part is None
    return p


def event_id(resource: dict[str, Any]) -> str:
    """The reading's event id: namespaced, never the bare resource id."""
    eid = reading(resource)[c.EVENT_ID]
    assert re.fullmatch(ID_RE, eid) and eid.startswith("fhir-") and len(eid) == 37, eid
    return str(eid)


# --- Accepted shapes -------------------------------------------------------------------------------


def test_single_heart_rate_observation():
    # Changed by issue #13: the event id is namespaced by (source, patient, id), not the bare id.
    assert reading(HEART_RATE) == {
        c.EVENT_ID: event_id(HEART_RATE),
        c.PATIENT_ID: "P000001",
        c.TIMESTAMP: WHEN,  # passed through unchanged: the Silver gate validates it
        c.HEART_RATE: 44,
    }


def test_identifier_wins_over_id_and_a_device_metric_is_not_a_device():
    doc = reading(SPO2)
    # Changed by issue #13: the identifier (system, value, patient) is hashed into the event id.
    assert doc[c.EVENT_ID] == event_id(variant(SPO2, id="another-id-on-another-server"))
    other = variant(SPO2, identifier=[{"system": "http://goodcare.org/observation/id", "value": "o2"}])
    assert doc[c.EVENT_ID] != event_id(other)
    assert doc[c.SPO2] == 95
    assert c.DEVICE_ID not in doc


@pytest.mark.parametrize(
    ("resource", "name", "value"),
    [
        (RESPIRATORY_RATE, c.RESPIRATION_RATE, 26),
        (variant(SPO2, code={"coding": [{"system": LOINC, "code": "59408-5"}]}), c.SPO2, 95),
        (variant(SPO2, code={"coding": [{"system": LOINC, "code": "2708-6"}]}), c.SPO2, 95),
        (BODY_TEMPERATURE, c.TEMPERATURE, 36.5),
        (
            variant(
                HEART_RATE,
                code={"coding": [{"system": LOINC, "code": "8480-6"}]},
                valueQuantity={"value": 131, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
            ),
            c.SYSTOLIC,
            131,
        ),
    ],
)
def test_each_single_vital(resource, name, value):
    doc = reading(resource)
    assert doc[name] == value
    assert set(doc) & set(c.VITAL_NAMES) == {name}


def test_celsius_temperature_carries_its_unit_and_device():
    doc = reading(BODY_TEMPERATURE)
    assert doc[c.TEMPERATURE] == 36.5
    assert doc[c.TEMPERATURE_UNIT] == "Cel"
    assert doc[c.DEVICE_ID] == "thermo-7"


def test_fahrenheit_passes_through_unconverted():
    f = variant(
        BODY_TEMPERATURE, valueQuantity={"value": 101.3, "unit": "F", "system": UCUM, "code": "[degF]"}
    )
    doc = reading(f)
    assert doc[c.TEMPERATURE] == 101.3  # the Silver gate converts, not the normaliser
    assert doc[c.TEMPERATURE_UNIT] == "[degF]"


def test_blood_pressure_panel():
    doc = reading(BLOOD_PRESSURE)
    assert doc[c.SYSTOLIC] == 107 and doc[c.DIASTOLIC] == 60
    assert doc[c.EVENT_ID] == event_id(BLOOD_PRESSURE)  # issue #13: from its identifier, namespaced
    assert doc[c.DEVICE_ID] == "cuff-3"
    assert c.BLOOD_PRESSURE not in doc


def test_vital_signs_panel_with_components():
    assert reading(VITALS_PANEL_COMPONENTS) == {
        c.EVENT_ID: event_id(VITALS_PANEL_COMPONENTS),  # issue #13: namespaced
        c.PATIENT_ID: "P000002",
        c.DEVICE_ID: "monitor-12",
        c.TIMESTAMP: WHEN,
        c.HEART_RATE: 118,
        c.RESPIRATION_RATE: 24,
        c.SPO2: 91.5,
        c.TEMPERATURE: 38.9,
        c.TEMPERATURE_UNIT: "Cel",
        c.SYSTOLIC: 96,
        c.DIASTOLIC: 58,
    }


def test_vital_signs_panel_with_contained_members():
    doc = reading(VITALS_PANEL_MEMBERS)
    assert doc[c.PATIENT_ID] == "P000003"
    assert doc[c.TIMESTAMP] == WHEN  # members without an effective time inherit the panel's
    assert (doc[c.HEART_RATE], doc[c.RESPIRATION_RATE], doc[c.TEMPERATURE]) == (88, 18, 37.2)
    assert (doc[c.SYSTOLIC], doc[c.DIASTOLIC]) == (107, 60)  # a contained BP panel's components
    assert doc[c.DEVICE_ID] == "cuff-3"


def test_bundle_merges_its_observations_into_one_reading():
    assert reading(BUNDLE) == {
        c.EVENT_ID: event_id(BUNDLE),  # issue #13: namespaced, from the identities of its Observations
        c.PATIENT_ID: "P000001",
        c.DEVICE_ID: "monitor-12",
        c.TIMESTAMP: WHEN,
        c.HEART_RATE: 44,
        c.RESPIRATION_RATE: 26,
        c.SPO2: 95,
        c.TEMPERATURE: 36.5,
        c.TEMPERATURE_UNIT: "Cel",
        c.SYSTOLIC: 107,
        c.DIASTOLIC: 60,
    }


def test_bundle_event_id_comes_from_its_observations_and_several_devices_name_none():
    bundle = variant(BUNDLE, identifier=None, id="another-transmission")
    bundle["entry"][0]["resource"]["device"] = {"reference": "Device/other"}
    doc = reading(bundle)
    # Changed by issue #13 (was the Bundle.id): the same Observations are the same reading.
    assert doc[c.EVENT_ID] == event_id(BUNDLE)
    assert c.DEVICE_ID not in doc  # two devices measured it: naming one would be wrong


def test_message_bundle_skips_context_and_resolves_members_to_entries():
    panel = variant(
        VITALS_PANEL_MEMBERS,
        contained=None,
        hasMember=[
            {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"},
            {"reference": "Observation/rr"},
        ],
    )
    rr = variant(RESPIRATORY_RATE, id="rr", subject={"reference": "Patient/P000003"})
    hr = variant(HEART_RATE, subject={"reference": "http://ehr.example/fhir/Patient/P000003/_history/4"})
    bundle = {
        "resourceType": "Bundle",
        "id": "msg-1",
        "type": "message",
        "entry": [
            entry({"resourceType": "MessageHeader", "id": "h1", "eventCoding": {"code": "vitals"}}),
            entry({"resourceType": "Patient", "id": "P000003"}, "http://ehr.example/fhir/Patient/P000003"),
            entry(panel),
            entry(hr, "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"),
            entry(rr, "http://ehr.example/fhir/Observation/rr"),
        ],
    }
    doc = reading(bundle)
    assert (doc[c.PATIENT_ID], doc[c.HEART_RATE], doc[c.RESPIRATION_RATE]) == ("P000003", 44, 26)


def test_one_instant_spelled_two_ways_and_other_effective_forms():
    bundle = copy.deepcopy(BUNDLE)
    for e in bundle["entry"]:
        e["resource"]["effectiveDateTime"] = "2026-11-22T05:30:00Z"
    bundle["entry"][1]["resource"].pop("effectiveDateTime")
    bundle["entry"][1]["resource"]["effectiveInstant"] = "2026-11-22T05:30:00.000+00:00"
    bundle["entry"][2]["resource"].pop("effectiveDateTime")
    bundle["entry"][2]["resource"]["effectivePeriod"] = {"start": "2026-11-22T06:30:00+01:00"}
    assert reading(bundle)[c.TIMESTAMP] == "2026-11-22T05:30:00Z"  # the first spelling, unchanged


def test_the_same_vital_twice_with_the_same_value_is_one_vital():
    bundle = variant(BUNDLE, entry=[entry(HEART_RATE), entry(variant(HEART_RATE, id="hr-again"))])
    assert reading(bundle)[c.HEART_RATE] == 44


def test_a_component_with_a_data_absent_reason_is_skipped_not_a_problem():
    bp = copy.deepcopy(BLOOD_PRESSURE)
    bp["component"][1].pop("valueQuantity")
    bp["component"][1]["dataAbsentReason"] = {"coding": [{"code": "error"}], "text": "cuff deflated early"}
    doc = reading(bp)
    assert doc[c.SYSTOLIC] == 107 and c.DIASTOLIC not in doc


def test_a_member_listed_twice_or_in_a_cycle_counts_once():
    hr = variant(contained_member("hr", "8867-4", 88, "/min"), hasMember=[{"reference": "#hr"}])
    panel = variant(
        VITALS_PANEL_MEMBERS, contained=[hr], hasMember=[{"reference": "#hr"}, {"reference": "#hr"}]
    )
    assert reading(panel)[c.HEART_RATE] == 88


def test_patient_by_identifier_and_ucum_annotations():
    obs = variant(
        HEART_RATE,
        subject={"identifier": {"system": "urn:oid:2.16.840.1.113883.2.1.4.1", "value": "P000009"}},
        valueQuantity={"value": 61, "unit": "beats/min", "system": UCUM, "code": "{beats}/min"},
    )
    doc = reading(obs)
    assert (doc[c.PATIENT_ID], doc[c.HEART_RATE]) == ("P000009", 61)


ACVPU_CODE = {"coding": [{"system": SNOMED, "code": "1104441000000107", "display": "ACVPU scale score"}]}


@pytest.mark.parametrize(
    ("answer", "letter"),
    [
        ({"system": SNOMED, "code": "248234008", "display": "Mentally alert"}, "A"),
        ({"system": SNOMED, "code": "300202002", "display": "Responds to voice"}, "V"),
        ({"system": "https://trust.example/CodeSystem/acvpu", "code": "C", "display": "New confusion"}, "C"),
    ],
)
def test_acvpu_consciousness(answer, letter):
    obs = variant(
        HEART_RATE,
        category=[{"coding": [{"code": "survey"}]}],
        code=ACVPU_CODE,
        valueQuantity=None,
        valueCodeableConcept={"coding": [answer]},
    )
    doc = reading(obs)
    assert doc[c.CONSCIOUSNESS] == letter
    assert not set(doc) & set(c.VITAL_NAMES)


@pytest.mark.parametrize(
    ("extra", "on_oxygen"),
    [
        (component("3151-8", 2, "L/min"), True),
        (component("3151-8", 0, "L/min"), False),
        (component("3150-0", 21, "%"), False),
        (component("3150-0", 35, "%"), True),
    ],
)
def test_supplemental_oxygen_from_pulse_oximetry_components(extra, on_oxygen):
    doc = reading(variant(SPO2, component=[extra]))
    assert doc[c.SUPPLEMENTAL_OXYGEN] is on_oxygen
    assert doc[c.SPO2] == 95


@pytest.mark.parametrize(("finding", "on_oxygen"), [("371825009", True), ("722742002", False)])
def test_supplemental_oxygen_from_an_air_or_oxygen_observation(finding, on_oxygen):
    air = variant(
        HEART_RATE,
        id="air",
        code={"text": "Air or Oxygen Observation"},
        valueQuantity=None,
        valueCodeableConcept={"coding": [{"system": SNOMED, "code": finding}]},
    )
    doc = reading(variant(BUNDLE, entry=[entry(HEART_RATE), entry(air)]))
    assert doc[c.SUPPLEMENTAL_OXYGEN] is on_oxygen


def test_normalised_records_pass_the_silver_gate():
    records = [orjson.dumps(r) for r in (BUNDLE, VITALS_PANEL_MEMBERS, BLOOD_PRESSURE, HEART_RATE)]
    out = parse_batch(bronze(records))
    assert out.quarantine.num_rows == 0, out.quarantine.to_pylist()
    rows = out.valid.to_pylist()
    assert [r[c.PATIENT_ID] for r in rows] == ["P000001", "P000003", "P000001", "P000001"]
    assert (rows[0][c.SYSTOLIC], rows[0][c.HEART_RATE], rows[0][c.EVENT_ID]) == (107, 44, event_id(BUNDLE))


def test_one_output_per_record_in_order():
    records = [orjson.dumps(HEART_RATE), b"{not json", orjson.dumps(BLOOD_PRESSURE)]
    out = normalise_fhir(records)
    assert len(out) == 3
    assert outcome_reading(out[0])[c.HEART_RATE] == 44 and out[0].problems == ()
    assert out[1].reading is None and [p.rule for p in out[1].problems] == [fhir.RULE_MALFORMED]
    assert outcome_reading(out[2])[c.SYSTOLIC] == 107


# --- Problems: one test per rule -------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        b'{"resourceType": "Observation", "status": ',
        b'{"resourceType": "Observation", "note": "\xff"}',
        orjson.dumps(variant(HEART_RATE, subject="Patient/P000001")),
        orjson.dumps(variant(HEART_RATE, valueQuantity={"value": "44", "code": "/min"})),
        orjson.dumps(variant(HEART_RATE, component={"code": "8480-6"})),
        orjson.dumps({"resourceType": 7}),
        b"[1, 2]",
    ],
)
def test_malformed(record):
    assert problem(record).rule == fhir.RULE_MALFORMED


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Patient", "id": "P000001"},
        variant(BUNDLE, entry=[entry({"resourceType": "MessageHeader", "id": "h"})]),
        variant(BUNDLE, entry=[entry({"resourceType": "Condition", "id": "x"})]),
    ],
)
def test_not_observation(resource):
    assert problem(resource).rule == fhir.RULE_NOT_OBSERVATION


def test_another_resource_in_a_bundle_is_left_out_as_its_entry():
    # Changed by issue #13 (was: the whole Bundle quarantined): the Observation still makes the reading.
    out = one(variant(BUNDLE, entry=[entry(HEART_RATE), entry({"resourceType": "Condition", "id": "x"})]))
    assert outcome_reading(out)[c.HEART_RATE] == 44
    assert [(p.rule, p.part) for p in out.problems] == [(fhir.RULE_NOT_OBSERVATION, "entry[1]")]


def test_bundle_type():
    p = problem(variant(BUNDLE, type="searchset"))
    assert p.rule == fhir.RULE_BUNDLE_TYPE and "searchset" in p.detail


@pytest.mark.parametrize(
    "resource",
    [
        variant(HEART_RATE, status="entered-in-error"),
        variant(HEART_RATE, status="cancelled"),
        variant(HEART_RATE, status=None),
        variant(BUNDLE, entry=[entry(variant(SPO2, status="registered"))]),
    ],
)
def test_status(resource):
    assert problem(resource).rule == fhir.RULE_STATUS


def test_a_bundle_entry_with_a_bad_status_is_left_out():
    # Changed by issue #13 (was: the whole Bundle quarantined under fhir_status).
    out = one(variant(BUNDLE, entry=[entry(HEART_RATE), entry(variant(SPO2, status="registered"))]))
    assert outcome_reading(out)[c.HEART_RATE] == 44 and c.SPO2 not in outcome_reading(out)
    assert [(p.rule, p.part) for p in out.problems] == [(fhir.RULE_STATUS, "entry[1]")]


@pytest.mark.parametrize(
    "resource",
    [
        variant(HEART_RATE, code={"coding": [{"system": LOINC, "code": "2339-0", "display": "Glucose"}]}),
        variant(HEART_RATE, code={"coding": [{"code": "8867-4"}]}),  # no system: not LOINC for sure
        variant(HEART_RATE, code={"coding": [{"system": LOINC, "code": "29463-7"}]}),  # weight: not carried
        variant(HEART_RATE, code=None),
        variant(  # one Observation coded as two things is a guess either way
            HEART_RATE,
            code={"coding": [{"system": LOINC, "code": "8867-4"}, {"system": LOINC, "code": "29463-7"}]},
        ),
        variant(
            HEART_RATE,
            code={"coding": [{"system": LOINC, "code": "8867-4"}, {"system": LOINC, "code": "9279-1"}]},
        ),
    ],
)
def test_unknown_code(resource):
    assert problem(resource).rule == fhir.RULE_UNKNOWN_CODE


@pytest.mark.parametrize(
    "resource",
    [
        variant(BODY_TEMPERATURE, valueQuantity={"value": 310.1, "unit": "K", "system": UCUM, "code": "K"}),
        variant(HEART_RATE, valueQuantity={"value": 1.2, "system": UCUM, "code": "/s"}),
        variant(HEART_RATE, valueQuantity={"value": 44, "unit": "beats/minute"}),  # a display, not UCUM
        variant(HEART_RATE, valueQuantity={"value": 44}),
        variant(
            HEART_RATE, valueQuantity={"value": 44, "system": "http://acme.example/units", "code": "/min"}
        ),
        variant(BLOOD_PRESSURE, component=[component("8480-6", 14.3, "kPa")]),
        variant(SPO2, valueQuantity={"value": 0.95, "system": UCUM, "code": "1"}),
    ],
)
def test_bad_unit(resource):
    assert problem(resource).rule == fhir.RULE_BAD_UNIT


def test_bad_value():
    p = problem(variant(SPO2, component=[component("3151-8", -2, "L/min")]))
    assert p.rule == fhir.RULE_BAD_VALUE


@pytest.mark.parametrize(
    "resource",
    [
        variant(HEART_RATE, subject=None),
        # Group/ward-7 moved to test_subject_not_patient (issue #13: its own rule).
        variant(HEART_RATE, subject={"reference": "urn:uuid:9d1e0b1e-4d1c-4a77-9a0b-7ce3c1f2a1d0"}),
        variant(HEART_RATE, subject={"display": "Mr Smith"}),
    ],
)
def test_missing_subject(resource):
    assert problem(resource).rule == fhir.RULE_MISSING_SUBJECT


@pytest.mark.parametrize(
    "resource",
    [
        variant(HEART_RATE, effectiveDateTime=None),
        variant(HEART_RATE, effectiveDateTime=None, effectivePeriod={"end": WHEN}),
        variant(HEART_RATE, effectiveDateTime=""),
    ],
)
def test_missing_effective(resource):
    assert problem(resource).rule == fhir.RULE_MISSING_EFFECTIVE


@pytest.mark.parametrize(
    "resource",
    [
        variant(HEART_RATE, valueQuantity=None),
        variant(HEART_RATE, valueQuantity={"unit": "beats/minute", "system": UCUM, "code": "/min"}),
        variant(
            HEART_RATE,
            valueQuantity=None,
            dataAbsentReason={"coding": [{"code": "not-performed"}]},
        ),
        variant(VITALS_PANEL_COMPONENTS, component=None),
        variant(HEART_RATE, code=ACVPU_CODE, valueQuantity=None),
    ],
)
def test_missing_value(resource):
    assert problem(resource).rule == fhir.RULE_MISSING_VALUE


@pytest.mark.parametrize(
    "resource",
    [
        variant(BUNDLE, entry=[entry(HEART_RATE), entry(variant(SPO2, subject={"reference": "Patient/P2"}))]),
        variant(
            BUNDLE,
            entry=[entry(HEART_RATE), entry(variant(SPO2, effectiveDateTime="2026-11-22T06:35:00+01:00"))],
        ),
        variant(
            VITALS_PANEL_MEMBERS,
            contained=[
                variant(contained_member("hr", "8867-4", 88, "/min"), subject={"reference": "Patient/X"})
            ],
            hasMember=[{"reference": "#hr"}],
        ),
    ],
)
def test_mixed_bundle(resource):
    assert problem(resource).rule == fhir.RULE_MIXED_BUNDLE


@pytest.mark.parametrize(
    "resource",
    [
        variant(
            BUNDLE,
            entry=[
                entry(HEART_RATE),
                entry(variant(HEART_RATE, valueQuantity={"value": 80, "system": UCUM, "code": "/min"})),
            ],
        ),
        variant(
            VITALS_PANEL_COMPONENTS,
            component=[component("8310-5", 37.0, "Cel"), component("8310-5", 98.6, "[degF]")],
        ),
    ],
)
def test_duplicate_vital(resource):
    assert problem(resource).rule == fhir.RULE_DUPLICATE_VITAL


# "hr" names a contained member but without "#" it is a reference to a resource elsewhere.
@pytest.mark.parametrize("ref", ["Observation/hr-elsewhere", "#not-contained", "urn:uuid:1b2d", "hr"])
def test_unresolved_member(ref):
    panel = variant(VITALS_PANEL_MEMBERS, hasMember=[{"reference": "#hr"}, {"reference": ref}])
    p = problem(panel)
    assert p.rule == fhir.RULE_UNRESOLVED_MEMBER and repr(ref) in p.detail


def test_every_rule_is_exercised_by_a_test_above():
    # Guards the list: a new rule without a test shows up here.
    assert set(fhir.FHIR_RULES) == {
        fhir.RULE_MALFORMED,
        fhir.RULE_NOT_OBSERVATION,
        fhir.RULE_BUNDLE_TYPE,
        fhir.RULE_STATUS,
        fhir.RULE_UNKNOWN_CODE,
        fhir.RULE_BAD_UNIT,
        fhir.RULE_BAD_VALUE,
        fhir.RULE_MISSING_SUBJECT,
        fhir.RULE_MISSING_EFFECTIVE,
        fhir.RULE_MISSING_VALUE,
        fhir.RULE_MIXED_BUNDLE,
        fhir.RULE_DUPLICATE_VITAL,
        fhir.RULE_UNRESOLVED_MEMBER,
        fhir.RULE_COMPARATOR,
        fhir.RULE_NOT_A_MEASUREMENT,
        fhir.RULE_SUBJECT_NOT_PATIENT,
    }
    assert len(set(fhir.FHIR_RULES)) == len(fhir.FHIR_RULES)


# --- Issue #13: namespaced event ids, corrections, not-a-measurement, partial bundles, totality -----

EHR_A = "http://ehr-a.example/fhir"
EHR_B = "http://ehr-b.example/fhir"


def fhir_valid(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource, after checking it is valid FHIR R4B (fhir.resources); test inputs are real FHIR."""
    model = Bundle if resource["resourceType"] == "Bundle" else Observation
    model.model_validate(copy.deepcopy(resource))
    return resource


def readings_of(*resources: dict[str, Any]) -> list[dict[str, Any]]:
    return [outcome_reading(out) for out in normalise_fhir([orjson.dumps(r) for r in resources])]


def with_meta(resource: dict[str, Any], **meta: str) -> dict[str, Any]:
    return variant(resource, meta={**resource.get("meta", {}), **meta})


def test_the_same_id_for_two_patients_gives_two_event_ids():
    mine = fhir_valid(HEART_RATE)
    theirs = fhir_valid(variant(HEART_RATE, subject={"reference": "Patient/P000002"}))
    assert mine["id"] == theirs["id"]
    first, second = readings_of(mine, theirs)
    assert first[c.EVENT_ID] != second[c.EVENT_ID]
    assert (first[c.PATIENT_ID], second[c.PATIENT_ID]) == ("P000001", "P000002")
    # The same holds for a business identifier (SPO2 carries one) and for a Bundle.
    spo2_other = fhir_valid(variant(SPO2, subject={"reference": "Patient/P000002"}))
    assert event_id(SPO2) != event_id(spo2_other)
    bundle_other = copy.deepcopy(BUNDLE)
    for e in bundle_other["entry"]:
        e["resource"]["subject"] = {"reference": "Patient/P000002"}
    assert event_id(fhir_valid(BUNDLE)) != event_id(fhir_valid(bundle_other))


def test_the_same_id_from_two_servers_gives_two_event_ids():
    a = fhir_valid(with_meta(HEART_RATE, source=EHR_A))
    b = fhir_valid(with_meta(HEART_RATE, source=EHR_B))
    assert event_id(a) != event_id(b)
    # In a Bundle the entry's absolute fullUrl namespaces an Observation without meta.source.
    bundle_a = fhir_valid(variant(BUNDLE, entry=[entry(HEART_RATE, f"{EHR_A}/Observation/heart-rate")]))
    bundle_b = fhir_valid(variant(BUNDLE, entry=[entry(HEART_RATE, f"{EHR_B}/Observation/heart-rate")]))
    assert event_id(bundle_a) != event_id(bundle_b)
    # One identifier value in two identifier systems is two readings too.
    other_system = variant(SPO2, identifier=[{"system": "http://othercare.org/id", "value": "o1223435-10"}])
    assert event_id(fhir_valid(other_system)) != event_id(SPO2)


@pytest.mark.parametrize(
    "resource",
    [
        HEART_RATE,
        SPO2,
        BLOOD_PRESSURE,
        VITALS_PANEL_MEMBERS,
        BUNDLE,
        variant(HEART_RATE, id=None),  # no id, no identifier: its content identifies it
        variant(BUNDLE, entry=[entry(variant(HEART_RATE, id=None), "urn:uuid:5e8a0a53-1b0c-4f5e-9c43")]),
    ],
)
def test_the_same_resource_twice_gives_the_same_event_id(resource):
    fhir_valid(resource)
    pretty = orjson.dumps(resource, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    outs = normalise_fhir([orjson.dumps(resource), pretty, orjson.dumps(resource)])
    ids = {outcome_reading(out)[c.EVENT_ID] for out in outs}
    assert len(ids) == 1 and all(re.fullmatch(ID_RE, i) for i in ids)
    assert ids == {event_id(copy.deepcopy(resource))}  # and in a later batch


def test_event_ids_without_resource_ids_still_tell_readings_apart():
    # Two id-less Observations of one patient at one instant: neither may be dropped as the other.
    hr = fhir_valid(variant(HEART_RATE, id=None))
    rr = fhir_valid(variant(RESPIRATORY_RATE, id=None))
    assert event_id(hr) != event_id(rr)


def test_the_order_of_bundle_entries_does_not_change_the_event_id():
    shuffled = variant(BUNDLE, entry=list(reversed(BUNDLE["entry"])))
    assert event_id(fhir_valid(shuffled)) == event_id(BUNDLE)


ORIGINAL = with_meta(HEART_RATE, versionId="1", source=EHR_A, lastUpdated="2026-11-22T06:30:10+01:00")


def amended(status: str = "amended", value: int = 48, **meta: str) -> dict[str, Any]:
    resource = variant(
        ORIGINAL,
        status=status,
        valueQuantity={"value": value, "unit": "beats/minute", "system": UCUM, "code": "/min"},
    )
    resource["meta"].pop("versionId")
    resource["meta"].pop("lastUpdated")
    resource["meta"].update(meta)
    return fhir_valid(resource)


def test_an_amended_observation_is_kept_and_supersedes_the_original():
    fhir_valid(ORIGINAL)
    correction = amended(versionId="2", lastUpdated="2026-11-22T06:40:00+01:00")
    original, fixed, again = readings_of(ORIGINAL, correction, correction)
    assert c.SUPERSEDES not in original
    assert fixed[c.EVENT_ID] != original[c.EVENT_ID]  # not a duplicate of what it corrects
    assert fixed[c.SUPERSEDES] == original[c.EVENT_ID]
    assert (original[c.HEART_RATE], fixed[c.HEART_RATE]) == (44, 48)
    assert again == fixed  # a redelivery of the same version is still a duplicate
    assert re.fullmatch(ID_RE, fixed[c.SUPERSEDES])


def test_every_version_of_a_correction_is_its_own_reading():
    versions = [
        amended(versionId="2"),
        amended("corrected", 50, versionId="3"),
        amended("corrected", 51, lastUpdated="2026-11-22T07:00:00+01:00"),  # no versionId
        amended("corrected", 52),  # neither: a digest of the content tells versions apart
    ]
    docs = readings_of(ORIGINAL, *versions)
    original = docs[0][c.EVENT_ID]
    assert len({d[c.EVENT_ID] for d in docs}) == len(docs)
    assert [d.get(c.SUPERSEDES) for d in docs] == [None] + [original] * len(versions)


def test_a_correction_without_an_identity_cannot_name_its_original():
    doc = reading(amended(versionId="2") | {"id": "x"})
    assert doc[c.SUPERSEDES]
    anonymous = variant(amended(versionId="2"), id=None)
    doc = reading(fhir_valid(anonymous))
    assert c.SUPERSEDES not in doc and doc[c.EVENT_ID]


def test_an_amended_observation_in_a_bundle_supersedes_the_original_bundle():
    bundle = copy.deepcopy(BUNDLE)
    hr = bundle["entry"][0]["resource"]
    hr["status"] = "amended"
    hr["meta"] = {**hr["meta"], "versionId": "2"}
    hr["valueQuantity"]["value"] = 50
    doc = reading(fhir_valid(bundle))
    assert doc[c.HEART_RATE] == 50
    assert doc[c.SUPERSEDES] == event_id(BUNDLE) != doc[c.EVENT_ID]


def test_corrections_pass_the_silver_gate_next_to_their_original():
    out = parse_batch(bronze([orjson.dumps(ORIGINAL), orjson.dumps(amended(versionId="2"))]))
    assert out.quarantine.num_rows == 0, out.quarantine.to_pylist()
    original, fixed = out.valid.to_pylist()
    assert original[c.SUPERSEDES] is None
    assert fixed[c.SUPERSEDES] == original[c.EVENT_ID] != fixed[c.EVENT_ID]


@pytest.mark.parametrize("comparator", ["<", "<=", ">=", ">", "ad"])
def test_a_comparator_is_a_bound_not_a_measurement(comparator):
    quantity = {"value": 40, "comparator": comparator, "unit": "beats/minute", "system": UCUM, "code": "/min"}
    p = problem(fhir_valid(variant(HEART_RATE, valueQuantity=quantity)))
    assert p.rule == fhir.RULE_COMPARATOR and repr(comparator) in p.detail and "40" in p.detail


def test_a_comparator_in_a_component_is_a_bound_too():
    bp = copy.deepcopy(BLOOD_PRESSURE)
    bp["component"][0]["valueQuantity"]["comparator"] = ">"
    assert problem(fhir_valid(bp)).rule == fhir.RULE_COMPARATOR
    flow = component("3151-8", 2, "L/min")
    flow["valueQuantity"]["comparator"] = "<"
    assert problem(fhir_valid(variant(SPO2, component=[flow]))).rule == fhir.RULE_COMPARATOR


SAMPLED = {
    "origin": {"value": 0, "system": UCUM, "code": "/min"},
    "period": 1000,
    "dimensions": 1,
    "data": "72 74",
}


@pytest.mark.parametrize(
    "value",
    [
        {"valueString": "44"},
        {"valueString": "< 40"},
        {"valueInteger": 44},
        {"valueBoolean": True},
        {"valueRange": {"low": {"value": 40, "system": UCUM, "code": "/min"}, "high": {"value": 50}}},
        {
            "valueRatio": {
                "numerator": {"value": 44},
                "denominator": {"value": 1, "system": UCUM, "code": "min"},
            }
        },
        {"valueSampledData": SAMPLED},
        {"valueCodeableConcept": {"text": "normal"}},
        {"valuePeriod": {"start": WHEN}},
    ],
)
def test_a_vital_that_is_not_a_quantity_is_not_a_measurement(value):
    resource = fhir_valid(variant(HEART_RATE, valueQuantity=None, **value))
    p = problem(resource)
    assert p.rule == fhir.RULE_NOT_A_MEASUREMENT and next(iter(value)) in p.detail


def test_consciousness_or_a_component_given_as_a_string_is_not_a_measurement():
    acvpu = variant(HEART_RATE, code=ACVPU_CODE, valueQuantity=None, valueString="A")
    assert problem(fhir_valid(acvpu)).rule == fhir.RULE_NOT_A_MEASUREMENT
    bp = copy.deepcopy(BLOOD_PRESSURE)
    bp["component"][1] = {"code": bp["component"][1]["code"], "valueString": "60"}
    assert problem(fhir_valid(bp)).rule == fhir.RULE_NOT_A_MEASUREMENT


def test_two_values_at_once_are_malformed():
    both = variant(HEART_RATE, valueString="44")
    assert problem(both).rule == fhir.RULE_MALFORMED


@pytest.mark.parametrize(
    "subject",
    [
        {"reference": "Group/ward-7"},
        {"reference": "Device/monitor-12"},
        {"reference": "Location/bed-4"},
        {"reference": "http://ehr.example/fhir/Group/ward-7/_history/2"},
        {"identifier": {"system": "urn:trust:wards", "value": "ward-7"}, "type": "Group"},
        {"identifier": {"system": "urn:trust:devices", "value": "monitor-12"}, "type": "Device"},
        {"reference": "Patient/P000001", "type": "Group"},  # contradicts itself: not surely a patient
        {"reference": "urn:uuid:9d1e0b1e-4d1c-4a77-9a0b-7ce3c1f2a1d0", "type": "Location"},
    ],
)
def test_a_subject_that_is_not_a_patient(subject):
    p = problem(fhir_valid(variant(HEART_RATE, subject=subject)))
    assert p.rule == fhir.RULE_SUBJECT_NOT_PATIENT and "not a Patient" in p.detail


@pytest.mark.parametrize(
    "subject",
    [
        {
            "identifier": {"system": "urn:oid:2.16.840.1.113883.2.1.4.1", "value": "P000001"},
            "type": "Patient",
        },
        {"reference": "Patient/P000001", "type": "Patient"},
        {"reference": "urn:uuid:9d1e0b1e", "identifier": {"value": "P000001"}},  # unresolvable: identifier
    ],
)
def test_a_subject_typed_patient_is_a_patient(subject):
    assert reading(fhir_valid(variant(HEART_RATE, subject=subject)))[c.PATIENT_ID] == "P000001"


URLS = [f"urn:uuid:7f0c2c4e-0000-4000-8000-00000000000{i}" for i in range(5)]


def bundle_with_urls(*resources: dict[str, Any]) -> dict[str, Any]:
    return variant(BUNDLE, entry=[entry(r, URLS[i]) for i, r in enumerate(resources)])


def five_entries(bad: dict[str, Any]) -> dict[str, Any]:
    """BUNDLE with fullUrls whose temperature entry is replaced by ``bad``."""
    resources = [copy.deepcopy(e["resource"]) for e in BUNDLE["entry"]]
    resources[2] = bad
    return bundle_with_urls(*resources)


@pytest.mark.parametrize(
    ("bad", "rule"),
    [
        (
            variant(BODY_TEMPERATURE, valueQuantity={"value": 310.1, "system": UCUM, "code": "K"}),
            fhir.RULE_BAD_UNIT,
        ),
        (
            variant(
                BODY_TEMPERATURE,
                valueQuantity={"value": 35, "comparator": "<", "system": UCUM, "code": "Cel"},
            ),
            fhir.RULE_COMPARATOR,
        ),
        (
            variant(BODY_TEMPERATURE, code={"coding": [{"system": LOINC, "code": "2339-0"}]}),
            fhir.RULE_UNKNOWN_CODE,
        ),
        (variant(BODY_TEMPERATURE, status="entered-in-error"), fhir.RULE_STATUS),
        (variant(BODY_TEMPERATURE, valueQuantity=None, valueString="warm"), fhir.RULE_NOT_A_MEASUREMENT),
        (variant(BODY_TEMPERATURE, valueQuantity=None), fhir.RULE_MISSING_VALUE),
        (variant(BODY_TEMPERATURE, subject={"reference": "Group/ward-7"}), fhir.RULE_SUBJECT_NOT_PATIENT),
        (variant(BODY_TEMPERATURE, effectiveDateTime=None), fhir.RULE_MISSING_EFFECTIVE),
        # Another patient's or another instant's Observation that is rejected anyway does not mix.
        (
            variant(
                BODY_TEMPERATURE, subject={"reference": "Patient/P2"}, valueQuantity={"value": 1, "code": "K"}
            ),
            fhir.RULE_BAD_UNIT,
        ),
    ],
)
def test_a_bundle_keeps_its_valid_entries_when_one_is_rejected(bad, rule):
    bundle = fhir_valid(five_entries(bad))
    out = one(bundle)
    doc = outcome_reading(out)
    assert (doc[c.PATIENT_ID], doc[c.HEART_RATE], doc[c.SYSTOLIC], doc[c.DIASTOLIC]) == (
        "P000001",
        44,
        107,
        60,
    )
    assert (doc[c.SPO2], doc[c.RESPIRATION_RATE]) == (95, 26)
    assert c.TEMPERATURE not in doc
    [p] = out.problems
    assert (p.rule, p.part) == (rule, URLS[2]) and p.detail
    # The reading is the valid entries': the same as that of a bundle that never held the bad one.
    assert doc == reading(variant(bundle, entry=[e for i, e in enumerate(bundle["entry"]) if i != 2]))


def test_a_rejected_entry_without_full_url_is_named_by_its_position():
    bad = variant(SPO2, valueQuantity={"value": 0.95, "system": UCUM, "code": "1"})
    out = one(
        fhir_valid(
            variant(
                BUNDLE,
                entry=[entry(HEART_RATE), entry(bad), {"request": {"method": "POST", "url": "Observation"}}],
            )
        )
    )
    assert outcome_reading(out)[c.HEART_RATE] == 44
    assert [(p.rule, p.part) for p in out.problems] == [
        (fhir.RULE_BAD_UNIT, "entry[1]"),
        (fhir.RULE_MALFORMED, "entry[2]"),  # an entry without a resource
    ]


def test_a_bundle_whose_every_entry_is_rejected_is_one_whole_record_problem():
    bundle = bundle_with_urls(
        variant(HEART_RATE, status="cancelled"),
        variant(SPO2, valueQuantity={"value": 0.95, "system": UCUM, "code": "1"}),
    )
    p = problem(fhir_valid(bundle))
    assert p.rule == fhir.RULE_STATUS  # the first entry's rule
    assert "2 of 2 entries rejected" in p.detail and URLS[0] in p.detail


def test_a_bundle_left_with_nothing_measured_takes_the_rejected_entry_rule():
    weight = contained_member("weight", "29463-7", 81.2, "kg") | {
        "subject": {"reference": "Patient/P000001"},
        "effectiveDateTime": WHEN,
    }
    bundle = bundle_with_urls(weight, variant(HEART_RATE, valueQuantity={"value": 40, "comparator": "<"}))
    p = problem(fhir_valid(bundle))
    assert p.rule == fhir.RULE_COMPARATOR and "1 of 2 entries rejected" in p.detail


def test_valid_entries_of_two_patients_stay_a_whole_record_problem():
    bundle = bundle_with_urls(
        HEART_RATE,
        variant(SPO2, subject={"reference": "Patient/P2"}),
        variant(RESPIRATORY_RATE, status="cancelled"),
    )
    p = problem(fhir_valid(bundle))
    assert p.rule == fhir.RULE_MIXED_BUNDLE and "1 of 3 entries rejected" in p.detail


def chain_of_contained_members(n: int) -> dict[str, Any]:
    members = [
        variant(
            contained_member(f"m{i}", "85353-1", 0, "/min"),
            valueQuantity=None,
            hasMember=[{"reference": f"#m{i + 1}"}],
        )
        for i in range(n)
    ]
    members.append(contained_member(f"m{n}", "8867-4", 80, "/min"))
    return variant(VITALS_PANEL_MEMBERS, contained=members, hasMember=[{"reference": "#m0"}])


def test_a_long_chain_of_contained_members_is_walked_without_recursion():
    assert reading(chain_of_contained_members(5000))[c.HEART_RATE] == 80


NASTY: list[Any] = [
    None,
    7,
    b"",
    b"\xff\xfe\x00{",
    '{"resourceType": "Observation", "id": "\\ud800"}',  # a lone surrogate escape
    bytearray(orjson.dumps(HEART_RATE)),
    memoryview(orjson.dumps(HEART_RATE)),
    orjson.dumps(HEART_RATE).decode(),
    b'{"resourceType": "Observation", "valueQuantity": {"value": NaN}}',
    orjson.dumps(HEART_RATE).replace(b'"value":44', b'"value":1e400'),
    orjson.dumps(HEART_RATE).replace(b'"value":44', b'"value":18446744073709551615'),
    orjson.dumps(HEART_RATE).replace(b'"value":44', b'"value":-1e-400'),
    orjson.dumps(HEART_RATE).replace(b'"value":44', b'"value":"NaN"'),
    orjson.dumps(HEART_RATE).replace(b'"value":44', b'"value":' + b"[" * 1000 + b"]" * 1000),
    orjson.dumps(HEART_RATE).replace(b'"value":44', b'"value":' + b"[" * 3000 + b"]" * 3000),
    orjson.dumps(variant(HEART_RATE, extension=[{"extension": [{"url": "x"}] * 3}] * 3)),
    orjson.dumps(variant(BUNDLE, entry="all of them")),
    orjson.dumps(
        variant(BUNDLE, entry=[None, 1, [], "x", {"resource": []}, {"resource": {"resourceType": 1}}])
    ),
    orjson.dumps(variant(BUNDLE, meta="x")),
    orjson.dumps(variant(HEART_RATE, meta={"source": 5})),
    orjson.dumps(variant(HEART_RATE, meta={"versionId": [1]}, status="amended")),
    orjson.dumps(variant(HEART_RATE, identifier=[{"value": {"deep": [1]}}])),
    orjson.dumps(variant(HEART_RATE, subject={"reference": "Patient/1", "type": ["Group"]})),
    orjson.dumps(variant(HEART_RATE, subject={"reference": ["Patient/1"]})),
    orjson.dumps(variant(HEART_RATE, effectiveDateTime="9999-12-31T23:59:59-23:59")),
    orjson.dumps(
        variant(
            BUNDLE,
            entry=[entry(HEART_RATE), entry(variant(HEART_RATE, effectiveDateTime="0001-01-01T00:00+23:59"))],
        )
    ),
    orjson.dumps(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "8867-4"}] * 3},
        }
    ),
    orjson.dumps(chain_of_contained_members(3000)),
]


def test_an_unexpected_error_costs_only_its_own_record(monkeypatch):
    real = fhir._normalise_doc

    def flaky(doc):
        if doc.get("id") == "boom":
            raise KeyError("a bug")
        return real(doc)

    monkeypatch.setattr(fhir, "_normalise_doc", flaky)
    outs = normalise_fhir([orjson.dumps(variant(HEART_RATE, id="boom")), orjson.dumps(HEART_RATE)])
    assert outs[0] == FhirOutcome(None, (FhirProblem(fhir.RULE_MALFORMED, "KeyError: 'a bug'"),))
    assert outcome_reading(outs[1])[c.HEART_RATE] == 44


def test_nasty_records_each_get_an_outcome_and_never_raise():
    outs = normalise_fhir(NASTY)
    assert len(outs) == len(NASTY)
    for out in outs:
        check_outcome(out)
    assert outs[0].problems[0].rule == fhir.RULE_MALFORMED  # None is not bytes
    assert [outcome_reading(o)[c.HEART_RATE] for o in outs[5:8]] == [44, 44, 44]  # any bytes-like works
    assert outcome_reading(outs[10])[c.HEART_RATE] == 2**64 - 1  # huge but a number: the gate judges it
    deep = outs[NASTY.index(NASTY[13])]
    assert deep.problems[0].rule == fhir.RULE_MALFORMED and "deeper" in deep.problems[0].detail


# --- looks_like_fhir -----------------------------------------------------------------------------


def test_looks_like_fhir_mask():
    plain = orjson.dumps({c.PATIENT_ID: "P1", c.TIMESTAMP: WHEN, c.HEART_RATE: 72})
    pretty = orjson.dumps(HEART_RATE, option=orjson.OPT_INDENT_2)
    raw = pa.array(
        [
            plain,
            orjson.dumps(HEART_RATE),
            pretty,  # FHIR JSON is often pretty-printed: line breaks do not hide it
            None,
            b"\xff\xfe garbage",
            b'[{"resourceType": "Observation"}]',  # not one object
            orjson.dumps({c.PATIENT_ID: "resourceType"}),  # the word as a value, not a key
            b'{"resourceType": "Observation", ',
        ],
        pa.binary(),
    )
    mask = looks_like_fhir(raw)
    assert mask.dtype == np.bool_
    assert mask.tolist() == [False, True, True, False, False, False, False, False]
    assert looks_like_fhir(pa.chunked_array([raw.slice(0, 2), raw.slice(2)])).tolist() == mask.tolist()
    assert looks_like_fhir(pa.array([], pa.binary())).shape == (0,)


# --- Never raises ----------------------------------------------------------------------------------

FHIR_KEYS = [
    "resourceType",
    "status",
    "code",
    "coding",
    "system",
    "subject",
    "reference",
    "identifier",
    "value",
    "effectiveDateTime",
    "effectivePeriod",
    "start",
    "valueQuantity",
    "valueCodeableConcept",
    "component",
    "hasMember",
    "contained",
    "entry",
    "resource",
    "fullUrl",
    "type",
    "device",
    "id",
    "dataAbsentReason",
]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["Observation", "Bundle", "final", "collection", "8867-4", LOINC, "/min", "Patient/1"])
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FHIR_KEYS) | st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=25,
)


def check_output(out: FhirOutcome) -> None:
    check_outcome(out)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += paths(value, (*prefix, i))
    return out


EXAMPLES = [HEART_RATE, SPO2, BLOOD_PRESSURE, VITALS_PANEL_COMPONENTS, VITALS_PANEL_MEMBERS, BUNDLE]
# The properties over these (hundreds of examples, seconds each) are in
# tests/property/test_fhir_never_raises.py.

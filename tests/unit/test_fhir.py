"""FHIR R4 input: every shape becomes exactly one plain reading or one named problem."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import bronze
from vitals_lake import contract as c
from vitals_lake import fhir
from vitals_lake.fhir import FhirProblem, looks_like_fhir, normalise_fhir
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


def one(resource: dict[str, Any] | bytes) -> bytes | FhirProblem:
    record = resource if isinstance(resource, bytes) else orjson.dumps(resource)
    [out] = normalise_fhir([record])
    return out


def reading(resource: dict[str, Any]) -> dict[str, Any]:
    out = one(resource)
    assert isinstance(out, bytes), out
    doc = orjson.loads(out)
    assert isinstance(doc, dict) and set(doc) <= CONTRACT_FIELDS
    return doc


def problem(resource: dict[str, Any] | bytes) -> FhirProblem:
    out = one(resource)
    assert isinstance(out, FhirProblem), orjson.loads(out)
    assert out.rule in fhir.FHIR_RULES and out.detail
    return out


# --- Accepted shapes -------------------------------------------------------------------------------


def test_single_heart_rate_observation():
    assert reading(HEART_RATE) == {
        c.EVENT_ID: "heart-rate",  # no identifier: the resource id
        c.PATIENT_ID: "P000001",
        c.TIMESTAMP: WHEN,  # passed through unchanged: the Silver gate validates it
        c.HEART_RATE: 44,
    }


def test_identifier_wins_over_id_and_a_device_metric_is_not_a_device():
    doc = reading(SPO2)
    assert doc[c.EVENT_ID] == "o1223435-10"
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
    assert doc[c.EVENT_ID] == "urn:uuid:187e0c12-8dd2-67e2-99b2-bf273c878281"
    assert doc[c.DEVICE_ID] == "cuff-3"
    assert c.BLOOD_PRESSURE not in doc


def test_vital_signs_panel_with_components():
    assert reading(VITALS_PANEL_COMPONENTS) == {
        c.EVENT_ID: "vitals-panel-c",
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
        c.EVENT_ID: "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0",  # the Bundle's identifier
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


def test_bundle_without_identifier_uses_its_id_and_several_devices_name_none():
    bundle = variant(BUNDLE, identifier=None)
    bundle["entry"][0]["resource"]["device"] = {"reference": "Device/other"}
    doc = reading(bundle)
    assert doc[c.EVENT_ID] == "bundle-vitals"
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
    assert (rows[0][c.SYSTOLIC], rows[0][c.HEART_RATE], rows[0][c.EVENT_ID]) == (
        107,
        44,
        "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0",
    )


def test_one_output_per_record_in_order():
    records = [orjson.dumps(HEART_RATE), b"{not json", orjson.dumps(BLOOD_PRESSURE)]
    out = normalise_fhir(records)
    assert len(out) == 3
    assert isinstance(out[0], bytes) and orjson.loads(out[0])[c.HEART_RATE] == 44
    assert isinstance(out[1], FhirProblem) and out[1].rule == fhir.RULE_MALFORMED
    assert isinstance(out[2], bytes) and orjson.loads(out[2])[c.SYSTOLIC] == 107


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
        variant(BUNDLE, entry=[entry(HEART_RATE), entry({"resourceType": "Condition", "id": "x"})]),
        variant(BUNDLE, entry=[entry({"resourceType": "MessageHeader", "id": "h"})]),
    ],
)
def test_not_observation(resource):
    assert problem(resource).rule == fhir.RULE_NOT_OBSERVATION


def test_bundle_type():
    p = problem(variant(BUNDLE, type="searchset"))
    assert p.rule == fhir.RULE_BUNDLE_TYPE and "searchset" in p.detail


@pytest.mark.parametrize(
    "resource",
    [
        variant(HEART_RATE, status="entered-in-error"),
        variant(HEART_RATE, status="cancelled"),
        variant(HEART_RATE, status=None),
        variant(BUNDLE, entry=[entry(HEART_RATE), entry(variant(SPO2, status="registered"))]),
    ],
)
def test_status(resource):
    assert problem(resource).rule == fhir.RULE_STATUS


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
        variant(HEART_RATE, subject={"reference": "Group/ward-7"}),
        variant(HEART_RATE, subject={"reference": "urn:uuid:9d1e0b1e-4d1c-4a77-9a0b-7ce3c1f2a1d0"}),
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
    }
    assert len(set(fhir.FHIR_RULES)) == len(fhir.FHIR_RULES)


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


def check_output(out: bytes | FhirProblem) -> None:
    if isinstance(out, FhirProblem):
        assert out.rule in fhir.FHIR_RULES
    else:
        doc = orjson.loads(out)
        assert set(doc) <= CONTRACT_FIELDS and doc[c.PATIENT_ID] and doc[c.TIMESTAMP]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FHIR_KEYS) | st.text(max_size=5), JSON, max_size=8), JSON)
def test_arbitrary_objects_with_resource_type_never_raise(doc, resource_type):
    doc["resourceType"] = resource_type
    record = orjson.dumps(doc)
    assert looks_like_fhir(pa.array([record], pa.binary())).tolist() == [True]
    [out] = normalise_fhir([record])
    check_output(out)


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

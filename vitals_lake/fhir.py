"""FHIR R4 input: turn one vital-signs ``Observation`` (or a ``Bundle`` of them) into one plain reading.

A record is one reading, whatever shape it arrives in, so every record still ends in Silver or
quarantine one-to-one. Accepted shapes:

* a single vital Observation: heart rate 8867-4, respiratory rate 9279-1, SpO2 2708-6 / 59408-5,
  body temperature 8310-5 (``Cel`` or ``[degF]``, passed through; the Silver gate converts), systolic
  8480-6, diastolic 8462-4;
* a blood-pressure panel 85354-9 whose ``component``s carry systolic and diastolic;
* a vital-signs panel 85353-1 whose ``component``s, or ``hasMember`` references to ``contained``
  Observations (``"#id"``), carry the vitals;
* a ``Bundle`` (collection / transaction / batch / message) whose entries are such Observations, all
  for one patient and one effective time; ``hasMember`` may point at other entries of the bundle;
* optional NEWS2 inputs: ACVPU as SNOMED 1104441000000107 with a SNOMED finding (alert 248234008,
  voice 300202002, pain 450847001, unresponsive 422768004) or any coding whose code is the ACVPU
  letter itself (covers "new confusion", which has no international SNOMED finding); supplemental
  oxygen from inhaled-oxygen flow 3151-8 (``L/min``, > 0 is on oxygen) or concentration 3150-0
  (``%``, > 21 is on oxygen) -- as components of a pulse-oximetry Observation or on their own -- or
  from SNOMED 371825009 "patient on oxygen" / 722742002 "breathing room air" as the code or the
  coded value.

Codes of the vital-signs profile the lake does not carry (height, weight, BMI, head circumference,
mean blood pressure) are skipped inside a panel or bundle; a record holding nothing else is a problem.
Anything else that does not fit is a named problem (``FhirProblem``), never a guess: wrong units are
not converted, unknown codes are not dropped silently.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, cast

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c

# --- Problem rules (quarantine rule names) -------------------------------------------------------
RULE_MALFORMED: Final = "fhir_malformed"  # not JSON, not an object, or an element of the wrong JSON type
RULE_NOT_OBSERVATION: Final = "fhir_not_observation"  # another resource type, or a bundle without any
RULE_BUNDLE_TYPE: Final = "fhir_bundle_type"  # searchset, history, document ... are not one reading
RULE_STATUS: Final = "fhir_status"  # not final / amended / corrected / preliminary
RULE_UNKNOWN_CODE: Final = "fhir_unknown_code"  # no (or an ambiguous) code this lake carries
RULE_BAD_UNIT: Final = "fhir_bad_unit"  # not the contract's UCUM unit
RULE_BAD_VALUE: Final = "fhir_bad_value"  # a value the gate cannot check later (oxygen flow < 0 ...)
RULE_MISSING_SUBJECT: Final = "fhir_missing_subject"
RULE_MISSING_EFFECTIVE: Final = "fhir_missing_effective"
RULE_MISSING_VALUE: Final = "fhir_missing_value"
RULE_MIXED_BUNDLE: Final = "fhir_mixed_bundle"  # several patients or effective times in one record
RULE_DUPLICATE_VITAL: Final = "fhir_duplicate_vital"  # the same vital twice with different values
RULE_UNRESOLVED_MEMBER: Final = "fhir_unresolved_member"  # hasMember points outside the record
FHIR_RULES: Final = (
    RULE_MALFORMED,
    RULE_NOT_OBSERVATION,
    RULE_BUNDLE_TYPE,
    RULE_STATUS,
    RULE_UNKNOWN_CODE,
    RULE_BAD_UNIT,
    RULE_BAD_VALUE,
    RULE_MISSING_SUBJECT,
    RULE_MISSING_EFFECTIVE,
    RULE_MISSING_VALUE,
    RULE_MIXED_BUNDLE,
    RULE_DUPLICATE_VITAL,
    RULE_UNRESOLVED_MEMBER,
)


@dataclass(frozen=True)
class FhirProblem:
    """Why a FHIR record could not become a reading: a rule name from ``FHIR_RULES`` and a short detail."""

    rule: str
    detail: str


# --- Terminology ---------------------------------------------------------------------------------
LOINC: Final = "http://loinc.org"
SNOMED: Final = "http://snomed.info/sct"
UCUM: Final = "http://unitsofmeasure.org"
ACCEPTED_STATUS: Final = frozenset({"final", "amended", "corrected", "preliminary"})
ACCEPTED_BUNDLE_TYPES: Final = frozenset({"collection", "transaction", "batch", "message"})
# Resources that may travel alongside the Observations of a bundle without being a reading themselves.
CONTEXT_RESOURCES: Final = frozenset(
    {"MessageHeader", "Patient", "Device", "DeviceMetric", "Encounter", "Provenance"}
)
LOINC_INHALED_O2_FLOW: Final = "3151-8"
LOINC_INHALED_O2_CONCENTRATION: Final = "3150-0"
SNOMED_ACVPU: Final = "1104441000000107"
SNOMED_ON_OXYGEN: Final = "371825009"
SNOMED_ROOM_AIR: Final = "722742002"
ROOM_AIR_O2_PERCENT: Final = 21.0
FAHRENHEIT: Final = "[degF]"

# What a coded element means. Vitals use the contract's field names; the rest are internal kinds.
_PANEL: Final = "<panel>"
_NOT_CARRIED: Final = "<not carried>"
_O2_FLOW: Final = "<o2 flow>"
_O2_CONCENTRATION: Final = "<o2 concentration>"
_O2_ON: Final = "<on oxygen>"
_O2_OFF: Final = "<room air>"

_CODES: Final[dict[tuple[str, str], str]] = {
    **{(LOINC, v.loinc): v.name for v in c.VITAL_SIGNS},
    (LOINC, c.LOINC_SPO2_PULSE_OXIMETRY): c.SPO2,
    (LOINC, c.LOINC_VITAL_SIGNS_PANEL): _PANEL,
    (LOINC, c.LOINC_BLOOD_PRESSURE_PANEL): _PANEL,
    (LOINC, LOINC_INHALED_O2_FLOW): _O2_FLOW,
    (LOINC, LOINC_INHALED_O2_CONCENTRATION): _O2_CONCENTRATION,
    # Vital-signs profile codes with no column in the lake: height, head circumference, weight, BMI,
    # mean blood pressure (Silver derives its own).
    **{(LOINC, code): _NOT_CARRIED for code in ("8302-2", "9843-4", "29463-7", "39156-5", "8478-0")},
    (SNOMED, SNOMED_ACVPU): c.CONSCIOUSNESS,
    (SNOMED, SNOMED_ON_OXYGEN): _O2_ON,
    (SNOMED, SNOMED_ROOM_AIR): _O2_OFF,
}
_UNITS: Final[dict[str, tuple[str, ...]]] = {
    **{v.name: (v.unit,) for v in c.VITAL_SIGNS},
    c.TEMPERATURE: (c.VITALS_BY_NAME[c.TEMPERATURE].unit, FAHRENHEIT),
    _O2_FLOW: ("L/min",),
    _O2_CONCENTRATION: ("%",),
}
_ACVPU_FINDINGS: Final = {"248234008": "A", "300202002": "V", "450847001": "P", "422768004": "U"}
_ACVPU_LETTERS: Final = frozenset("ACVPU")

# A JSON object with a "resourceType" key; (?s) because FHIR JSON is often pretty-printed.
_FHIR_RE: Final = r'(?s)^\s*\{.*"resourceType"\s*:.*\}\s*$'
_UCUM_ANNOTATION: Final = re.compile(r"\{[^{}]*\}")


def looks_like_fhir(raw: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Bool mask of the records (binary or string) that are JSON-object-shaped and carry ``resourceType``."""
    if isinstance(raw, pa.ChunkedArray):
        raw = raw.combine_chunks()
    if len(raw) == 0:
        return np.zeros(0, dtype=bool)
    mask = pc.fill_null(pc.match_substring_regex(raw, _FHIR_RE), False)
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def normalise_fhir(records: Sequence[bytes]) -> list[bytes | FhirProblem]:
    """One plain reading (the contract's JSON) or one ``FhirProblem`` per record, in order."""
    return [_normalise_one(record) for record in records]


class _Reject(Exception):
    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(rule, detail)
        self.problem = FhirProblem(rule, detail)


def _normalise_one(record: bytes) -> bytes | FhirProblem:
    if not isinstance(record, bytes | bytearray | memoryview | str):
        return FhirProblem(RULE_MALFORMED, f"record is {type(record).__name__}, not bytes")
    try:
        doc = orjson.loads(record)
    except orjson.JSONDecodeError as exc:
        return FhirProblem(RULE_MALFORMED, str(exc)[:200])
    try:
        return _normalise_doc(doc)
    except _Reject as reject:
        return reject.problem


def _normalise_doc(doc: Any) -> bytes:
    if not isinstance(doc, dict):
        raise _Reject(RULE_MALFORMED, "record is not one JSON object")
    kind = doc.get("resourceType")
    if kind == "Observation":
        observations, entry_refs = [doc], frozenset[str]()
        event_id = _observation_event_id(doc)
    elif kind == "Bundle":
        observations, entry_refs = _bundle_observations(doc)
        event_id = _bundle_event_id(doc)
    elif isinstance(kind, str):
        raise _Reject(RULE_NOT_OBSERVATION, f"resourceType={_short(kind)}")
    else:
        raise _Reject(RULE_MALFORMED, "resourceType is missing or not a string")
    reading = _Reading()
    for obs in observations:
        _take_observation(obs, reading, entry_refs, contained=_contained(obs), top_level=True, seen=set())
    return reading.to_json(event_id)


# --- Bundles -------------------------------------------------------------------------------------


def _bundle_observations(bundle: dict[str, Any]) -> tuple[list[dict[str, Any]], frozenset[str]]:
    """The bundle's Observations and the references that resolve to them (fullUrl, Observation/<id>)."""
    bundle_type = bundle.get("type")
    if not _one_of(bundle_type, ACCEPTED_BUNDLE_TYPES):
        raise _Reject(RULE_BUNDLE_TYPE, f"Bundle.type={_short(bundle_type)}")
    observations: list[dict[str, Any]] = []
    refs: set[str] = set()
    for i, entry in enumerate(_objects(bundle, "entry", "Bundle")):
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            raise _Reject(RULE_MALFORMED, f"entry[{i}] has no resource")
        kind = resource.get("resourceType")
        if kind == "Observation":
            observations.append(resource)
            full_url = entry.get("fullUrl")
            if isinstance(full_url, str):
                refs.add(full_url)
            if isinstance(resource.get("id"), str):
                refs.add(f"Observation/{resource['id']}")
        elif not _one_of(kind, CONTEXT_RESOURCES):
            raise _Reject(RULE_NOT_OBSERVATION, f"entry[{i}].resourceType={_short(kind)}")
    if not observations:
        raise _Reject(RULE_NOT_OBSERVATION, "bundle holds no Observation")
    return observations, frozenset(refs)


def _bundle_event_id(bundle: dict[str, Any]) -> str | None:
    # Bundle.identifier is a single Identifier in R4; a list is a common sender mistake, accepted.
    identifier = bundle.get("identifier")
    if isinstance(identifier, list):
        identifier = identifier[0] if identifier else None
    if isinstance(identifier, dict) and isinstance(identifier.get("value"), str) and identifier["value"]:
        return str(identifier["value"])
    return _string_or_none(bundle.get("id"), "Bundle.id")


def _observation_event_id(obs: dict[str, Any]) -> str | None:
    for identifier in _objects(obs, "identifier", "Observation"):
        value = identifier.get("value")
        if isinstance(value, str) and value:
            return value
    return _string_or_none(obs.get("id"), "Observation.id")


# --- One Observation -----------------------------------------------------------------------------


@dataclass
class _Reading:
    """What the observations of one record say, merged; disagreements are problems."""

    patient: str | None = None
    timestamp: str | None = None
    timestamp_key: object = None
    devices: list[str] = field(default_factory=list)
    values: dict[str, object] = field(default_factory=dict)  # field name -> value (temperature: (v, unit))
    absent: list[str] = field(default_factory=list)  # elements sent with a dataAbsentReason
    not_carried: list[str] = field(default_factory=list)

    def set_patient(self, patient: str) -> None:
        if self.patient is None:
            self.patient = patient
        elif patient != self.patient:
            raise _Reject(RULE_MIXED_BUNDLE, f"patients {_short(self.patient)} and {_short(patient)}")

    def set_timestamp(self, timestamp: str) -> None:
        key = _instant_key(timestamp)
        if self.timestamp is None:
            self.timestamp, self.timestamp_key = timestamp, key
        elif key != self.timestamp_key:
            raise _Reject(RULE_MIXED_BUNDLE, f"effective {_short(self.timestamp)} and {_short(timestamp)}")

    def put(self, name: str, value: object) -> None:
        if name in self.values and self.values[name] != value:
            raise _Reject(RULE_DUPLICATE_VITAL, f"{name}: {_short(self.values[name])} and {_short(value)}")
        self.values.setdefault(name, value)

    def to_json(self, event_id: str | None) -> bytes:
        if not self.values:
            if self.not_carried:
                raise _Reject(RULE_UNKNOWN_CODE, f"no vital this lake carries: {', '.join(self.not_carried)}")
            why = f" (dataAbsentReason on {', '.join(self.absent)})" if self.absent else ""
            raise _Reject(RULE_MISSING_VALUE, f"no measured value in the record{why}")
        assert self.patient is not None and self.timestamp is not None  # every top-level obs set them
        out: dict[str, object] = {}
        if event_id:
            out[c.EVENT_ID] = event_id
        out[c.PATIENT_ID] = self.patient
        # Two devices (a BP cuff and an oximeter) measured one reading: naming either would be wrong.
        if len(set(self.devices)) == 1:
            out[c.DEVICE_ID] = self.devices[0]
        out[c.TIMESTAMP] = self.timestamp
        for name in c.VITAL_NAMES:
            if name not in self.values:
                continue
            if name == c.TEMPERATURE:
                value, unit = cast(tuple[float, str], self.values[name])
                out[c.TEMPERATURE] = value
                out[c.TEMPERATURE_UNIT] = unit
            else:
                out[name] = self.values[name]
        for name in (c.CONSCIOUSNESS, c.SUPPLEMENTAL_OXYGEN):
            if name in self.values:
                out[name] = self.values[name]
        return orjson.dumps(out)


def _take_observation(
    obs: dict[str, Any],
    reading: _Reading,
    entry_refs: frozenset[str],
    *,
    contained: dict[str, dict[str, Any]],
    top_level: bool,
    seen: set[str],
) -> None:
    """Merge one Observation (and its components and contained members) into ``reading``.

    Top-level Observations must carry status, subject and effective time; contained members may
    omit them (they inherit the panel's) but must agree when they do carry them.
    """
    where = "Observation" if top_level else f"contained Observation {_short(obs.get('id'))}"
    if obs.get("resourceType") != "Observation":
        raise _Reject(RULE_NOT_OBSERVATION, f"{where}: resourceType={_short(obs.get('resourceType'))}")
    status = obs.get("status")
    if (top_level or status is not None) and not _one_of(status, ACCEPTED_STATUS):
        raise _Reject(RULE_STATUS, f"{where}: status={_short(status)}")

    patient = _patient(obs.get("subject"), where)
    if patient is not None:
        reading.set_patient(patient)
    elif top_level:
        raise _Reject(RULE_MISSING_SUBJECT, f"{where} has no subject")
    timestamp = _effective(obs, where)
    if timestamp is not None:
        reading.set_timestamp(timestamp)
    elif top_level:
        raise _Reject(RULE_MISSING_EFFECTIVE, f"{where} has no effective time")
    device = _reference_id(obs.get("device"), "Device", f"{where}.device")
    if device is not None:
        reading.devices.append(device)

    kind = _kind(obs, where)
    if kind == _NOT_CARRIED:
        reading.not_carried.append(_codes_text(obs.get("code")))
        return  # a weight or height: its components and members are not vitals either
    if kind != _PANEL:
        _take_value(obs, kind, reading, where)
    for i, component in enumerate(_objects(obs, "component", where)):
        comp_where = f"{where}.component[{i}]"
        comp_kind = _kind(component, comp_where)
        if comp_kind == _PANEL:
            raise _Reject(RULE_UNKNOWN_CODE, f"{comp_where}: a panel code inside a component")
        if comp_kind == _NOT_CARRIED:
            reading.not_carried.append(_codes_text(component.get("code")))
            continue
        _take_value(component, comp_kind, reading, comp_where)
    for i, member in enumerate(_objects(obs, "hasMember", where)):
        ref = member.get("reference")
        if not isinstance(ref, str):
            raise _Reject(RULE_UNRESOLVED_MEMBER, f"{where}.hasMember[{i}] has no reference")
        if ref in contained:
            if ref in seen:
                continue  # a member listed twice (or a cycle) counts once
            seen.add(ref)
            _take_observation(
                contained[ref], reading, entry_refs, contained=contained, top_level=False, seen=seen
            )
        elif not _in_bundle(ref, entry_refs):
            # The member lives elsewhere: the reading would silently lack what it measured.
            raise _Reject(RULE_UNRESOLVED_MEMBER, f"{where}.hasMember[{i}]={_short(ref)}")
        # else: the member is another entry of the same bundle and is merged as that entry.


def _in_bundle(ref: str, entry_refs: frozenset[str]) -> bool:
    """Whether a member reference names another entry: its fullUrl, or Observation/<id> in any form."""
    if ref in entry_refs:
        return True
    match = _REFERENCE_RE.search(ref)
    return match is not None and match["type"] == "Observation" and f"Observation/{match['id']}" in entry_refs


def _contained(obs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for resource in _objects(obs, "contained", "Observation"):
        if isinstance(resource.get("id"), str):
            out[f"#{resource['id']}"] = resource  # keyed as members reference them
    return out


def _kind(element: dict[str, Any], where: str) -> str:
    """What an Observation or component measures, from its code (or, for air/oxygen, its coded value)."""
    kinds = _coded_kinds(element.get("code"), f"{where}.code")
    if not kinds:
        # An "Air or Oxygen" observation is often coded by text only, with the finding as its value.
        value_kinds = _coded_kinds(element.get("valueCodeableConcept"), f"{where}.valueCodeableConcept")
        kinds = value_kinds & {_O2_ON, _O2_OFF}
    if len(kinds) != 1:
        what = "ambiguous" if kinds else "unknown"
        raise _Reject(RULE_UNKNOWN_CODE, f"{where}: {what} code {_codes_text(element.get('code'))}")
    return kinds.pop()


def _coded_kinds(concept: object, where: str) -> set[str]:
    if concept is None:
        return set()
    kinds: set[str] = set()
    for coding in _objects(_typed(concept, dict, where), "coding", where):
        system, code = coding.get("system"), coding.get("code")
        if isinstance(system, str) and isinstance(code, str) and (system, code) in _CODES:
            kinds.add(_CODES[system, code])
    return kinds


def _take_value(element: dict[str, Any], kind: str, reading: _Reading, where: str) -> None:
    if kind in (_O2_ON, _O2_OFF):
        reading.put(c.SUPPLEMENTAL_OXYGEN, kind == _O2_ON)
        return
    if element.get("dataAbsentReason") is not None:
        reading.absent.append(kind.strip("<>"))  # not measured, said so explicitly: not an error
        return
    if kind == c.CONSCIOUSNESS:
        reading.put(c.CONSCIOUSNESS, _acvpu(element, where))
        return
    quantity = element.get("valueQuantity")
    if quantity is None:
        raise _Reject(RULE_MISSING_VALUE, f"{where}: {kind.strip('<>')} has no valueQuantity")
    quantity = _typed(quantity, dict, f"{where}.valueQuantity")
    value = quantity.get("value")
    if value is None:
        raise _Reject(RULE_MISSING_VALUE, f"{where}: {kind.strip('<>')} has no valueQuantity.value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Reject(RULE_MALFORMED, f"{where}.valueQuantity.value={_short(value)} is not a number")
    unit = _unit(quantity, kind, where)
    if kind == _O2_FLOW:
        if value < 0:
            raise _Reject(RULE_BAD_VALUE, f"{where}: inhaled oxygen flow {value} L/min")
        reading.put(c.SUPPLEMENTAL_OXYGEN, value > 0)
    elif kind == _O2_CONCENTRATION:
        if not 0 <= value <= 100:
            raise _Reject(RULE_BAD_VALUE, f"{where}: inhaled oxygen concentration {value} %")
        reading.put(c.SUPPLEMENTAL_OXYGEN, value > ROOM_AIR_O2_PERCENT)
    elif kind == c.TEMPERATURE:
        reading.put(c.TEMPERATURE, (value, unit))  # °F passes through: the Silver gate converts
    else:
        reading.put(kind, value)


def _unit(quantity: dict[str, Any], kind: str, where: str) -> str:
    """The quantity's UCUM code, checked against the contract; ``unit`` counts only if it is that code."""
    system = quantity.get("system")
    code = quantity.get("code")
    if code is None:
        code = quantity.get("unit")  # the human-readable unit: accepted only when it is the UCUM code
    elif system is not None and system != UCUM:
        raise _Reject(RULE_BAD_UNIT, f"{where}: unit system {_short(system)} is not UCUM")
    expected = _UNITS[kind]
    # UCUM annotations ({beats}/min, %{HemoglobinSaturation}) do not change the unit.
    bare = _UCUM_ANNOTATION.sub("", code) if isinstance(code, str) else None
    if bare not in expected:
        name = kind.strip("<>")
        raise _Reject(RULE_BAD_UNIT, f"{where}: {name} in {_short(code)}, expected {' or '.join(expected)}")
    return str(bare)


def _acvpu(element: dict[str, Any], where: str) -> str:
    concept = element.get("valueCodeableConcept")
    if concept is None:
        raise _Reject(RULE_MISSING_VALUE, f"{where}: ACVPU has no valueCodeableConcept")
    concept = _typed(concept, dict, f"{where}.valueCodeableConcept")
    for coding in _objects(concept, "coding", f"{where}.valueCodeableConcept"):
        code = coding.get("code")
        if not isinstance(code, str):
            continue
        if coding.get("system") == SNOMED and code in _ACVPU_FINDINGS:
            return _ACVPU_FINDINGS[code]
        if code.upper() in _ACVPU_LETTERS:
            return code.upper()
    raise _Reject(RULE_UNKNOWN_CODE, f"{where}: ACVPU answer {_codes_text(concept)}")


# --- Small element readers -----------------------------------------------------------------------

_REFERENCE_RE: Final = re.compile(r"(?:^|/)(?P<type>[A-Za-z]+)/(?P<id>[^/]+)(?:/_history/[^/]+)?$")


def _reference_id(ref: object, resource_type: str, where: str) -> str | None:
    """``<type>/<id>`` (relative or absolute, with or without _history) or the identifier's value."""
    if ref is None:
        return None
    element: dict[str, Any] = _typed(ref, dict, where)
    text = element.get("reference")
    if isinstance(text, str):
        match = _REFERENCE_RE.search(text)
        return match["id"] if match and match["type"] == resource_type else None
    identifier = element.get("identifier")
    if isinstance(identifier, dict) and isinstance(identifier.get("value"), str) and identifier["value"]:
        return str(identifier["value"])
    return None


def _patient(subject: object, where: str) -> str | None:
    if subject is None:
        return None
    element: dict[str, Any] = _typed(subject, dict, f"{where}.subject")
    patient = _reference_id(element, "Patient", f"{where}.subject")
    if patient is None:
        ref = element.get("reference")
        raise _Reject(RULE_MISSING_SUBJECT, f"{where}.subject is not a Patient: {_short(ref)}")
    return patient


def _effective(obs: dict[str, Any], where: str) -> str | None:
    for key in ("effectiveDateTime", "effectiveInstant"):
        if obs.get(key) is not None:
            return _string_or_none(obs[key], f"{where}.{key}")
    period = obs.get("effectivePeriod")
    if period is not None:
        return _string_or_none(_typed(period, dict, f"{where}.effectivePeriod").get("start"), where)
    return None


def _instant_key(timestamp: str) -> object:
    """Two spellings of one instant (Z and +00:00) are one effective time; unparsable ones compare as text."""
    try:
        parsed = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    return parsed if parsed.tzinfo is not None else timestamp


def _one_of(value: object, allowed: frozenset[str]) -> bool:
    return isinstance(value, str) and value in allowed  # an unhashable JSON value is simply not one


def _objects(obj: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    """A repeating element of objects: absent is empty, anything but an array of objects is malformed."""
    value = obj.get(key)
    items = [] if value is None else _typed(value, list, f"{where}.{key}")
    return [_typed(item, dict, f"{where}.{key}[{i}]") for i, item in enumerate(items)]


def _typed(value: Any, expected: type, where: str) -> Any:
    if not isinstance(value, expected):
        raise _Reject(RULE_MALFORMED, f"{where} is {type(value).__name__}, expected {expected.__name__}")
    return value


def _string_or_none(value: object, where: str) -> str | None:
    if value is None or value == "":
        return None
    return str(_typed(value, str, where))


def _codes_text(concept: object) -> str:
    if not isinstance(concept, dict):
        return "(none)"
    codings = concept.get("coding")
    codes = [
        f"{d.get('system', '')}|{d.get('code', '')}"
        for d in (codings if isinstance(codings, list) else [])
        if isinstance(d, dict)
    ]
    if not codes and isinstance(concept.get("text"), str):
        codes = [repr(concept["text"])]
    return _truncate(", ".join(codes) or "(none)", 160)


def _short(value: object, limit: int = 80) -> str:
    """The offending value for a detail, quoted (``'Patient/1'`` vs ``None``) and truncated."""
    return _truncate(repr(value), limit)


def _truncate(text: str, limit: int) -> str:
    return text[:limit] + ("…" if len(text) > limit else "")

"""FHIR R4 input: turn vital-signs ``Observation``s (one, or a ``Bundle`` of them) into one plain reading.

A record is one reading of one patient at one instant, whatever shape it arrives in. ``normalise_fhir``
gives one ``FhirOutcome`` per record: either a reading (the contract's JSON) plus a problem for each
Bundle entry it had to leave out (``part`` = the entry's fullUrl, else ``entry[i]``), or no reading and
exactly one problem for the whole record (``part`` None). Accepted shapes:

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

Event ids are namespaced, never the bare ``Observation.id`` (unique only per server): ``fhir-`` + 32 hex
digits of SHA-256 over the identities of the Observations in the reading. An identity is the first
``identifier`` (system, value, patient; without a system also the source), else (source, patient, id)
with source = ``meta.source``, else the entry's absolute ``fullUrl``, else the Bundle's ``meta.source``;
an Observation with neither id nor identifier nor absolute fullUrl is identified by a digest of its
content. So a redelivery is still a duplicate, and equal ids of two patients or servers never collide.

Corrections: status ``amended`` / ``corrected`` adds the version (``meta.versionId``, else
``meta.lastUpdated``, else a content digest) to the identity, so the correction is a reading of its own,
and sets ``supersedes`` to the event id the original gets (the same identities without versions;
omitted when an identity is a content digest, as the original cannot be named then).

In a Bundle an entry that fails on its own (bad status, unit, code, value, subject, comparator ...) is
left out as a part problem and the other entries still make the reading. Whole-record problems: not one
JSON object (or nested deeper than ``MAX_DEPTH``), a bundle type that is not one reading, no Observation,
valid entries of several patients or instants, one vital with two values, nothing valid left (then the
first rejected entry's rule, with the count of rejected entries in the detail).

Codes of the vital-signs profile the lake does not carry (height, weight, BMI, head circumference,
mean blood pressure) are skipped inside a panel or bundle; a record holding nothing else is a problem.
Anything else that does not fit is a named problem (``FhirProblem``), never a guess: a bound
(``valueQuantity.comparator``, ``< 40``) is not stored as a number, a vital sent as a string, Range,
Ratio, SampledData or integer is not a measurement, a subject that is a Group, Device or Location is
not a patient, wrong units are not converted, unknown codes are not dropped silently.
``normalise_fhir`` never raises: an unexpected error costs its record (``fhir_malformed``), nothing more.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, cast

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c
from vitals_lake.byte_search import containing
from vitals_lake.masks import true_where

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
RULE_COMPARATOR: Final = "fhir_comparator"  # valueQuantity.comparator (< 40): a bound, not a measurement
RULE_NOT_A_MEASUREMENT: Final = "fhir_not_a_measurement"  # a vital as string, Range, Ratio, SampledData ...
RULE_SUBJECT_NOT_PATIENT: Final = "fhir_subject_not_patient"  # a Group, Device, Location ... as subject
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
    RULE_COMPARATOR,
    RULE_NOT_A_MEASUREMENT,
    RULE_SUBJECT_NOT_PATIENT,
)


@dataclass(frozen=True)
class FhirProblem:
    """Why a FHIR record, or one part of it, could not become (part of) a reading.

    ``rule`` is a name from ``FHIR_RULES``; ``part`` names the rejected Bundle entry (its fullUrl, else
    ``entry[i]``), or is None when the whole record is rejected.
    """

    rule: str
    detail: str
    part: str | None = None


@dataclass(frozen=True)
class FhirOutcome:
    """What became of one record.

    ``reading`` None: the whole record is quarantined, under the one problem in ``problems`` (part None).
    ``reading`` set: the contract's JSON of what was valid; ``problems`` are the entries left out (part set).
    """

    reading: bytes | None
    problems: tuple[FhirProblem, ...]


# --- Terminology ---------------------------------------------------------------------------------
LOINC: Final = "http://loinc.org"
SNOMED: Final = "http://snomed.info/sct"
UCUM: Final = "http://unitsofmeasure.org"
ACCEPTED_STATUS: Final = frozenset({"final", "amended", "corrected", "preliminary"})
CORRECTION_STATUS: Final = frozenset({"amended", "corrected"})  # a new version of a reading already sent
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
EVENT_ID_PREFIX: Final = "fhir-"
MAX_DEPTH: Final = 64  # FHIR vitals nest about a dozen levels; deeper JSON is junk, not a reading
MAX_PART_LENGTH: Final = 256  # a longer fullUrl is named by its position instead

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
_VALUE_X: Final = re.compile(r"value[A-Z]")  # an Observation's or component's value[x] element
_ABSOLUTE_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S")  # urn:uuid:..., https://...


FHIR_MARK: Final = b'"resourceType"'  # in every FHIR resource; in almost no plain reading


def looks_like_fhir(raw: pa.Array | pa.ChunkedArray, *, marked: np.ndarray | None = None) -> np.ndarray:
    """Bool mask of the records (binary or string) that are JSON-object-shaped and carry ``resourceType``.
    ``marked``: the records holding :data:`FHIR_MARK`, when the caller searched for it already."""
    if isinstance(raw, pa.ChunkedArray):
        raw = raw.combine_chunks()
    if len(raw) == 0:
        return np.zeros(0, dtype=bool)
    # Few records have the mark: the regex checks only those.
    mask = containing(raw, FHIR_MARK) if marked is None else marked.copy()
    maybe = np.flatnonzero(mask)
    if maybe.size:
        mask[maybe] = true_where(pc.match_substring_regex(raw.take(pa.array(maybe)), _FHIR_RE))
    return mask


def normalise_fhir(records: Sequence[bytes]) -> list[FhirOutcome]:
    """One ``FhirOutcome`` per record, in order; never raises, whatever the bytes."""
    return [_normalise_one(record) for record in records]


class _Reject(Exception):
    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(rule, detail)
        self.problem = FhirProblem(rule, detail)


def _whole(problem: FhirProblem) -> FhirOutcome:
    return FhirOutcome(None, (FhirProblem(problem.rule, problem.detail),))


def _normalise_one(record: object) -> FhirOutcome:
    try:
        return _normalise_record(record)
    except Exception as exc:  # noqa: BLE001 -- a bug must cost its own record, never the batch
        return _whole(FhirProblem(RULE_MALFORMED, _describe(exc)))


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 -- an exception whose message itself fails
        text = ""
    return _truncate(f"{type(exc).__name__}: {text}", 200)


def _normalise_record(record: object) -> FhirOutcome:
    if not isinstance(record, bytes | bytearray | memoryview | str):
        return _whole(FhirProblem(RULE_MALFORMED, f"record is {type(record).__name__}, not bytes"))
    try:
        doc = orjson.loads(record)
    except orjson.JSONDecodeError as exc:
        return _whole(FhirProblem(RULE_MALFORMED, _truncate(str(exc), 200)))
    try:
        if _deeper_than(doc, MAX_DEPTH):
            raise _Reject(RULE_MALFORMED, f"JSON nested deeper than {MAX_DEPTH} levels")
        return _normalise_doc(doc)
    except _Reject as reject:
        return _whole(reject.problem)


def _deeper_than(doc: object, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels (checked without recursion)."""
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _normalise_doc(doc: Any) -> FhirOutcome:
    if not isinstance(doc, dict):
        raise _Reject(RULE_MALFORMED, "record is not one JSON object")
    kind = doc.get("resourceType")
    parts: list[_Part]
    problems: list[FhirProblem]
    if kind == "Observation":
        parts, problems, entries = [_observation_part(doc, frozenset())], [], 1
    elif kind == "Bundle":
        parts, problems, entries = _bundle_parts(doc)
    elif isinstance(kind, str):
        raise _Reject(RULE_NOT_OBSERVATION, f"resourceType={_short(kind)}")
    else:
        raise _Reject(RULE_MALFORMED, "resourceType is missing or not a string")
    return FhirOutcome(_reading_json(parts, problems, entries), tuple(problems))


def _reading_json(parts: list[_Part], problems: list[FhirProblem], entries: int) -> bytes:
    """The merged reading of the valid parts; a whole-record ``_Reject`` when there is none."""
    if not parts:
        if not problems:
            raise _Reject(RULE_NOT_OBSERVATION, "bundle holds no Observation")
        raise _Reject(problems[0].rule, f"no valid Observation entry: {_rejected(problems, entries)}")
    reading = _Reading()
    try:
        for part in parts:
            reading.merge(part.reading)
        return reading.to_json(*_event_ids(parts))
    except _Reject as reject:
        if not problems:
            raise
        if reject.problem.rule in (RULE_MISSING_VALUE, RULE_UNKNOWN_CODE):
            # What was valid measured nothing: the rejected entries are why the record holds no reading.
            detail = f"no measured value in the valid entries ({reject.problem.detail}); "
            raise _Reject(problems[0].rule, detail + _rejected(problems, entries)) from None
        detail = f"{reject.problem.detail}; besides, {_rejected(problems, entries)}"
        raise _Reject(reject.problem.rule, detail) from None


def _rejected(problems: list[FhirProblem], entries: int) -> str:
    rules = ", ".join(sorted({p.rule for p in problems}))
    first = problems[0]
    return _truncate(
        f"{len(problems)} of {entries} entries rejected ({rules}); first {first.part}: {first.detail}", 400
    )


# --- Bundles -------------------------------------------------------------------------------------


def _bundle_parts(bundle: dict[str, Any]) -> tuple[list[_Part], list[FhirProblem], int]:
    """The bundle's valid Observations, the problems of the entries left out, and how many entries."""
    bundle_type = bundle.get("type")
    if not _one_of(bundle_type, ACCEPTED_BUNDLE_TYPES):
        raise _Reject(RULE_BUNDLE_TYPE, f"Bundle.type={_short(bundle_type)}")
    bundle_source = _meta_source(bundle, "Bundle")
    entries = bundle.get("entry")
    items: list[Any] = [] if entries is None else _typed(entries, list, "Bundle.entry")
    refs = _entry_refs(items)
    parts: list[_Part] = []
    problems: list[FhirProblem] = []
    for i, item in enumerate(items):
        name = f"entry[{i}]"
        full_url = item.get("fullUrl") if isinstance(item, dict) else None
        if isinstance(full_url, str) and 0 < len(full_url) <= MAX_PART_LENGTH:
            name = full_url
        try:
            entry = _typed(item, dict, f"Bundle.entry[{i}]")
            resource = entry.get("resource")
            if not isinstance(resource, dict):
                raise _Reject(RULE_MALFORMED, f"entry[{i}] has no resource")
            kind = resource.get("resourceType")
            if kind == "Observation":
                absolute = full_url if isinstance(full_url, str) and _ABSOLUTE_URL.match(full_url) else ""
                parts.append(
                    _observation_part(resource, refs, full_url=absolute, fallback_source=bundle_source)
                )
            elif not _one_of(kind, CONTEXT_RESOURCES):
                raise _Reject(RULE_NOT_OBSERVATION, f"entry[{i}].resourceType={_short(kind)}")
        except _Reject as reject:
            problems.append(FhirProblem(reject.problem.rule, reject.problem.detail, name))
    return parts, problems, len(items)


def _entry_refs(items: list[Any]) -> frozenset[str]:
    """References that resolve to an Observation entry (fullUrl, Observation/<id>), valid or not."""
    refs: set[str] = set()
    for item in items:
        resource = item.get("resource") if isinstance(item, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != "Observation":
            continue
        if isinstance(item.get("fullUrl"), str):
            refs.add(item["fullUrl"])
        if isinstance(resource.get("id"), str):
            refs.add(f"Observation/{resource['id']}")
    return frozenset(refs)


# --- Identity: event ids and corrections -----------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    """One top-level Observation, checked on its own: what it says and who it is."""

    reading: _Reading
    identity: tuple[str, ...]  # the namespace of the reading it is (a version of)
    version: tuple[str, ...] | None  # set for amended / corrected: which version this is
    digest_identity: bool  # identified by its content only: an original cannot be named

    @property
    def versioned(self) -> tuple[str, ...]:
        return self.identity if self.version is None else (*self.identity, "version", *self.version)


def _observation_part(
    obs: dict[str, Any], entry_refs: frozenset[str], *, full_url: str = "", fallback_source: str = ""
) -> _Part:
    reading = _Reading()
    _take_observation(obs, reading, entry_refs)
    assert reading.patient is not None  # a top-level Observation has a subject or was rejected
    source = _meta_source(obs, "Observation") or full_url or fallback_source
    identity, digest = _identity(obs, reading.patient, source, full_url)
    version = _version(obs) if _one_of(obs.get("status"), CORRECTION_STATUS) else None
    return _Part(reading, identity, version, digest)


def _identity(obs: dict[str, Any], patient: str, source: str, full_url: str) -> tuple[tuple[str, ...], bool]:
    """Who the Observation is, across servers and patients; True when only its content identifies it."""
    for identifier in _objects(obs, "identifier", "Observation"):
        value, system = identifier.get("value"), identifier.get("system")
        if isinstance(value, str) and value:
            if isinstance(system, str) and system:
                return ("identifier", system, value, patient), False
            return ("local-identifier", source, value, patient), False
    obs_id = _string_or_none(obs.get("id"), "Observation.id")
    if obs_id is not None:
        return ("id", source, patient, obs_id), False
    if full_url:
        return ("fullUrl", full_url, patient), False
    return ("content", _digest(obs)), True


def _version(obs: dict[str, Any]) -> tuple[str, str]:
    meta = obs.get("meta")
    if isinstance(meta, dict):
        for key in ("versionId", "lastUpdated"):
            value = meta.get(key)
            if isinstance(value, str) and value:
                return key, value
    return "content", _digest(obs)


def _event_ids(parts: list[_Part]) -> tuple[str, str | None]:
    """The reading's event id and, for a correction whose original can be named, the original's."""
    event_id = _hashed_id(p.versioned for p in parts)
    if all(p.version is None for p in parts) or any(p.digest_identity for p in parts):
        return event_id, None
    return event_id, _hashed_id(p.identity for p in parts)


def _hashed_id(identities: Iterable[tuple[str, ...]]) -> str:
    """``fhir-`` + 32 hex digits: fits ``expectations.ID_RE``; the order of the Observations is irrelevant."""
    canonical = orjson.dumps(sorted({orjson.dumps(list(identity)).decode() for identity in identities}))
    return EVENT_ID_PREFIX + hashlib.sha256(canonical).hexdigest()[:32]


def _digest(resource: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _meta_source(resource: dict[str, Any], where: str) -> str:
    meta = resource.get("meta")
    if meta is None:
        return ""
    source = _typed(meta, dict, f"{where}.meta").get("source")
    return _string_or_none(source, f"{where}.meta.source") or ""


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

    def merge(self, other: _Reading) -> None:
        """Add what another Observation of the same record says (entries in order)."""
        if other.patient is not None:
            self.set_patient(other.patient)
        if other.timestamp is not None:
            self.set_timestamp(other.timestamp)
        self.devices.extend(other.devices)
        for name, value in other.values.items():
            self.put(name, value)
        self.absent.extend(other.absent)
        self.not_carried.extend(other.not_carried)

    def to_json(self, event_id: str | None, supersedes: str | None = None) -> bytes:
        if not self.values:
            if self.not_carried:
                raise _Reject(RULE_UNKNOWN_CODE, f"no vital this lake carries: {', '.join(self.not_carried)}")
            why = f" (dataAbsentReason on {', '.join(self.absent)})" if self.absent else ""
            raise _Reject(RULE_MISSING_VALUE, f"no measured value in the record{why}")
        assert self.patient is not None and self.timestamp is not None  # every top-level obs set them
        out: dict[str, object] = {}
        if event_id:
            out[c.EVENT_ID] = event_id
        if supersedes:
            out[c.SUPERSEDES] = supersedes
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


def _take_observation(obs: dict[str, Any], reading: _Reading, entry_refs: frozenset[str]) -> None:
    """Merge one top-level Observation, its components and its contained members into ``reading``.

    Members are walked with an explicit stack (a long chain of contained members cannot exhaust the
    interpreter's recursion limit); a member listed twice, or in a cycle, counts once.
    """
    contained = _contained(obs)
    seen: set[str] = set()
    stack: list[tuple[dict[str, Any], bool]] = [(obs, True)]
    while stack:
        current, top_level = stack.pop()
        members = []
        for ref in _take_one(current, reading, entry_refs, contained, top_level=top_level):
            if ref not in seen:
                seen.add(ref)
                members.append(contained[ref])
        stack.extend((member, False) for member in reversed(members))


def _take_one(
    obs: dict[str, Any],
    reading: _Reading,
    entry_refs: frozenset[str],
    contained: dict[str, dict[str, Any]],
    *,
    top_level: bool,
) -> list[str]:
    """Merge one Observation (and its components); return the contained members it points at.

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
    device = _device(obs.get("device"), f"{where}.device")
    if device is not None:
        reading.devices.append(device)

    kind = _kind(obs, where)
    if kind == _NOT_CARRIED:
        reading.not_carried.append(_codes_text(obs.get("code")))
        return []  # a weight or height: its components and members are not vitals either
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
    members: list[str] = []
    for i, member in enumerate(_objects(obs, "hasMember", where)):
        ref = member.get("reference")
        if not isinstance(ref, str):
            raise _Reject(RULE_UNRESOLVED_MEMBER, f"{where}.hasMember[{i}] has no reference")
        if ref in contained:
            members.append(ref)
        elif not _in_bundle(ref, entry_refs):
            # The member lives elsewhere: the reading would silently lack what it measured.
            raise _Reject(RULE_UNRESOLVED_MEMBER, f"{where}.hasMember[{i}]={_short(ref)}")
        # else: the member is another entry of the same bundle and is merged as that entry.
    return members


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
    name = kind.strip("<>")
    if element.get("dataAbsentReason") is not None:
        reading.absent.append(name)  # not measured, said so explicitly: not an error
        return
    expected = "valueCodeableConcept" if kind == c.CONSCIOUSNESS else "valueQuantity"
    given = [key for key, value in element.items() if _VALUE_X.match(key) and value is not None]
    if len(given) > 1:
        raise _Reject(RULE_MALFORMED, f"{where}: several value[x] ({', '.join(given)})")
    if given and given[0] != expected:
        # A string, Range, Ratio, SampledData or integer is no plain measurement: never guess one.
        raise _Reject(RULE_NOT_A_MEASUREMENT, f"{where}: {name} given as {given[0]}, expected {expected}")
    if kind == c.CONSCIOUSNESS:
        reading.put(c.CONSCIOUSNESS, _acvpu(element, where))
        return
    quantity = element.get("valueQuantity")
    if quantity is None:
        raise _Reject(RULE_MISSING_VALUE, f"{where}: {name} has no valueQuantity")
    quantity = _typed(quantity, dict, f"{where}.valueQuantity")
    value = quantity.get("value")
    comparator = quantity.get("comparator")
    if comparator is not None:
        raise _Reject(
            RULE_COMPARATOR,
            f"{where}: {name} {_short(comparator)} {_short(value)} is a bound, not a measurement",
        )
    if value is None:
        raise _Reject(RULE_MISSING_VALUE, f"{where}: {name} has no valueQuantity.value")
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


def _target(ref: object, where: str) -> tuple[set[str], str | None]:
    """The resource types a Reference names (literal ``<type>/<id>`` and ``Reference.type``) and its id.

    The id is the literal reference's (relative or absolute, with or without _history), else the logical
    identifier's value. No type at all (an identifier without ``type``) is an empty set.
    """
    element: dict[str, Any] = _typed(ref, dict, where)
    kinds: set[str] = set()
    declared = _string_or_none(element.get("type"), f"{where}.type")
    if declared is not None:
        kinds.add(declared)
    text = element.get("reference")
    if text is not None:
        match = _REFERENCE_RE.search(_typed(text, str, f"{where}.reference"))
        if match:
            kinds.add(match["type"])
            return kinds, match["id"]
    identifier = element.get("identifier")
    if isinstance(identifier, dict) and isinstance(identifier.get("value"), str) and identifier["value"]:
        return kinds, str(identifier["value"])
    return kinds, None


def _patient(subject: object, where: str) -> str | None:
    if subject is None:
        return None
    kinds, patient = _target(subject, f"{where}.subject")
    if kinds - {"Patient"}:
        named = ", ".join(_short(k, 40) for k in sorted(kinds))
        raise _Reject(RULE_SUBJECT_NOT_PATIENT, f"{where}.subject is a {named}, not a Patient")
    if patient is None:
        ref = subject.get("reference") if isinstance(subject, dict) else None
        raise _Reject(RULE_MISSING_SUBJECT, f"{where}.subject names no Patient: {_short(ref)}")
    return patient


def _device(ref: object, where: str) -> str | None:
    """The device's id; a DeviceMetric (or any other type) is not a device and names none."""
    if ref is None:
        return None
    kinds, device = _target(ref, where)
    return device if kinds <= {"Device"} else None


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
        f"{_truncate(str(d.get('system', '')), 80)}|{_truncate(str(d.get('code', '')), 40)}"
        for d in (codings if isinstance(codings, list) else [])[:10]
        if isinstance(d, dict)
    ]
    if not codes and isinstance(concept.get("text"), str):
        codes = [_short(concept["text"])]
    return _truncate(", ".join(codes) or "(none)", 160)


def _short(value: object, limit: int = 80) -> str:
    """The offending value for a detail, quoted (``'Patient/1'`` vs ``None``) and truncated."""
    return _truncate(repr(value), limit)


def _truncate(text: str, limit: int) -> str:
    return text[:limit] + ("…" if len(text) > limit else "")

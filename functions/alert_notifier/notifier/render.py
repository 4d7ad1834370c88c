"""What clinicians receive: the email (plain text and HTML), the generic JSON body and Slack blocks.

Minimum necessary: the pseudonym, ward, bed, the alert and the vitals of the reading that changed it.
The event carries neither the hospital's patient id nor a name, so neither can be sent; a clinician
re-identifies the patient on the dashboard's patient page.
"""

from __future__ import annotations

import html
import re
import string
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from notifier import event as ev

PAYLOAD_TYPE: Final = "vitals-lake.alert"
PAYLOAD_VERSION: Final = 1

_REASON_LABELS: Final = {
    "model": "anomaly model",
    "news2_emergency": "NEWS2 emergency (7 or more)",
    "red_subscore": "NEWS2 red sub-score (3 in one parameter)",
}
# (label, field, unit) per vital; blood pressure is shown as one systolic/diastolic row.
_VITALS: Final = (
    ("Heart rate", ev.HEART_RATE, "/min"),
    ("Respiration rate", ev.RESPIRATION_RATE, "/min"),
    ("SpO2", ev.SPO2, "%"),
    ("Temperature", ev.TEMPERATURE, "°C"),
)
# Control characters (C0, DEL, C1) and the Unicode line and paragraph separators: a CR or LF in an email
# header is refused by the email package (or would inject a header), and breaks a one-line headline.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
SUBJECT_LIMIT: Final = 200
PLACE_LIMIT: Final = 64  # ward and bed in the headline (the admissions loader refuses longer ones)
# Printable ASCII but the space and "%": what header_token keeps as it is.
_TOKEN_SAFE: Final = string.punctuation.replace("%", "")
_FOOTER: Final = (
    "This message carries the minimum patient information needed to act. "
    "Open the ward dashboard for the patient's record."
)


@dataclass(frozen=True)
class EmailContent:
    subject: str
    text: str
    html: str


def one_line(value: Any, limit: int | None = None) -> str:
    """``value`` as one line: control characters and line breaks become spaces, runs of whitespace one
    space, trimmed; cut to ``limit`` characters (ending in "…") when longer."""
    text = " ".join(_CONTROL.sub(" ", str(value)).split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def header_token(value: str) -> str:
    """``value`` as printable ASCII without spaces, percent-encoding anything else: valid in any HTTP or
    mail header (http.client sends header values as Latin-1), and unchanged for the ids the pipeline
    makes (hex, ISO times)."""
    return urllib.parse.quote(value, safe=_TOKEN_SAFE, errors="backslashreplace")


def headline(event: ev.AlertEvent) -> str:
    ward = one_line(event.ward or "", PLACE_LIMIT)
    bed = one_line(event.get(ev.BED) or "", PLACE_LIMIT)
    where = f"ward {ward}" if ward else "no ward"
    if bed:
        where += f", bed {bed}"
    return f"{event.severity.upper()} alert {event.state}: {where}"


def summary(event: ev.AlertEvent) -> list[tuple[str, str]]:
    """(label, value) rows shared by every format, in reading order."""
    rows = [("Patient (pseudonym)", str(event.get(ev.PATIENT_KEY)))]
    rows += [
        ("Ward", event.ward or "-"),
        ("Bed", _text(event.get(ev.BED))),
        ("Severity", event.severity),
        ("State", event.state),
        ("Why", ", ".join(_REASON_LABELS.get(r, r) for r in event.get(ev.REASONS) or []) or "-"),
        ("NEWS2 score", _news2(event)),
        ("Flags", ", ".join(str(f).replace("_", " ") for f in event.get(ev.FLAGS) or []) or "-"),
        ("Anomaly score", _anomaly(event)),
    ]
    for label, field, unit in _VITALS:
        rows.append((label, _with_unit(event.get(field), unit)))
    sys_bp, dia_bp = event.get(ev.SYSTOLIC), event.get(ev.DIASTOLIC)
    bp = f"{_number(sys_bp)}/{_number(dia_bp)} mmHg" if sys_bp is not None or dia_bp is not None else "-"
    rows += [
        ("Blood pressure", bp),
        ("Reading time", _time(event.get(ev.EVENT_TIME))),
        ("Window", f"{_time(event.get(ev.WINDOW_START))} to {_time(event.get(ev.WINDOW_END))}"),
        ("Alert id", event.alert_id),
    ]
    # One line per value: the plain-text table stays aligned and Slack fields stay one field each.
    return [(label, one_line(value)) for label, value in rows]


def _news2(event: ev.AlertEvent) -> str:
    """The aggregate, and the parameters that scored (what a clinician checks first)."""
    scored = [
        f"{name.removeprefix('news2_').replace('_', ' ')} {value}"
        for name in ev.NEWS2_SUBSCORES
        if (value := event.get(name))
    ]
    total = _text(event.get(ev.NEWS2_SCORE))
    return f"{total} ({', '.join(scored)})" if scored else total


def render_email(event: ev.AlertEvent, subject_prefix: str) -> EmailContent:
    rows = summary(event)
    width = max(len(label) for label, _ in rows)
    text = "\n".join(
        [headline(event), "", *(f"{label.ljust(width)}  {value}" for label, value in rows), "", _FOOTER, ""]
    )
    cells = "\n".join(
        f'<tr><th align="left" style="padding:2px 12px 2px 0">{html.escape(label)}</th>'
        f"<td>{html.escape(value)}</td></tr>"
        for label, value in rows
    )
    body = (
        '<!DOCTYPE html>\n<html><body style="font-family:sans-serif">\n'
        f"<h2>{html.escape(headline(event))}</h2>\n<table>\n{cells}\n</table>\n"
        f'<p style="color:#555">{html.escape(_FOOTER)}</p>\n</body></html>\n'
    )
    subject = one_line(f"{subject_prefix} {headline(event)}", SUBJECT_LIMIT)
    return EmailContent(subject=subject, text=text, html=body)


def json_payload(event: ev.AlertEvent, notification_id: str) -> dict[str, Any]:
    """The generic webhook body: the event's own fields (the pseudonymous key, never the hospital id:
    the event does not carry it)."""
    alert = dict(event.fields)
    return {
        "type": PAYLOAD_TYPE,
        "version": PAYLOAD_VERSION,
        "notification_id": notification_id,
        "alert": alert,
    }


def slack_payload(event: ev.AlertEvent) -> dict[str, Any]:
    """A Slack incoming-webhook body: ``text`` for notifications, ``blocks`` for the message."""
    rows = summary(event)
    details = [(label, value) for label, value in rows if label not in ("Alert id", "Window")]
    fields = [{"type": "mrkdwn", "text": f"*{_mrkdwn(label)}*\n{_mrkdwn(value)}"} for label, value in details]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": headline(event)[:150]}},
        # Slack allows at most 10 fields per section.
        *({"type": "section", "fields": fields[i : i + 10]} for i in range(0, len(fields), 10)),
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": _mrkdwn(f"Alert id {event.alert_id}. {_FOOTER}")}],
        },
    ]
    return {"text": _mrkdwn(f"{headline(event)} (patient {event.get(ev.PATIENT_KEY)})"), "blocks": blocks}


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}".removesuffix(".0")
    return str(value)


def _with_unit(value: Any, unit: str) -> str:
    return "-" if value is None else f"{_number(value)} {unit}"


def _anomaly(event: ev.AlertEvent) -> str:
    score = event.get(ev.ANOMALY_SCORE)
    if score is None:
        return "-"
    model = event.get(ev.MODEL_VERSION)
    return f"{score:.3f}" + (f" (model {model})" if model else "")


def _time(value: Any) -> str:
    if not value:
        return "-"
    try:
        t = datetime.fromisoformat(str(value))
        if t.utcoffset() is None:
            return str(value)
        return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (ValueError, OverflowError):  # e.g. 0001-01-01T00:00+05:00 has no UTC time: show it as sent
        return str(value)


def _mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

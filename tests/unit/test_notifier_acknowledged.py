"""NotifierFunction.acknowledged: which Pub/Sub messages the function's last invocation acknowledged, read
from its JSON log (what the outage scenario and the demo wait for instead of a quiet period)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.stack.function import NotifierFunction


def entry(message: str, message_id: str, **fields: object) -> str:
    return json.dumps({"message_id": message_id, "message": message, "severity": "INFO", **fields})


def test_the_last_invocation_of_each_message_decides(tmp_path: Path) -> None:
    fn = NotifierFunction(tmp_path, config={"routes": []})
    assert fn.acknowledged() == {}  # no log yet
    fn.log_path.parent.mkdir(parents=True)
    lines = [
        "--- 2026-12-03T10:00:00 starting: functions-framework ...",
        entry("alert handled", "m1", outcomes={"email:a": "failed", "webhook:b": "sent"}),
        entry("alert handled", "m2", outcomes={"webhook:b": "busy"}),
        entry("alert handled", "m3", outcomes={"email:a": "sent", "webhook:b": "rejected"}),
        entry("malformed alert event acknowledged", "m4", reason="not base64 JSON"),
        entry("no route for alert", "m5"),
        "[2026-12-03 10:00:01 +0000] [7] [INFO] not JSON: a gunicorn line",
        entry("alert handled", "m1", outcomes={"email:a": "sent", "webhook:b": "duplicate"}),  # redelivery
        json.dumps({"message": "event fields unknown to the notifier's schema were dropped"}),
        '{"message_id": "m6", "message": "alert hand',  # the line being written
    ]
    fn.log_path.write_text("\n".join(lines))
    assert fn.acknowledged() == {"m1": True, "m2": False, "m3": True, "m4": True, "m5": True}

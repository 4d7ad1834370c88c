"""Erase a patient's alerts from the notifier's stores: the last step of the lake's ``forget-patient``.

    cd functions/alert_notifier
    python -m notifier.erase --alert-ids-file FILE      # '-': standard input

``FILE`` is what ``vitals-lake forget-patient --alert-ids-out FILE`` wrote: the patient's alert ids, one
per line. The store is the function's own (``state_from_env``: ``NOTIFIER_STATE=firestore`` with
``NOTIFIER_FIRESTORE_PROJECT`` / ``_DATABASE`` / ``_PREFIX`` in the cloud, ``NOTIFIER_STATE_DIR``
locally), so run it with the function's environment. Prints the counts as JSON; exits 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from notifier.state import state_from_env


def read_alert_ids(source: str) -> list[str]:
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m notifier.erase", description=__doc__.split("\n")[0])
    parser.add_argument("--alert-ids-file", required=True, help="alert ids, one per line ('-': stdin)")
    args = parser.parse_args(argv)
    try:
        alert_ids = read_alert_ids(args.alert_ids_file)
        deleted = state_from_env(os.environ).forget(alert_ids)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    print(json.dumps({"alert_ids": len(alert_ids), "records_deleted": deleted}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

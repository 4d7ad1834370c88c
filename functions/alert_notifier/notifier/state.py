"""Idempotency records and dead letters: SQLite + a JSONL file locally, Firestore in the cloud.

Idempotency: one record per (notification, destination), keyed by a hash of both.

* ``claim`` before sending: ACQUIRED (send it), DONE (already sent or refused for good: skip), or
  BUSY (another delivery of the same message is sending it right now: ask Pub/Sub to come back later).
  A claim older than the lease belongs to an instance that died mid-send and is taken over.
* ``finish`` after a success or a permanent refusal; ``release`` after a transient failure, so that the
  redelivered message tries again.

Dead letters: one record per delivery that failed after its last try, and per malformed message. A
record given a ``key`` (a malformed message's Pub/Sub id) is written once: the same key again is a no-op.

Erasure: ``forget(alert_ids)`` deletes every record of those alerts (a patient's, named by the lake's
``forget-patient``): the idempotency records, whose notification id starts with the alert id, and the
delivery dead letters, which carry it. Malformed messages' dead letters name no alert. Records hold no
patient id; without erasure they expire after :data:`RETENTION`.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

from google.api_core.exceptions import AlreadyExists, FailedPrecondition

LEASE_SECONDS: Final = 300.0  # longer than the worst case of all tries of one delivery
FIRESTORE_DELIVERIES: Final = "alert_deliveries"
FIRESTORE_DEAD_LETTERS: Final = "alert_dead_letters"
RETENTION: Final = timedelta(days=30)  # Firestore TTL on expire_at deletes old records (see README)


class Claim(enum.Enum):
    ACQUIRED = "acquired"
    DONE = "done"
    BUSY = "busy"


FINAL_STATUSES: Final = ("sent", "rejected")


def record_key(notification_id: str, destination_id: str) -> str:
    return hashlib.sha256(f"{notification_id}|{destination_id}".encode()).hexdigest()


class StateStore(Protocol):
    def claim(self, notification_id: str, destination_id: str) -> Claim: ...

    def finish(self, notification_id: str, destination_id: str, status: str, detail: str = "") -> None: ...

    def release(self, notification_id: str, destination_id: str) -> None: ...

    def dead_letter(self, record: Mapping[str, Any], key: str | None = None) -> bool:
        """Store ``record``; False (and nothing stored) when a record with ``key`` exists already."""
        ...

    def forget(self, alert_ids: Iterable[str]) -> int:
        """Delete every record of these alerts; return how many records were deleted."""
        ...


def notification_prefix(alert_id: str) -> str:
    """What every notification id of the alert starts with (``event.AlertEvent.notification_id``)."""
    return f"{alert_id}:"


def _alert_ids(alert_ids: Iterable[str]) -> list[str]:
    ids = sorted({a for a in alert_ids if a})
    if any(":" in a for a in ids):  # it would reach another alert's notifications by prefix
        raise ValueError("an alert id holds no ':'")
    return ids


def _now() -> datetime:
    return datetime.now(UTC)


class LocalState:
    """``<dir>/deliveries.sqlite3`` (idempotency) and ``<dir>/dead_letters.jsonl``. Safe for the threads
    of one server and for several processes sharing the directory."""

    def __init__(self, directory: str | Path, *, lease_seconds: float = LEASE_SECONDS) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.db_path = self.directory / "deliveries.sqlite3"
        self.dead_letter_path = self.directory / "dead_letters.jsonl"
        self.lease_seconds = lease_seconds
        self._lock = threading.Lock()
        with self._db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS deliveries (key TEXT PRIMARY KEY, notification_id TEXT NOT NULL,"
                " destination TEXT NOT NULL, status TEXT NOT NULL, claimed_at REAL NOT NULL,"
                " updated_at REAL NOT NULL, detail TEXT NOT NULL DEFAULT '')"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS dead_letter_keys"
                " (key TEXT PRIMARY KEY, recorded_at REAL NOT NULL)"
            )

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            yield db
        finally:
            db.close()

    def claim(self, notification_id: str, destination_id: str) -> Claim:
        key, now = record_key(notification_id, destination_id), time.time()
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")  # read and write as one step across processes
            row = db.execute("SELECT status, claimed_at FROM deliveries WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] in FINAL_STATUSES:
                result = Claim.DONE
            elif row is not None and now - row[1] < self.lease_seconds:
                result = Claim.BUSY
            else:
                db.execute(
                    "INSERT OR REPLACE INTO deliveries VALUES (?, ?, ?, 'pending', ?, ?, '')",
                    (key, notification_id, destination_id, now, now),
                )
                result = Claim.ACQUIRED
            db.execute("COMMIT")
        return result

    def finish(self, notification_id: str, destination_id: str, status: str, detail: str = "") -> None:
        with self._db() as db:
            db.execute(
                "UPDATE deliveries SET status = ?, detail = ?, updated_at = ? WHERE key = ?",
                (status, detail, time.time(), record_key(notification_id, destination_id)),
            )

    def release(self, notification_id: str, destination_id: str) -> None:
        with self._db() as db:
            db.execute(
                "DELETE FROM deliveries WHERE key = ? AND status = 'pending'",
                (record_key(notification_id, destination_id),),
            )

    def status(self, notification_id: str, destination_id: str) -> str | None:
        with self._db() as db:
            row = db.execute(
                "SELECT status FROM deliveries WHERE key = ?", (record_key(notification_id, destination_id),)
            ).fetchone()
        return None if row is None else str(row[0])

    def dead_letter(self, record: Mapping[str, Any], key: str | None = None) -> bool:
        line = json.dumps({"recorded_at": _now().isoformat(), **record}, sort_keys=True) + "\n"
        if key is None:
            with self._lock:
                self._append(line)
            return True
        with self._lock, self._db() as db:
            db.execute("BEGIN IMMEDIATE")  # the key and the line as one step across processes
            new = db.execute("INSERT OR IGNORE INTO dead_letter_keys VALUES (?, ?)", (key, time.time()))
            if not new.rowcount:
                db.execute("ROLLBACK")
                return False
            try:
                self._append(line)
            except BaseException:
                db.execute("ROLLBACK")  # no line, no key: the redelivery records it
                raise
            db.execute("COMMIT")
        return True

    def _append(self, line: str) -> None:
        with self.dead_letter_path.open("a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # whole lines even with several processes appending
            f.write(line)

    def forget(self, alert_ids: Iterable[str]) -> int:
        ids = _alert_ids(alert_ids)
        if not ids:
            return 0
        deleted = 0
        with self._db() as db:
            for alert_id in ids:
                # substr, not LIKE: an alert id's '_' or '%' must not match other ids.
                prefix = notification_prefix(alert_id)
                cur = db.execute(
                    "DELETE FROM deliveries WHERE substr(notification_id, 1, ?) = ?", (len(prefix), prefix)
                )
                deleted += cur.rowcount
        if self.dead_letter_path.exists():
            gone = set(ids)
            with self._lock, self.dead_letter_path.open("r+", encoding="utf-8") as f:
                fcntl.flock(f, fcntl.LOCK_EX)  # no append lands between the read and the rewrite
                lines = f.readlines()
                kept = [ln for ln in lines if not ln.strip() or json.loads(ln).get("alert_id") not in gone]
                f.seek(0)
                f.writelines(kept)
                f.truncate()
            deleted += len(lines) - len(kept)
        return deleted

    def dead_letters(self) -> list[dict[str, Any]]:
        if not self.dead_letter_path.exists():
            return []
        lines = self.dead_letter_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


class FirestoreState:
    """Collections ``alert_deliveries`` (one document per record key) and ``alert_dead_letters``.

    Claims run in a Firestore transaction, so two instances handling the same redelivered message
    cannot both send. Documents carry ``expire_at`` for a Firestore TTL policy.
    """

    def __init__(self, client: Any, *, prefix: str = "", lease_seconds: float = LEASE_SECONDS) -> None:
        self.client = client
        self.deliveries = client.collection(prefix + FIRESTORE_DELIVERIES)
        self.dead_letters = client.collection(prefix + FIRESTORE_DEAD_LETTERS)
        self.lease = timedelta(seconds=lease_seconds)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FirestoreState:
        from google.cloud import firestore  # noqa: PLC0415 - only the cloud backend needs it

        client = firestore.Client(
            project=env.get("NOTIFIER_FIRESTORE_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT") or None,
            database=env.get("NOTIFIER_FIRESTORE_DATABASE") or "(default)",
        )
        return cls(client, prefix=env.get("NOTIFIER_FIRESTORE_PREFIX", ""))

    def claim(self, notification_id: str, destination_id: str) -> Claim:
        from google.cloud import firestore  # noqa: PLC0415 - imported by from_env already

        ref = self.deliveries.document(record_key(notification_id, destination_id))

        @firestore.transactional
        def attempt(tx: Any) -> Claim:
            snap = ref.get(transaction=tx)
            now = _now()
            if snap.exists:
                doc = snap.to_dict()
                if doc.get("status") in FINAL_STATUSES:
                    return Claim.DONE
                if now - doc["claimed_at"] < self.lease:
                    return Claim.BUSY
            tx.set(
                ref,
                {
                    "notification_id": notification_id,
                    "destination": destination_id,
                    "status": "pending",
                    "claimed_at": now,
                    "updated_at": now,
                    "expire_at": now + RETENTION,
                },
            )
            return Claim.ACQUIRED

        result: Claim = attempt(self.client.transaction())
        return result

    def finish(self, notification_id: str, destination_id: str, status: str, detail: str = "") -> None:
        ref = self.deliveries.document(record_key(notification_id, destination_id))
        ref.update({"status": status, "detail": detail, "updated_at": _now()})

    def release(self, notification_id: str, destination_id: str) -> None:
        ref = self.deliveries.document(record_key(notification_id, destination_id))
        snap = ref.get()
        if snap.exists and snap.to_dict().get("status") == "pending":
            # Only the claim we read: not one that another instance took over in the meantime.
            with contextlib.suppress(FailedPrecondition):
                ref.delete(option=self.client.write_option(last_update_time=snap.update_time))

    def status(self, notification_id: str, destination_id: str) -> str | None:
        snap = self.deliveries.document(record_key(notification_id, destination_id)).get()
        return snap.to_dict().get("status") if snap.exists else None

    def dead_letter(self, record: Mapping[str, Any], key: str | None = None) -> bool:
        now = _now()
        document = {"recorded_at": now, "expire_at": now + RETENTION, **record}
        if key is None:
            self.dead_letters.add(document)
            return True
        try:  # create() fails if the document exists: one record per key, even from two instances
            self.dead_letters.document(hashlib.sha256(key.encode()).hexdigest()).create(document)
        except AlreadyExists:
            return False
        return True

    def forget(self, alert_ids: Iterable[str]) -> int:
        from google.cloud.firestore_v1.base_query import FieldFilter  # noqa: PLC0415 - cloud backend only

        ids = _alert_ids(alert_ids)
        refs = []
        for alert_id in ids:
            # The notification ids of one alert: a range from its prefix to the next character.
            prefix = notification_prefix(alert_id)
            query = self.deliveries.where(filter=FieldFilter("notification_id", ">=", prefix)).where(
                filter=FieldFilter("notification_id", "<", prefix[:-1] + chr(ord(prefix[-1]) + 1))
            )
            refs += [doc.reference for doc in query.stream()]
        for start in range(0, len(ids), _IN_LIMIT):
            chunk = ids[start : start + _IN_LIMIT]
            query = self.dead_letters.where(filter=FieldFilter("alert_id", "in", chunk))
            refs += [doc.reference for doc in query.stream()]
        for start in range(0, len(refs), _BATCH_LIMIT):
            batch = self.client.batch()
            for ref in refs[start : start + _BATCH_LIMIT]:
                batch.delete(ref)
            batch.commit()
        return len(refs)


_IN_LIMIT: Final = 30  # values of one Firestore "in" filter
_BATCH_LIMIT: Final = 500  # writes of one Firestore batch


def state_from_env(env: Mapping[str, str]) -> StateStore:
    """``NOTIFIER_STATE=firestore`` in the cloud; otherwise local files in ``$NOTIFIER_STATE_DIR``."""
    backend = env.get("NOTIFIER_STATE", "local")
    if backend == "firestore":
        return FirestoreState.from_env(env)
    if backend == "local":
        return LocalState(env.get("NOTIFIER_STATE_DIR") or "var/alert_notifier")
    raise ValueError(f"NOTIFIER_STATE must be local or firestore, not {backend!r}")

"""The simulation loop: one reading per patient per interval, with episodes and imperfections.

Time is kept in integer epoch milliseconds. A device reports once per interval at its own phase;
a tick produces the readings of one interval for the whole cohort (vectorised), queues each
message at the simulated moment it leaves the device, and sends whatever is due by the end of
the interval. Late, out-of-order and duplicate messages are simply queued for a later moment.

Fast mode runs a simulated clock as fast as the sink takes messages; a seed and a fixed start give
byte-identical output. Real-time mode sleeps to each interval boundary and stamps readings with
the wall clock.
"""

from __future__ import annotations

import heapq
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import numpy as np

from simulator.admissions import write_admissions
from simulator.cohort import Patient, make_cohort
from simulator.devices import DeviceFleet, make_fleet
from simulator.episodes import EpisodePlan, plan_episodes
from simulator.faults import MALFORMED_KINDS, FaultRates, malform
from simulator.manifest import Manifest
from simulator.progress import Progress
from simulator.readings import build_readings, encode, event_ids
from simulator.signals import Dropouts, SignalModel, make_baselines, round_like_devices
from simulator.sinks import Sink
from vitals_lake.labels import Episode, EpisodeType, write_labels

LABELS_FILE: Final = "labels.jsonl"
MANIFEST_FILE: Final = "produced.json"
SEND_STEP_S: Final = 0.25  # real time: how often due readings are released within an interval

# Why a message is on the queue; counted when it is actually sent.
_VALID, _LATE, _OUT_OF_ORDER, _DUPLICATE = 0, 1, 2, 3
_MALFORMED = 4  # + index into MALFORMED_KINDS


@dataclass(frozen=True, kw_only=True)
class SimulationConfig:
    patients: int = 100
    interval_seconds: float = 5.0
    duration_seconds: float = 600.0
    seed: int = 42
    fast: bool = True
    start: datetime | None = None  # fast mode only; default: now minus the duration
    episode_rate: float = 0.2  # share of patients with one episode
    faults: FaultRates = field(default_factory=FaultRates)
    out_dir: Path | None = None  # labels, manifest and admission files go here
    admissions: bool = True
    wait_for_late: bool = True  # real time: keep running until late readings have gone out

    def __post_init__(self) -> None:
        if self.interval_seconds < 0.001 or self.duration_seconds < self.interval_seconds:
            raise ValueError("need interval >= 1 ms and duration >= interval")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if not 0.0 <= self.episode_rate <= 1.0:
            raise ValueError("episode_rate must be within [0, 1]")
        if self.start is not None and not self.fast:
            raise ValueError("start applies to fast mode only; real time starts now")
        if self.start is not None and self.start.tzinfo is None:
            raise ValueError("start must carry a UTC offset")


def _ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Simulation:
    """A cohort, its devices and its planned episodes; :meth:`run` streams the readings to a sink (once)."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.interval_ms = max(1, round(config.interval_seconds * 1000))
        self.ticks = round(config.duration_seconds * 1000) // self.interval_ms
        if config.fast:
            start = config.start or (datetime.now(UTC) - timedelta(seconds=config.duration_seconds))
            self.start_ms = _ms(start.replace(microsecond=0) if config.start is None else start)
        else:
            self.start_ms = _now_ms()
        self.end_ms = self.start_ms + self.ticks * self.interval_ms

        seed = config.seed
        faults = config.faults
        self.cohort: list[Patient] = make_cohort(
            config.patients, seed=seed, as_of=datetime.fromtimestamp(self.start_ms / 1000, UTC)
        )
        n = len(self.cohort)
        self.fleet: DeviceFleet = make_fleet(
            n,
            rng=np.random.default_rng([seed, 1]),
            interval_ms=self.interval_ms,
            local_offset_rate=faults.local_offset_device,
            skewed_device_rate=faults.skewed_device,
            skew_seconds=faults.skew_seconds,
        )
        self.baselines = make_baselines(self.cohort, rng=np.random.default_rng([seed, 2]))
        self.plan: EpisodePlan = plan_episodes(
            self.cohort,
            self.baselines,
            rng=np.random.default_rng([seed, 3]),
            rate=config.episode_rate,
            start_ms=self.start_ms,
            end_ms=self.end_ms,
            interval_ms=self.interval_ms,
            clock_skew_ms=self.fleet.clock_skew_ms,
        )
        self._signals = SignalModel(
            self.baselines, rng=np.random.default_rng([seed, 4]), interval_s=self.interval_ms / 1000
        )
        self._dropouts = Dropouts(
            n, rng=np.random.default_rng([seed, 5]), rate=faults.dropout, seconds=faults.dropout_seconds
        )
        self._patient_ids = [p.patient_id for p in self.cohort]
        self._device_ids = [p.device_id for p in self.cohort]
        self._id_rng = np.random.default_rng([seed, 6])
        self._fault_rng = np.random.default_rng([seed, 7])
        self._queue: list[tuple[int, int, str, bytes, int]] = []
        self._seq = 0
        self._counts = np.zeros(_MALFORMED + len(MALFORMED_KINDS), dtype=np.int64)
        self._dropped = 0
        self._ran = False

    # --- one tick ------------------------------------------------------------------------------

    def _push(self, send_ms: int, key: str, payload: bytes, tag: int) -> None:
        heapq.heappush(self._queue, (send_ms, self._seq, key, payload, tag))
        self._seq += 1

    def _generate(self, k: int) -> None:
        """Queue the readings of interval ``k`` for every patient whose device is not in a dropout."""
        n = len(self.cohort)
        faults = self.config.faults
        t_true = self.start_ms + k * self.interval_ms + self.fleet.phase_ms
        present = self._dropouts.present(t_true)
        values = round_like_devices(
            self._signals.sample(t_true, self.plan.delta_at(t_true)), self.fleet.spo2_decimals
        )
        idx = np.flatnonzero(present)
        m = len(idx)
        self._dropped += n - m
        readings = build_readings(
            patient_ids=self._patient_ids,
            device_ids=self._device_ids,
            fleet=self.fleet,
            idx=idx,
            device_ms=t_true[idx] + self.fleet.clock_skew_ms[idx],
            values=values[idx],
            ids=event_ids(self._id_rng, m),
        )

        rng = self._fault_rng
        malformed = rng.random(m) < faults.malformed
        route = rng.random(m)
        late = route < faults.late
        out_of_order = ~late & (route < faults.late + faults.out_of_order)
        duplicate = rng.random(m) < faults.duplicate
        late_ms = (rng.uniform(*faults.late_seconds, m) * 1000).astype(np.int64)
        # Held back 1-2 intervals: at least the device's own next reading overtakes it.
        ooo_ms = (rng.uniform(1.0, 2.0, m) * self.interval_ms).astype(np.int64) + 1
        dup_ms = (rng.uniform(*faults.duplicate_delay_seconds, m) * 1000).astype(np.int64)
        kinds = rng.integers(0, len(MALFORMED_KINDS), m)

        send_ms = t_true[idx].tolist()
        for j, reading in enumerate(readings):
            key = self._patient_ids[idx[j]]
            if malformed[j]:
                kind = int(kinds[j])
                self._push(send_ms[j], key, malform(MALFORMED_KINDS[kind], reading, rng), _MALFORMED + kind)
                continue
            payload = encode(reading)
            at, tag = send_ms[j], _VALID
            if late[j]:
                at, tag = at + int(late_ms[j]), _LATE
            elif out_of_order[j]:
                at, tag = at + int(ooo_ms[j]), _OUT_OF_ORDER
            self._push(at, key, payload, tag)
            if duplicate[j]:
                self._push(at + int(dup_ms[j]), key, payload, _DUPLICATE)

    def _send_due(self, sink: Sink, before_ms: int | None) -> int:
        """Send every queued message due before ``before_ms`` (all if None); return how many."""
        sent = 0
        queue = self._queue
        while queue and (before_ms is None or queue[0][0] < before_ms):
            _, _, key, payload, tag = heapq.heappop(queue)
            sink.send(payload, key=key)
            self._counts[tag] += 1
            sent += 1
        return sent

    # --- the run -------------------------------------------------------------------------------

    def run(
        self,
        sink: Sink,
        *,
        sink_name: str = "custom",
        progress: Progress | None = None,
        stop: threading.Event | None = None,
    ) -> Manifest:
        """Stream the whole run into ``sink``, flush it, write the output files and return the counts.

        Setting ``stop`` (real time) ends the run after the current interval; queued messages are
        still sent so the manifest stays exact.
        """
        if self._ran:
            raise RuntimeError("a Simulation runs once; build a new one (same config, same output)")
        self._ran = True
        cfg = self.config
        stop = stop or threading.Event()
        sent = 0
        generated_until = self.start_ms
        for k in range(self.ticks):
            if stop.is_set():
                break
            self._generate(k)
            boundary = self.start_ms + (k + 1) * self.interval_ms
            generated_until = boundary
            if not cfg.fast:
                # A monitor sends each reading as it measures it: release readings as their time comes
                # (every SEND_STEP_S), not all at the end of the interval, which would age them by up
                # to one interval before they leave.
                while (now := _now_ms()) < boundary and not stop.is_set():
                    sent += self._send_due(sink, now)
                    stop.wait(min(SEND_STEP_S, (boundary - now) / 1000))
            sent += self._send_due(sink, boundary)
            if not cfg.fast:
                sink.flush()
            if progress:
                progress.update(sent, boundary)
        if not cfg.fast and cfg.wait_for_late:
            while self._queue and not stop.is_set():
                stop.wait(max(0.0, (self._queue[0][0] - _now_ms()) / 1000))
                sent += self._send_due(sink, _now_ms() + 1)
                sink.flush()
        sent += self._send_due(sink, None)
        sink.flush()
        if progress:
            progress.update(sent, generated_until, final=True)
        manifest = self._manifest(sink_name, generated_until)
        if cfg.out_dir is not None:
            self._write_outputs(cfg.out_dir, manifest, generated_until)
        return manifest

    def _manifest(self, sink_name: str, end_ms: int) -> Manifest:
        c = self._counts
        episodes = self._begun(end_ms)
        by_type = dict.fromkeys(map(str, EpisodeType), 0)
        for e in episodes:
            by_type[str(e.type)] += 1
        valid = int(c[_VALID] + c[_LATE] + c[_OUT_OF_ORDER])
        by_kind = {str(kind): int(c[_MALFORMED + i]) for i, kind in enumerate(MALFORMED_KINDS)}
        malformed = sum(by_kind.values())
        duplicates = int(c[_DUPLICATE])
        return Manifest(
            seed=self.config.seed,
            patients=len(self.cohort),
            mode="fast" if self.config.fast else "realtime",
            sink=sink_name,
            start=_iso(self.start_ms),
            end=_iso(end_ms),
            interval_seconds=self.interval_ms / 1000,
            messages_sent=valid + duplicates + malformed,
            valid_readings=valid,
            duplicates_sent=duplicates,
            malformed_sent=malformed,
            malformed_by_kind=by_kind,
            late_sent=int(c[_LATE]),
            out_of_order_sent=int(c[_OUT_OF_ORDER]),
            dropped_readings=self._dropped,
            skewed_devices=int(np.count_nonzero(self.fleet.clock_skew_ms)),
            local_offset_devices=int(np.count_nonzero(self.fleet.utc_offset_min)),
            episodes=len(episodes),
            episodes_by_type=by_type,
        )

    def _begun(self, end_ms: int) -> list[Episode]:
        # A run stopped early only labels (and counts) the episodes that had begun.
        return [e for e, s in zip(self.plan.episodes, self.plan.start_ms, strict=True) if s < end_ms]

    def _write_outputs(self, out_dir: Path, manifest: Manifest, end_ms: int) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_labels(out_dir / LABELS_FILE, self._begun(end_ms))
        if self.config.admissions:
            first = datetime.fromtimestamp(self.start_ms / 1000, UTC).date()
            last = datetime.fromtimestamp(max(self.start_ms, end_ms - 1) / 1000, UTC).date()
            days = [first + timedelta(days=d) for d in range((last - first).days + 1)]
            write_admissions(self.cohort, out_dir, days=days, seed=self.config.seed)
        manifest.write(out_dir / MANIFEST_FILE)


def run_simulation(
    config: SimulationConfig,
    sink: Sink,
    *,
    sink_name: str = "custom",
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> Manifest:
    """Build the simulation for ``config`` and run it into ``sink`` (which the caller closes)."""
    return Simulation(config).run(sink, sink_name=sink_name, progress=progress, stop=stop)

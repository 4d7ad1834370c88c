"""MLflow run tracking for anomaly-model training and evaluation: one call logs one finished run.

``track_run(run_name=..., params=..., metrics=..., artifacts=...)`` logs params (nested mappings
flattened to dotted keys, values stringified and truncated to MLflow's limit), finite metrics (NaN/inf
and non-numbers skipped and named in the ``vitals_lake.skipped_metrics`` tag), tags, and files (at the
artifact root) or directories (under their own name), and returns the run id.

Store: ``tracking_uri()`` = explicit URI, else ``$MLFLOW_TRACKING_URI``, else a local file store at
``var/ml/mlruns`` (resolved against the working directory, like the other ``var/ml`` defaults; run
``make`` from the repo root). Measured with mlflow-skinny 3.17.2 in this venv:

- ``sqlite:///...`` (MLflow 3's own default) does not work: skinny ships without SQLAlchemy, so the
  scheme is not even registered (``UnsupportedModelRegistryStoreURIException``).
- ``file:`` stores RAISE on construction ("filesystem tracking backend ... in maintenance mode")
  unless ``MLFLOW_ALLOW_FILE_STORE=true``; once allowed it works fully with no server or extra
  dependency and emits no warnings, so it is the default. The opt-out is set only for the duration
  of a call against a local store, and only if the caller has not set it (``false`` is respected).

Nothing global is touched otherwise: everything goes through ``MlflowClient(tracking_uri=...)``, never
``mlflow.set_tracking_uri`` or the fluent ``mlflow.start_run``, so no active run ever exists and other
code's ``mlflow.*`` calls are unaffected. A failure after the run is created marks it FAILED (never
left RUNNING) and re-raises; missing artifacts are rejected before any run is created.

Cost (measured, 2 CPUs, 3 params, 41 metrics, a 200 kB artifact directory): the first call in a
process takes 3-4.5 s, nearly all of it importing mlflow, which is therefore imported lazily inside
``track_run`` (``import ml.tracking`` takes <0.1 s); later calls take 15-50 ms. So ``make train`` /
``make evaluate`` pay ~3-4 s once per process.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar
from urllib.parse import urlparse
from urllib.request import url2pathname

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_TRACKING_DIR: Final = Path("var/ml/mlruns")
EXPERIMENT: Final = "vitals-lake-anomaly"
SKIPPED_METRICS_TAG: Final = "vitals_lake.skipped_metrics"

# MLflow's own limits (mlflow.utils.validation); truncating here avoids its per-value warning and
# marks the cut so nobody mistakes a truncated value for the whole one.
_MAX_KEY: Final = 250
_MAX_PARAM_VALUE: Final = 6000
_MAX_TAG_VALUE: Final = 8000
_TRUNCATED: Final = "...[truncated]"
# The portable subset of MLflow's allowed key characters (it also allows ':' but not on Windows).
_BAD_KEY_CHARS: Final = re.compile(r"[^A-Za-z0-9_\-. /]")
_ALLOW_FILE_STORE: Final = "MLFLOW_ALLOW_FILE_STORE"
# Scheme-less URIs MLflow maps to services rather than local paths (mlflow.tracking.registry).
_NAMED_SERVICES: Final = frozenset({"databricks", "databricks-uc", "uc"})

_V = TypeVar("_V")


def tracking_uri(explicit: str | None = None) -> str:
    """explicit, else env MLFLOW_TRACKING_URI, else a local file store under var/ml/mlruns
    (absolute file: URI)."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_DIR.resolve().as_uri()


def track_run(
    *,
    run_name: str,
    params: Mapping[str, object],
    metrics: Mapping[str, object],  # nested mappings flattened to dotted keys
    artifacts: Sequence[Path] = (),
    tags: Mapping[str, str] | None = None,
    tracking_uri: str | None = None,
    experiment: str = EXPERIMENT,
) -> str:
    """Log one run (params, numeric metrics, files or directories as artifacts, tags); return the run id."""
    # Everything that can be checked is checked before a run exists: a bad call leaves no half-run.
    artifact_paths = _checked_artifacts(artifacts)
    param_values = _sanitised(
        {k: _truncate(_param_text(v), _MAX_PARAM_VALUE) for k, v in _flatten(params).items()}, "param"
    )
    metric_values, skipped = _finite_metrics(metrics)
    tag_values = _sanitised({k: _truncate(str(v), _MAX_TAG_VALUE) for k, v in (tags or {}).items()}, "tag")
    if skipped:
        tag_values[SKIPPED_METRICS_TAG] = _truncate(",".join(skipped), _MAX_TAG_VALUE)

    uri = _resolve(tracking_uri)
    with _file_store_allowed(uri):
        from mlflow import MlflowClient  # noqa: PLC0415 - ~3 s import, only paid when tracking
        from mlflow.entities import Metric, Param, RunTag  # noqa: PLC0415

        client = MlflowClient(tracking_uri=uri)
        with _run(client, experiment_id=_experiment_id(client, experiment), run_name=run_name) as run_id:
            now_ms = int(time.time() * 1000)
            client.log_batch(  # the client splits into MLflow's per-request batch limits
                run_id,
                metrics=[Metric(k, v, now_ms, 0) for k, v in metric_values.items()],
                params=[Param(k, v) for k, v in param_values.items()],
                tags=[RunTag(k, v) for k, v in tag_values.items()],
            )
            for path in artifact_paths:
                if path.is_dir():
                    client.log_artifacts(run_id, str(path), artifact_path=path.name)
                else:
                    client.log_artifact(run_id, str(path))
        return run_id


def _resolve(explicit: str | None) -> str:
    uri = tracking_uri(explicit)
    if _is_local(uri):  # a relative path would follow the process's cwd; pin it to an absolute URI
        parsed = urlparse(uri)
        return Path(url2pathname(parsed.path) if parsed.scheme == "file" else uri).resolve().as_uri()
    return uri


def _is_local(uri: str) -> bool:
    """The same split MLflow makes: file: URIs and scheme-less paths are its (file) store."""
    scheme = urlparse(uri).scheme
    return scheme == "file" or (scheme == "" and uri not in _NAMED_SERVICES)


@contextmanager
def _file_store_allowed(uri: str) -> Iterator[None]:
    """Opt in to MLflow 3's file store for this call only, unless the caller decided already."""
    if not _is_local(uri) or _ALLOW_FILE_STORE in os.environ:
        yield
        return
    os.environ[_ALLOW_FILE_STORE] = "true"
    try:
        yield
    finally:
        os.environ.pop(_ALLOW_FILE_STORE, None)


@contextmanager
def _run(client: MlflowClient, *, experiment_id: str, run_name: str) -> Iterator[str]:
    """A client-side run: FINISHED on success, FAILED (then re-raised) on any error, never left RUNNING."""
    run_id: str = client.create_run(experiment_id, run_name=run_name).info.run_id
    try:
        yield run_id
    except BaseException as exc:  # KeyboardInterrupt too: the run must not stay RUNNING
        try:
            client.set_terminated(run_id, status="FAILED")
        except Exception as end_exc:  # noqa: BLE001 - the original error is the one to surface
            exc.add_note(f"also failed to mark MLflow run {run_id} FAILED: {end_exc!r}")
        else:
            exc.add_note(f"MLflow run {run_id} marked FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")


def _experiment_id(client: MlflowClient, name: str) -> str:
    from mlflow.exceptions import MlflowException  # noqa: PLC0415 - see track_run

    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return str(client.create_experiment(name))
        except MlflowException:
            found = client.get_experiment_by_name(name)  # another process created it first
            if found is None:
                raise
    if found.lifecycle_stage != "active":
        raise ValueError(
            f"MLflow experiment {name!r} is deleted; restore it (MlflowClient.restore_experiment)"
            " or pass another experiment name"
        )
    return str(found.experiment_id)


def _checked_artifacts(artifacts: Sequence[Path]) -> list[Path]:
    paths = [Path(a).resolve() for a in artifacts]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"artifact paths do not exist: {', '.join(missing)}")
    names = [p.name for p in paths]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        # Both would land at the same artifact path and one would silently replace the other.
        raise ValueError(f"artifacts share a name at the artifact root: {', '.join(clashes)}")
    return paths


def _flatten(values: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _param_text(value: object) -> str:
    if isinstance(value, list | tuple | Mapping):  # empty mappings land here: "{}"
        try:
            return json.dumps(value, default=str)
        except (TypeError, ValueError):  # e.g. non-string dict keys in a list, cycles
            return str(value)
    return str(value)


def _finite_metrics(metrics: Mapping[str, object]) -> tuple[dict[str, float], list[str]]:
    """Keep finite real numbers (bools become 0/1); name everything else as skipped."""
    kept: dict[str, float] = {}
    skipped: list[str] = []
    for key, value in _flatten(metrics).items():
        if isinstance(value, numbers.Real) and math.isfinite(number := float(value)):
            kept[key] = number
        else:
            skipped.append(key)
    return _sanitised(kept, "metric"), sorted(_sanitise_key(k) for k in skipped)


def _sanitised(values: Mapping[str, _V], kind: str) -> dict[str, _V]:
    out: dict[str, _V] = {}
    origin: dict[str, str] = {}
    for key, value in values.items():
        clean = _sanitise_key(key)
        if clean in out:
            raise ValueError(f"{kind} keys {origin[clean]!r} and {key!r} both become {clean!r} in MLflow")
        out[clean], origin[clean] = value, key
    return out


def _sanitise_key(key: str) -> str:
    """MLflow keys: allowed characters only, and a normalised relative path (the file store uses them)."""
    clean = _BAD_KEY_CHARS.sub("_", str(key))[:_MAX_KEY]
    # No empty, "." or ".." components: the key must equal its own posixpath.normpath.
    return "/".join(p if p.strip(".") else "_" for p in clean.split("/") if p) or "_"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(_TRUNCATED)] + _TRUNCATED

"""Where the BigQuery warehouse is and how to reach it: one settings object, validated once.

Real BigQuery by default (Application Default Credentials); the local emulator by ``api_endpoint``
(``http://127.0.0.1:PORT``) with anonymous credentials. Components never read the environment
themselves: :meth:`BigQuerySettings.from_env` does it at the edge.

    VITALS_GCP_PROJECT        project (shared with the Pub/Sub settings)
    VITALS_BQ_DATASET         dataset (default ``vitals_warehouse``)
    VITALS_BQ_LOCATION        dataset location (default ``EU``)
    VITALS_BQ_ENDPOINT        API endpoint, e.g. the emulator's ``http://127.0.0.1:9050``
    VITALS_BQ_CREDENTIALS     ``default`` | ``anonymous`` | ``service-account``
                              (default: ``anonymous`` with an endpoint, else ``default``)
    VITALS_BQ_KEY_FILE        service-account JSON key (with ``service-account``)
    VITALS_BQ_RETRY_DEADLINE  seconds one write retries transient failures before it raises (120)
    VITALS_BQ_OUTAGE_BUDGET   seconds the pipeline's warehouse writer keeps repeating a write that
                              failed transiently (the warehouse down) before it fails the bundle
                              (3600; 0: no ride-out, the first failed write fails the bundle)

Two budgets, because they answer different questions. ``retry_deadline`` bounds one
:meth:`~warehouse.bigquery.BigQuerySink.write` (blips: a 503, a reset). ``outage_budget``
is how long a longer outage is ridden out by
:class:`~pipelines.warehouse_io.WriteWarehouseFn` (repeating the write with backoff capped at
``outage_backoff`` seconds, logging and counting each repeat) instead of failing the bundle: the local
DirectRunner gives a failed bundle four immediate tries and then stops the whole stream, whereas
Dataflow would retry it forever. While a write waits, a DirectRunner pipeline waits with it (its
executor has one thread): nothing is lost, Pub/Sub keeps the backlog, and the allowed lateness
(600 s by default) must cover the outage for Gold windows to take the late readings.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, cast, get_args
from urllib.parse import urlsplit

from vitals_lake.config import LOCAL_PROJECT, ConfigError

CredentialsMode = Literal["default", "anonymous", "service-account"]
CREDENTIALS_MODES: Final = get_args(CredentialsMode)
DEFAULT_DATASET: Final = "vitals_warehouse"
DEFAULT_LOCATION: Final = "EU"

_PROJECT_RE: Final = re.compile(r"^[a-z][a-z0-9\-]{4,28}[a-z0-9]$")
_DATASET_RE: Final = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_LOCATION_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9\-]{1,40}$")
# insertAll's hard limits: 50,000 rows and 10 MB per request (Google recommends about 500 rows).
MAX_ROWS_LIMIT: Final = 50_000
MAX_REQUEST_BYTES_LIMIT: Final = 10_000_000


@dataclass(frozen=True, kw_only=True)
class BigQuerySettings:
    project: str = LOCAL_PROJECT
    dataset: str = DEFAULT_DATASET
    location: str = DEFAULT_LOCATION
    api_endpoint: str | None = None  # None: the real service; "http://127.0.0.1:9050": an emulator
    credentials: CredentialsMode = "default"
    key_file: str | None = None  # with credentials="service-account"
    # Streaming inserts: rows and JSON bytes per insertAll request, and how long one write may keep
    # retrying transient failures (5xx, 429, connection errors) before it gives up and raises.
    max_rows_per_request: int = 500
    max_bytes_per_request: int = 9_000_000
    retry_deadline: float = 120.0
    request_timeout: float = 30.0  # one HTTP attempt
    # Outage ride-out in the pipeline's writer (see the module docstring): how long, and the cap of the
    # pause between repeats of a write that failed transiently.
    outage_budget: float = 3600.0
    outage_backoff: float = 30.0

    def __post_init__(self) -> None:
        if not _PROJECT_RE.match(self.project):
            raise ConfigError(f"GCP project id is malformed: {self.project!r}")
        if not _DATASET_RE.match(self.dataset):
            raise ConfigError(
                f"BigQuery dataset name must be letters, digits and underscores: {self.dataset!r}"
            )
        if not _LOCATION_RE.match(self.location):
            raise ConfigError(
                f"BigQuery location is malformed (e.g. EU, US, europe-west2): {self.location!r}"
            )
        if self.credentials not in CREDENTIALS_MODES:
            raise ConfigError(
                f"BigQuery credentials must be one of {', '.join(CREDENTIALS_MODES)}: {self.credentials!r}"
            )
        if self.api_endpoint is not None:
            url = urlsplit(self.api_endpoint)
            if url.scheme not in ("http", "https") or not url.hostname or url.path not in ("", "/"):
                raise ConfigError(
                    f"BigQuery api_endpoint must be http(s)://host[:port]: {self.api_endpoint!r}"
                )
        if self.credentials == "anonymous" and self.api_endpoint is None:
            raise ConfigError("anonymous BigQuery credentials only work against an emulator (api_endpoint)")
        if (self.credentials == "service-account") != (self.key_file is not None):
            raise ConfigError("a key_file goes with credentials='service-account', and only with it")
        if not 1 <= self.max_rows_per_request <= MAX_ROWS_LIMIT:
            raise ConfigError(
                f"max_rows_per_request must be 1..{MAX_ROWS_LIMIT}: {self.max_rows_per_request}"
            )
        if not 1024 <= self.max_bytes_per_request <= MAX_REQUEST_BYTES_LIMIT:
            raise ConfigError(
                f"max_bytes_per_request must be 1024..{MAX_REQUEST_BYTES_LIMIT}: {self.max_bytes_per_request}"
            )
        if self.retry_deadline <= 0 or self.request_timeout <= 0:
            raise ConfigError("retry_deadline and request_timeout must be > 0 seconds")
        if self.outage_budget < 0 or self.outage_backoff <= 0:
            raise ConfigError("outage_budget must be >= 0 and outage_backoff > 0 seconds")

    @property
    def dataset_ref(self) -> str:
        return f"{self.project}.{self.dataset}"

    def table_ref(self, table: str) -> str:
        return f"{self.project}.{self.dataset}.{table}"

    @classmethod
    def for_emulator(
        cls, endpoint: str, *, project: str = LOCAL_PROJECT, dataset: str = DEFAULT_DATASET
    ) -> BigQuerySettings:
        return cls(project=project, dataset=dataset, api_endpoint=endpoint, credentials="anonymous")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BigQuerySettings:
        e = os.environ if env is None else env
        endpoint = e.get("VITALS_BQ_ENDPOINT") or None
        mode = e.get("VITALS_BQ_CREDENTIALS") or ("anonymous" if endpoint else "default")
        if mode not in CREDENTIALS_MODES:
            raise ConfigError(
                f"VITALS_BQ_CREDENTIALS must be one of {', '.join(CREDENTIALS_MODES)}: {mode!r}"
            )
        return cls(
            project=e.get("VITALS_GCP_PROJECT", LOCAL_PROJECT),
            dataset=e.get("VITALS_BQ_DATASET", DEFAULT_DATASET),
            location=e.get("VITALS_BQ_LOCATION", DEFAULT_LOCATION),
            api_endpoint=endpoint,
            credentials=cast(CredentialsMode, mode),
            key_file=e.get("VITALS_BQ_KEY_FILE") or None,
            retry_deadline=_seconds(e, "VITALS_BQ_RETRY_DEADLINE", 120.0),
            outage_budget=_seconds(e, "VITALS_BQ_OUTAGE_BUDGET", 3600.0),
        )


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds: {raw!r}") from None

"""Silver's gate: parse and check every record of a batch; failures go to quarantine with their rule."""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from vitals_lake.readings import parse_batch

QUARANTINE = "quarantine"


class ValidateReadingsFn(beam.DoFn):
    def __init__(self) -> None:
        self.valid = Metrics.counter("quality", "valid_rows")
        self.quarantined = Metrics.counter("quality", "quarantined_rows")

    def process(self, batch: tuple[str, pa.Table]) -> Iterator[object]:
        batch_id, bronze = batch
        parsed = parse_batch(bronze)
        self.valid.inc(parsed.silver.num_rows)
        self.quarantined.inc(parsed.quarantine.num_rows)
        for rule, failed in parsed.rule_counts.items():
            if failed:
                Metrics.counter("quality", f"failed_{rule}").inc(failed)
        yield batch_id, parsed.silver
        if parsed.quarantine.num_rows:
            yield pvalue.TaggedOutput(QUARANTINE, (batch_id, parsed.quarantine))


class ValidateReadings(beam.PTransform):
    """(batch_id, Bronze rows) -> main 'valid': (batch_id, Silver rows); 'quarantine': (batch_id, rows)."""

    def expand(self, batches: beam.PCollection) -> pvalue.DoOutputsTuple:
        return batches | "ParseAndCheck" >> beam.ParDo(ValidateReadingsFn()).with_outputs(
            QUARANTINE, main="valid"
        )

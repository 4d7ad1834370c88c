"""The names of the pipeline's Beam counters that operators alert on.

Dataflow exports every Beam counter to Cloud Monitoring as ``dataflow.googleapis.com/job/user_counter``
with the counter's name in the ``metric_name`` label (the namespace is not a label). The alert policies
in ``infra/terraform/monitoring.tf`` select them by these names, which reach Terraform through
``generated/names.json`` (``python -m deploy.infra_names``), so a renamed counter cannot silently
leave a policy watching nothing.
"""

from __future__ import annotations

from typing import Final

from vitals_lake import expectations as ex

QUALITY: Final = "quality"
WAREHOUSE: Final = "warehouse"

QUARANTINED_ROWS: Final = "quarantined_rows"  # records the gate sent to quarantine
VALID_ROWS: Final = "valid_rows"  # records the gate passed to the shards (before de-duplication)
UNKNOWN_PATIENT_ROWS: Final = "unknown_patient_rows"
# Batches whose quarantined share broke the data-quality rule with action "fail".
FAILED_QUALITY_BATCHES: Final = f"fail_{ex.RULE_QUARANTINE_RATIO}"
REJECTED: Final = "rejected"  # "<table>_rejected": rows BigQuery refused, written to dead_letter


def failed_rule(rule: str) -> str:
    """The counter of one expectation's failures."""
    return f"failed_{rule}"


def warehouse_counter(table: str, what: str) -> str:
    return f"{table}_{what}"


def monitoring_names() -> dict[str, str]:
    """What ``names.json`` carries for the alert policies."""
    return {
        "quarantined_rows": QUARANTINED_ROWS,
        "valid_rows": VALID_ROWS,
        "failed_quality_batches": FAILED_QUALITY_BATCHES,
        "warehouse_rejected_suffix": "_" + REJECTED,
    }

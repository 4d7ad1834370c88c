"""monitoring.tf against what it watches: names.json's counter and log names, the runbook's sections,
and the project commands the runbook tells an operator to run."""

from __future__ import annotations

import json
import re

from tests.infra import hcl_model as h
from vitals_lake.cli import COMMANDS

MONITORING = h.TERRAFORM_DIR / "monitoring.tf"
RUNBOOK = h.REPO_ROOT / "docs" / "runbook.md"
NAMES = h.TERRAFORM_DIR / "generated" / "names.json"

# What issue #18 asks to be watched, by the policy keys of monitoring.tf.
REQUIRED_POLICIES = {
    "dataflow_system_lag",
    "dataflow_data_freshness",
    "dataflow_failed",
    "readings_backlog",
    "readings_dead_letters",
    "alert_dead_letters",
    "alert_trigger_backlog",
    "notifier_gave_up",
    "quarantine_ratio",
    "quality_fail_rule",
    "warehouse_dead_letters",
    "scheduled_job_failed",
    "maintenance_not_running",
    "admissions_not_running",
}


def test_every_required_policy_is_declared() -> None:
    declared = set(re.findall(r"^\s{4,6}(\w+) = \{$", MONITORING.read_text(), flags=re.M))
    assert declared >= REQUIRED_POLICIES, REQUIRED_POLICIES - declared


def test_the_names_the_policies_select_are_generated_from_the_code() -> None:
    text = MONITORING.read_text()
    monitoring = json.loads(NAMES.read_text())["monitoring"]
    used = {
        "pipeline_counters": set(re.findall(r"local\.counters\.(\w+)", text)),
        "notifier_logs": set(re.findall(r"local\.notifier_log\.(\w+)", text)),
    }
    for section, keys in used.items():
        assert keys, section
        assert keys <= set(monitoring[section]), (section, keys - set(monitoring[section]))


def test_every_policy_points_at_a_section_of_the_runbook() -> None:
    text = MONITORING.read_text()
    sections = set(re.findall(r'section\s*=\s*"([\w-]+)"', text))
    sections |= set(re.findall(r'the section \\"([\w-]+)\\"', text))
    anchors = set(re.findall(r'<a id="([\w-]+)"></a>', RUNBOOK.read_text()))
    assert len(sections) >= 8
    assert sections <= anchors, sections - anchors


def test_the_runbook_runs_only_commands_that_exist() -> None:
    named = set(re.findall(r"vitals-lake ([a-z][a-z-]+)", RUNBOOK.read_text()))
    assert {"redrive", "replay-dead-letters", "recovery", "quarantine"} <= named
    assert named <= set(COMMANDS), named - set(COMMANDS)

"""checkov (its own venv, offline) over infra/terraform: zero failures, every skip with its reason, and the
project's custom policies (Dataflow Flex Template job, Secret Manager access, the function) in force."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.infra import hcl_model as h

CHECKOV_DIR = h.REPO_ROOT / "infra" / "checkov"
CUSTOM_POLICIES = {"CKV2_VITALS_1", "CKV2_VITALS_2", "CKV2_VITALS_3", "CKV2_VITALS_4"}
_INLINE_SKIP = re.compile(r"#checkov:skip=(\w+):(.+)$")


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vitals_infra_checkov", CHECKOV_DIR / "checkov_venv.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["vitals_infra_checkov"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ck() -> ModuleType:
    return _load()


@pytest.fixture(scope="module")
def venv(ck):
    try:
        return ck.ensure_venv()
    except ck.CheckovError as exc:
        pytest.fail(f"checkov's venv could not be built: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def report(ck, venv):
    return ck.run(venv)


def test_checkov_finds_no_failure(report, ck):
    assert report.parsing_errors == []
    assert report.failures == [], "\n".join(ck.describe(r) for r in report.failures)
    assert report.passed >= 80
    assert report.stale_skips == set(), f"skips.json lists checks that fail nowhere: {report.stale_skips}"


def test_the_custom_policies_ran(report):
    assert report.check_ids >= CUSTOM_POLICIES


def test_every_skip_has_its_reason_in_skips_json(report, ck):
    doc = json.loads((CHECKOV_DIR / "skips.json").read_text())
    assert ck.load_skips() == doc["skips"]
    inline: dict[str, dict[str, str]] = {}
    for tf in h.TERRAFORM_DIR.rglob("*.tf"):
        module = h.parse_file(tf)
        text = tf.read_text().splitlines()
        for block in module.get("resource", []):
            for rtype, named in block.items():
                for name in named:
                    start = next(
                        i for i, line in enumerate(text) if line.startswith(f'resource "{rtype}" "{name}"')
                    )
                    end = next(i for i in range(start + 1, len(text)) if text[i] == "}")
                    for line in text[start:end]:
                        if m := _INLINE_SKIP.search(line.strip()):
                            inline.setdefault(f"{rtype}.{name}", {})[m.group(1)] = m.group(2).strip()
    assert inline == doc["resource_skips"], (
        "inline #checkov:skip comments and skips.json resource_skips differ"
    )
    for result in report.inline_skipped:
        assert ck.inline_reason(result) == doc["resource_skips"][result["resource"]][result["check_id"]]
    for result in report.listed_skipped:
        assert result["check_id"] in doc["skips"]
    assert report.skipped == len(report.listed_skipped) + len(report.inline_skipped) > 0


def test_the_custom_policies_catch_what_they_are_for(ck, venv, tmp_path):
    (tmp_path / "bad.tf").write_text(
        """
resource "google_dataflow_flex_template_job" "bad" {
  name                    = "bad"
  container_spec_gcs_path = "gs://b/t.json"
  on_delete               = "cancel"
}

resource "google_project_iam_member" "bad" {
  project = "p"
  role    = "roles/secretmanager.secretAccessor"
  member  = "serviceAccount:x@p.iam.gserviceaccount.com"
}

resource "google_secret_manager_secret" "bad" {
  secret_id = "s"
  replication {
    auto {}
  }
}

resource "google_cloudfunctions2_function" "bad" {
  name     = "f"
  location = "europe-west2"
  service_config {
    ingress_settings = "ALLOW_ALL"
  }
}
"""
    )
    result = ck.run(venv, tmp_path, {})
    failed = {r["check_id"] for r in result.failures}
    assert failed >= CUSTOM_POLICIES, CUSTOM_POLICIES - failed


def test_the_venv_is_stamped_and_git_ignored(ck, venv):
    assert venv.is_built()
    assert (venv.path / ".gitignore").read_text().splitlines()[-1] == "*"
    assert ck.ensure_venv().path == venv.path  # a second call only reads the stamp
    assert Path(ck.command(venv)[0]) == venv.executable
    assert "--skip-download" in ck.command(venv)

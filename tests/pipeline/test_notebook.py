"""ml/model_training.ipynb runs top to bottom on a small cohort, and is committed without outputs.

The kernel is the interpreter running the tests: a kernelspec written into a temporary directory
(``ipykernel.kernelspec.write_kernel_spec``, whose argv is ``sys.executable``) is put first on
``JUPYTER_PATH``, so a user-level or system ``python3`` kernelspec pointing at another Python can't be
picked up instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

from vitals_lake.model import artifact
from vitals_lake.model.detectors import DETECTORS

NOTEBOOK = Path(__file__).resolve().parents[2] / "ml" / "model_training.ipynb"
PLOT_CELLS = (
    "plot-episode-counts",
    "plot-patient",
    "plot-deviation",
    "plot-separation",
    "plot-scores",
    "plot-roc",
)
# Small, but the held-out patients and the training patients' validation share both hold clinical
# episodes (AUROC and the model choice of ml.train / ml.evaluate need them). ~30 s on 2 CPUs.
SMALL_COHORT = {
    "VITALS_NB_PATIENTS": "20",
    "VITALS_NB_HOURS": "4",
    "VITALS_NB_INTERVAL": "60",
    "VITALS_NB_EPISODE_RATE": "0.6",
    "VITALS_NB_SEED": "42",
}


def _text(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _has_image(cell: nbformat.NotebookNode) -> bool:
    return any("image/png" in o.get("data", {}) for o in cell.outputs)


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, nbformat.NotebookNode], Path]:
    tmp = tmp_path_factory.mktemp("notebook")
    out = tmp / "out"
    kernels = tmp / "jupyter" / "kernels"
    write_kernel_spec(kernels / "python3")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)", id="which-python"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(tmp / "jupyter"))
        mp.delenv("MPLBACKEND", raising=False)
        mp.setenv("MLFLOW_TRACKING_URI", (tmp / "mlruns").as_uri())  # in case training ever tracks runs
        mp.setenv("VITALS_NB_OUT", str(out))
        mp.delenv("VITALS_NB_MODEL", raising=False)  # the notebook's default: ml.train's own choice
        for key, value in SMALL_COHORT.items():
            mp.setenv(key, value)
        NotebookClient(
            nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp)}}
        ).execute()  # raises CellExecutionError on the first failing cell
    return {cell.id: cell for cell in nb.cells}, out


def test_the_kernel_is_this_venv(executed):
    cells, _ = executed
    assert _text(cells["which-python"]).strip() == sys.executable


def test_every_cell_ran_without_error(executed):
    cells, _ = executed
    for cell_id, cell in cells.items():
        if cell.cell_type == "code":
            assert cell.execution_count is not None, cell_id
            assert not [o for o in cell.outputs if o.output_type == "error"], cell_id


def test_plots_are_rendered_inline(executed):
    cells, _ = executed
    for cell_id in PLOT_CELLS:
        assert _has_image(cells[cell_id]), cell_id


def test_evaluation_table_and_bars_are_printed(executed):
    cells, _ = executed
    table = _text(cells["evaluation-table"])
    assert "AUROC" in table and "FA/patient-day" in table
    for name in ("news2", "zscore", "isolation_forest", "autoencoder"):
        assert f"\n{name} " in table, name
    assert _text(cells["bars"]).startswith("{")


def test_the_artifact_is_written_and_verified(executed):
    cells, out = executed
    meta = json.loads((out / "model" / artifact.METADATA_FILE).read_text())
    assert meta["model"] in DETECTORS
    printed = _text(cells["artifact"])
    assert meta["model_version"] in printed and meta["sha256"] in printed
    assert artifact.load(out / "model").version == meta["model_version"]


def test_committed_notebook_has_no_outputs_and_a_parameters_cell():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert "parameters" in code[0].metadata.get("tags", [])

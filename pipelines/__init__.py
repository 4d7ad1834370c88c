"""The Beam pipeline and the jobs around it (bridge, admissions, replay, recovery)."""

from pipelines.arrow_pickling import register as _register_arrow_pickling

_register_arrow_pickling()

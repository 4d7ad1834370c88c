"""``python -m vitals_lake``: the ``vitals-lake`` command (:mod:`vitals_lake.cli`) without installing it."""

from __future__ import annotations

import sys

from vitals_lake.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""python -m bench [--only NAME ...] [--quick] [--out var/bench/results.json]"""

from bench.runner import main

raise SystemExit(main())

"""The alert notifier's parts: event parsing, routing config, rendering, delivery, retries and state.

``main.py`` (the Cloud Function entry point) wires them together; nothing here imports ``vitals_lake``,
so the function's directory deploys on its own.
"""

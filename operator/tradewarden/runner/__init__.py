"""The runner: one process per bot (``tradewarden runner --bot NS/NAME``).

It reads its runtime ConfigMap and the KillSwitches by watching the API server, trades through the
exchange door (signals, paper or live), enforces the risk limits, journals everything, and reports
through its Lease and /metrics. It never imports kopf: it must keep working while the operator is down.
"""

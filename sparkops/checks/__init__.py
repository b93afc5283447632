"""Diagnostics (`inv check`, and `up`'s preflight): named checks with a status (ok, warn,
fail), the evidence and a fix. Pure check functions over (config, node facts) in quick.py,
network.py and deploy.py; the ones that run something on the nodes in reach.py (ping over
RoCE), logs.py (the deployment's logs) and nccl.py (the all-reduce test); runner.py puts
them together and render.py prints and saves the report."""
from sparkops.checks.result import CLUSTER, FAIL, OK, WARN, Check

__all__ = ["CLUSTER", "FAIL", "OK", "WARN", "Check"]

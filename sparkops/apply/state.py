"""What is deployed, as `up` recorded it on the head (`state.json`, written by the plan's last
step): the profile, its config hash, the API's URL, the runtime, backend and nodes. Every
verb that asks "what is serving?" reads it here."""
from __future__ import annotations

import json

from sparkops.facts.session import ClusterSession
from sparkops.plan.context import contexts


def read_state(session: ClusterSession) -> dict | None:
    """The head's state.json, or None when nothing is deployed (or the head is unreachable)."""
    if not session.head_reachable():
        return None
    head = contexts(session.cfg, session.facts, all_nodes=True)[0]
    res = session.head.run(["cat", head.state_file], timeout=30)
    if not res.ok:
        return None
    try:
        record = json.loads(res.stdout)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None

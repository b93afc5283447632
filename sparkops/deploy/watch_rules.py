"""What `inv watch` concludes from one sample and the ones before it. Pure: samples in, verdict
out, so every rule is tested from recorded samples.

A sample: {"t": seconds, "problems": [...] (apply/health.assess), "unreachable": [nodes],
"metrics": parse_metrics(...) or None}. Verdicts:
  ok        whole, and either idle or making tokens
  stuck     requests running, and no token generated for `stall_s` (an engine that hangs
            while /health stays green; the 1-token probe usually says so first)
  failed    something missing: a service, a node, the API's answer
Whether to restart: only `failed`/`stuck`, never while a node is unreachable (a restart cannot
bring a node back; it would only stop what still runs), and at most `max_per_hour` times.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    state: str  # ok, stuck, failed
    reasons: tuple[str, ...] = ()


def judge(sample: dict, history: list[dict], stall_s: float) -> Verdict:
    if sample["problems"]:
        return Verdict("failed", tuple(sample["problems"]))
    stalled = _stalled_for(sample, history)
    if stalled is not None and stalled >= stall_s:
        running = int((sample.get("metrics") or {}).get("running") or 0)
        return Verdict("stuck", (f"{running} request(s) running and no token generated for {stalled:.0f}s",))
    return Verdict("ok")


def _stalled_for(sample: dict, history: list[dict]) -> float | None:
    """Seconds since the token counter last moved while requests kept running; None when idle
    or unknown."""
    m = sample.get("metrics") or {}
    if not m.get("running") or m.get("generation_tokens") is None:
        return None
    since = sample["t"]
    for old in reversed(history):
        om = old.get("metrics") or {}
        if not om.get("running") or om.get("generation_tokens") != m["generation_tokens"]:
            break
        since = old["t"]
    return sample["t"] - since


@dataclass
class RestartPolicy:
    max_per_hour: int = 3
    backoff_s: tuple[float, ...] = (10.0, 30.0, 60.0, 120.0)

    def decide(self, verdict: Verdict, sample: dict, restarts: list[float], now: float) -> tuple[bool, str]:
        """(restart now?, why or why not)."""
        if verdict.state == "ok":
            return False, "whole"
        if sample.get("unreachable"):
            return False, (f"not restarting while {', '.join(sample['unreachable'])} cannot be reached: "
                           "a restart cannot bring a node back, only stop what still runs")
        recent = [t for t in restarts if now - t < 3600]
        if len(recent) >= self.max_per_hour:
            return False, f"not restarting: {len(recent)} restarts in the last hour (the cap is {self.max_per_hour})"
        if recent:
            wait = self.backoff_s[min(len(recent) - 1, len(self.backoff_s) - 1)]
            if now - recent[-1] < wait:
                return False, f"backing off: the last restart was {now - recent[-1]:.0f}s ago (waiting {wait:.0f}s)"
        return True, f"restart {len(recent) + 1} this hour"

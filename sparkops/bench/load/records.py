"""What one benchmark run observed: per-request records plus the run's settings.

Kept free of I/O and third-party imports so that `metrics` can be computed from a saved run
(JSON) on any machine, and tested from hand-written records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RequestRecord:
    """One request as the client saw it. Times are seconds.

    `dispatched_s` and `start_s` are relative to the run's t0 (the first dispatch);
    `events_s` are relative to `start_s`, one per SSE event whose `choices` was non-empty,
    and `text_events[i]` says whether that event carried content/reasoning text (False for a
    role-only or empty chunk).
    """

    index: int
    prompt_id: str
    max_tokens: int
    success: bool = False
    error: str = ""
    dispatched_s: float = 0.0
    start_s: float = 0.0
    events_s: list[float] = field(default_factory=list)
    text_events: list[bool] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    output_chars: int = 0
    http_status: int | None = None
    response_id: str | None = None

    @property
    def client_queue_s(self) -> float:
        """Time spent waiting for the client's concurrency semaphore (vLLM: client_queue_time)."""
        return self.start_s - self.dispatched_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestRecord:
        return cls(**data)


@dataclass
class BenchRun:
    """A finished run. `settings` never holds the API key (only whether one was used)."""

    settings: dict[str, Any]
    records: list[RequestRecord]
    duration_s: float
    # perf_counter() at t0: lets a same-host observer (the synthetic server) line up its
    # clock with ours; meaningless on another machine.
    t0_perf: float = 0.0
    started_at: str = ""
    warmup: RequestRecord | None = None
    # The client's own health during the run: max_stall_ms, cpu_wait_ms (StallWatch) and
    # timestamps ("kernel" or "event loop"). Empty for runs recorded before it existed or by another client.
    client: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": dict(self.settings),
            "records": [r.to_dict() for r in self.records],
            "duration_s": self.duration_s,
            "t0_perf": self.t0_perf,
            "started_at": self.started_at,
            "warmup": self.warmup.to_dict() if self.warmup else None,
            "client": dict(self.client),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchRun:
        warmup = data.get("warmup")
        return cls(
            settings=dict(data["settings"]),
            records=[RequestRecord.from_dict(r) for r in data["records"]],
            duration_s=data["duration_s"],
            t0_perf=data.get("t0_perf", 0.0),
            started_at=data.get("started_at", ""),
            warmup=RequestRecord.from_dict(warmup) if warmup else None,
            client=dict(data.get("client") or {}),
        )

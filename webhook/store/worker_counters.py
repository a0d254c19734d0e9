"""What the workers did, counted in Redis so /metrics on any web replica reports the sum
over every worker on every host (Prometheus scrapes the web; workers need no port)."""

from __future__ import annotations

from typing import cast

from redis import Redis

from webhook.store import keys

# counter family -> the label its field carries after the colon ("family:label")
FAMILIES = {
    "reconciled": "state",  # a reconciliation ended with the session in this state
    "storage_check": "outcome",  # verified, missing, or the storage problem code
    "agora_query": "status",  # HTTP status of our query to Agora (0: no answer)
    "alert_raised": "kind",
    "alert_resolved": "kind",
}


class WorkerCounters:
    """Monotonic counters by family and label."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def count(self, family: str, label: str) -> None:
        self.redis.hincrby(keys.worker_counters(), f"{family}:{label}", 1)

    def read(self) -> dict[str, dict[str, int]]:
        """family -> label -> count."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(keys.worker_counters()))
        found: dict[str, dict[str, int]] = {}
        for field, value in raw.items():
            family, _, label = field.decode().partition(":")
            found.setdefault(family, {})[label] = int(value)
        return found

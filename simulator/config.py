"""The simulator's settings: who it answers to, where callbacks and files go, how fast time runs."""

from __future__ import annotations

from dataclasses import dataclass

# The recorded users when neither the start request nor the faults name any: Agora's examples.
DEFAULT_PUBLISHERS = ("57297", "10230")
# NCS resends immediately, then at growing intervals, three retries at most (FACTS.md 5.1).
# The intervals are not documented: these are ours, in real seconds before --time-scale.
RETRY_INTERVALS_S = (0.0, 5.0, 15.0)


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything one simulator instance needs; time_scale 0.01 plays a minute in 0.6 s."""

    app_id: str
    customer_id: str
    customer_secret: str
    callback_url: str
    callback_secret: str
    time_scale: float = 1.0
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    publishers: tuple[str, ...] = DEFAULT_PUBLISHERS
    retry_intervals_s: tuple[float, ...] = RETRY_INTERVALS_S
    delivery_timeout_s: float = 10.0  # NCS waits 10 s for the 200; not scaled
    stop_timeout_s: float = 20.0  # synchronous stop answers 206/65 past this; not scaled
    # After session_exit a stop still gets 400 code 49 ("already exiting") for this long (Agora
    # seconds), then 404 "failed to find worker". Agora documents both answers, not the switch.
    forget_after_s: float = 120.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError("time_scale must be positive")

    def scaled(self, seconds: float) -> float:
        """Real seconds to wait for `seconds` of simulated Agora time."""
        return seconds * self.time_scale

"""Settings: everything the service reads from its environment, parsed once."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit

from redis.connection import parse_url

from webhook.errors import ConfigError

Environment = Literal["production", "development"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# Agora refreshes notifyMs on every attempt (so a genuine callback is seconds old), but its
# own tip to dedupe on noticeId + notifyMs reads as if a resend kept it; resends stop after
# three retries at undocumented, growing intervals. A day covers any such schedule, and the
# dedupe window (7 d) still covers the whole age window (see docs/security.md); a shorter
# dedupe window shortens this default with it.
_DEFAULT_MAX_NOTIFY_AGE = timedelta(days=1)
# Ten years: longer is a typo, and timedelta overflows not far beyond.
_MAX_SECONDS = 10 * 365 * 24 * 3600


def _seconds(env: Mapping[str, str], name: str, default: float) -> timedelta:
    raw = env.get(name, "").strip()
    if not raw:
        return timedelta(seconds=default)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    # float() also takes "nan", "inf" and 1e400; none of them is a duration.
    if not math.isfinite(value) or value <= 0 or value > _MAX_SECONDS:
        raise ConfigError(f"{name} must be a positive number of seconds, got {raw!r}")
    return timedelta(seconds=value)


def _seconds_or_off(
    env: Mapping[str, str], name: str, default: timedelta | None
) -> timedelta | None:
    """A duration that 0 switches off (None); blank means the default."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        if float(raw) == 0:
            return None
    except ValueError:
        pass  # _seconds names the variable in its error
    return _seconds(env, name, 0)


def integer_setting(env: Mapping[str, str], name: str, default: int, *, minimum: int = 1) -> int:
    """A whole-number variable (blank: the default); gunicorn's settings are read with it too.

    Raises:
        ConfigError: not a whole number, or below minimum."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _redis_url(env: Mapping[str, str], name: str, default: str) -> str:
    """A Redis URL, checked here so a typo stops the start with its name, not a traceback
    from the first connection."""
    url = env.get(name, "").strip() or default
    if url and not url.lower().startswith(_REDIS_SCHEMES):
        # Only what comes before the first colon: a malformed URL may hold a password that
        # redact_url() cannot find.
        raise ConfigError(
            f"{name} must be a redis://, rediss:// or unix:// URL; "
            f"got one beginning {url.partition(':')[0]!r}"
        )
    if not url:
        return url
    # What redis-py would otherwise find at the first connection (a traceback, then exit 3
    # in gunicorn), or not at all: a database path that is not a number means database 0.
    try:
        parse_url(url)  # type: ignore[no-untyped-call]  # unannotated upstream
    except ValueError:
        raise ConfigError(
            f"{name} is not a URL redis-py can use: its port must be a number from 0 to 65535 "
            "and its query options (db=, socket_timeout=, ...) numbers"
        ) from None
    database = urlsplit(url).path.strip("/")
    if not url.lower().startswith("unix://") and database and not database.isdigit():
        raise ConfigError(
            f"{name}: the database (the path after the host and port) must be a whole "
            "number, such as /0; redis-py would silently use database 0"
        )
    return url


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


# Three tries of 15 s reads, each after a connect of up to 3 s, fit in a job's 60 s
# (webhook.jobs.JOB_TIMEOUT_S; a test holds the two together).
MAX_STORAGE_READ_TIMEOUT_S = 15


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment, parsed once."""

    redis_url: str = DEFAULT_REDIS_URL
    # Several at once so a secret can be rotated without dropping callbacks.
    callback_secrets: tuple[str, ...] = ()
    environment: Environment = "production"
    max_body_bytes: int = 256 * 1024
    retention: timedelta = timedelta(days=30)
    # Agora resends keep the noticeId; a resend inside this window is answered "duplicate".
    dedupe_window: timedelta = timedelta(days=7)
    # A signed callback whose notifyMs is older than this is refused (400), so a captured
    # callback replayed after the dedupe window has forgotten its noticeId cannot be stored
    # again. None: not checked. from_env() defaults to a day in production and to off in
    # development; a Settings built in code (tests) checks only when told to.
    max_notify_age: timedelta | None = None
    # How far ahead of our clock notifyMs may be (Agora's clock and ours disagree a little).
    notify_clock_skew: timedelta = timedelta(minutes=5)
    rejected_max: int = 1000
    # Refused requests that failed verification, per client address and window: beyond
    # the limit they are answered 429 and only a sample is kept. 0: no limit.
    bad_signature_limit: int = 30
    bad_signature_window: timedelta = timedelta(minutes=1)
    # Agora waits 10 s for an answer; a slow Redis must turn into a 503 well before that.
    redis_timeout: timedelta = timedelta(seconds=0.6)
    queue_name: str = "agora"
    proxy_hops: int = 0
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"
    # "notable": a line for every callback that is not a routine first delivery (duplicates,
    # redundant copies, invalid ones, unknown types) and for every refusal; "all": a line
    # for every callback too. Metrics count every callback either way.
    log_callbacks: Literal["notable", "all"] = "notable"
    # Tokens app servers and operators present as "Authorization: Bearer <token>".
    api_tokens: tuple[str, ...] = ()
    # Agora's REST API, for query polling (optional: without credentials we never poll).
    agora_api_base: str = "https://api.sd-rtn.com"
    agora_app_id: str = ""
    agora_customer_id: str = ""
    agora_customer_secret: str = ""
    # Reconciliation deadlines (defaults from Agora's docs and our five-minute promise).
    backup_deadline: timedelta = timedelta(minutes=5)
    upload_status_deadline: timedelta = timedelta(minutes=5)
    recorder_start_deadline: timedelta = timedelta(minutes=2)
    # Silence tolerated beyond maxIdleTime before an active session is called stale; Agora
    # sends uploading_progress every minute while it records.
    stale_margin: timedelta = timedelta(minutes=3)
    # How often an unverified backup is looked for again after its alert.
    backup_recheck: timedelta = timedelta(minutes=5)
    # How often the sweep walks the active sessions, and how often they are polled.
    sweep_interval: timedelta = timedelta(seconds=60)
    query_interval: timedelta = timedelta(minutes=2)
    # How long query may answer 404 "failed to find worker" before the task counts as gone:
    # an HA migration takes up to 90 s and answers 404 meanwhile (FACTS §5.4).
    migration_grace: timedelta = timedelta(seconds=90)
    storage_config_path: str = ""
    # One read from a customer's bucket. A storage check tries three times and must finish
    # inside its job's timeout; a longer read keeps a worker on a dead endpoint longer.
    storage_read_timeout: timedelta = timedelta(seconds=10)
    # RQ worker class: "simple" (in-process: 3x the jobs/s, measured in make bench) or
    # "fork" (a work horse per job: a crashing job cannot take the worker with it).
    worker_class: Literal["fork", "simple"] = "simple"
    # Redis Sentinel: when set, the primary is the one these sentinels name for
    # redis_sentinel_master (REDIS_URL then gives only the database and credentials).
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = ""
    # A callback is confirmed (200) only once this many replicas have it too (Redis WAIT):
    # a failover then cannot lose it. 0: the primary's write (and its AOF) is enough.
    store_min_replicas: int = 0
    store_replica_timeout: timedelta = timedelta(milliseconds=500)
    # Redis Cluster for the event store (callbacks, summaries, their indexes): any node's
    # URL. Queues, lifecycle and alerts stay on REDIS_URL (or the Sentinel primary).
    store_cluster_url: str = ""

    @property
    def polls_agora(self) -> bool:
        return bool(self.agora_app_id and self.agora_customer_id and self.agora_customer_secret)

    @property
    def accepts_unsigned(self) -> bool:
        """Only a development instance without any secret takes unsigned callbacks."""
        return self.environment == "development" and not self.callback_secrets

    def __repr__(self) -> str:
        # Never let a secret reach a log line through repr().
        secrets = f"<{len(self.callback_secrets)} secret(s)>"
        # (api tokens, the customer secret and storage credentials are left out entirely)
        return (
            f"Settings(redis_url={redact_url(self.redis_url)!r}, callback_secrets={secrets}, "
            f"environment={self.environment!r}, queue_name={self.queue_name!r})"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Parse and check the environment.

        Raises:
            ConfigError: a value is malformed, production has no callback secret, or the
                dedupe window is shorter than the notifyMs age window it must cover.
        """
        env = os.environ if env is None else env
        environment = env.get("APP_ENV", "production").strip().lower() or "production"
        if environment not in ("production", "development"):
            raise ConfigError(f"APP_ENV must be production or development, got {environment!r}")
        secrets = tuple(
            s.strip() for s in env.get("AGORA_CALLBACK_SECRETS", "").split(",") if s.strip()
        )
        if environment == "production" and not secrets:
            raise ConfigError(
                "AGORA_CALLBACK_SECRETS must list at least one secret in production "
                "(set APP_ENV=development to accept unsigned callbacks locally)"
            )
        dedupe_window = _seconds(
            env, "AGORA_DEDUPE_WINDOW_SECONDS", timedelta(days=7).total_seconds()
        )
        skew = _seconds(env, "AGORA_NOTIFY_CLOCK_SKEW_SECONDS", 300)
        max_notify_age = _max_notify_age(env, environment, dedupe_window, skew)
        log_format = env.get("LOG_FORMAT", "").strip().lower() or (
            "json" if environment == "production" else "text"
        )
        if log_format not in ("json", "text"):
            raise ConfigError(f"LOG_FORMAT must be json or text, got {log_format!r}")
        log_level = env.get("LOG_LEVEL", "").strip().upper() or "INFO"
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"LOG_LEVEL must be a logging level name, got {log_level!r}")
        settings = cls(
            redis_url=_redis_url(env, "REDIS_URL", DEFAULT_REDIS_URL),
            callback_secrets=secrets,
            environment=environment,  # type: ignore[arg-type]  # checked against the Literal above
            max_body_bytes=integer_setting(env, "AGORA_MAX_BODY_BYTES", 256 * 1024, minimum=1024),
            retention=_seconds(env, "AGORA_RETENTION_SECONDS", timedelta(days=30).total_seconds()),
            dedupe_window=dedupe_window,
            max_notify_age=max_notify_age,
            notify_clock_skew=skew,
            rejected_max=integer_setting(env, "AGORA_REJECTED_MAX", 1000),
            bad_signature_limit=integer_setting(env, "AGORA_BAD_SIGNATURE_LIMIT", 30, minimum=0),
            bad_signature_window=_seconds(env, "AGORA_BAD_SIGNATURE_WINDOW_SECONDS", 60),
            redis_timeout=_seconds(env, "AGORA_REDIS_TIMEOUT_SECONDS", 0.6),
            queue_name=env.get("AGORA_QUEUE", "").strip() or "agora",
            proxy_hops=integer_setting(env, "AGORA_PROXY_HOPS", 0, minimum=0),
            log_format=log_format,  # type: ignore[arg-type]  # checked against the Literal above
            log_level=log_level,
            log_callbacks=_choice(env, "LOG_CALLBACKS", ("notable", "all"), "notable"),  # type: ignore[arg-type]  # one of the Literal's values
            api_tokens=_api_tokens(env, environment),
            agora_api_base=env.get("AGORA_API_BASE", "").strip() or "https://api.sd-rtn.com",
            agora_app_id=env.get("AGORA_APP_ID", "").strip(),
            agora_customer_id=env.get("AGORA_CUSTOMER_ID", "").strip(),
            agora_customer_secret=env.get("AGORA_CUSTOMER_SECRET", "").strip(),
            backup_deadline=_seconds(env, "BACKUP_DEADLINE_SECONDS", 300),
            upload_status_deadline=_seconds(env, "UPLOAD_STATUS_DEADLINE_SECONDS", 300),
            recorder_start_deadline=_seconds(env, "RECORDER_START_DEADLINE_SECONDS", 120),
            stale_margin=_seconds(env, "STALE_MARGIN_SECONDS", 180),
            backup_recheck=_seconds(env, "BACKUP_RECHECK_SECONDS", 300),
            sweep_interval=_seconds(env, "SWEEP_INTERVAL_SECONDS", 60),
            query_interval=_seconds(env, "QUERY_INTERVAL_SECONDS", 120),
            migration_grace=_seconds(env, "MIGRATION_GRACE_SECONDS", 90),
            storage_config_path=env.get("STORAGE_CONFIG", "").strip(),
            storage_read_timeout=_seconds(env, "STORAGE_READ_TIMEOUT_SECONDS", 10),
            worker_class=_choice(env, "WORKER_CLASS", ("fork", "simple"), "simple"),  # type: ignore[arg-type]  # one of the Literal's values
            redis_sentinels=_sentinels(env),
            redis_sentinel_master=env.get("REDIS_SENTINEL_MASTER", "").strip(),
            store_min_replicas=integer_setting(env, "AGORA_STORE_MIN_REPLICAS", 0, minimum=0),
            store_replica_timeout=_seconds(env, "AGORA_STORE_REPLICA_TIMEOUT_SECONDS", 0.5),
            store_cluster_url=_redis_url(env, "STORE_CLUSTER_URL", ""),
        )
        if settings.store_cluster_url and settings.store_min_replicas:
            # WAIT cannot ride along with a script routed to a slot's node.
            raise ConfigError(
                "AGORA_STORE_MIN_REPLICAS is not available with STORE_CLUSTER_URL; set "
                "min-replicas-to-write on the cluster's masters instead"
            )
        if settings.redis_sentinels and not settings.redis_sentinel_master:
            raise ConfigError("REDIS_SENTINEL_MASTER must name the primary the sentinels watch")
        if settings.store_replica_timeout > timedelta(seconds=2):
            # The WAIT comes on top of the write: both must leave time for Agora's retry.
            raise ConfigError("AGORA_STORE_REPLICA_TIMEOUT_SECONDS must be at most 2")
        if settings.storage_read_timeout > timedelta(seconds=MAX_STORAGE_READ_TIMEOUT_S):
            raise ConfigError(
                f"STORAGE_READ_TIMEOUT_SECONDS must be at most {MAX_STORAGE_READ_TIMEOUT_S}: a "
                "storage check's three reads must fit in its job's timeout"
            )
        if settings.redis_timeout > timedelta(seconds=4):
            # Two attempts must fit well inside Agora's 10 s answer window.
            raise ConfigError("AGORA_REDIS_TIMEOUT_SECONDS must be at most 4")
        _check_replay_window(settings)
        return settings


def _sentinels(env: Mapping[str, str]) -> tuple[tuple[str, int], ...]:
    """REDIS_SENTINELS: "host:port,host:port" (IPv6 hosts in brackets)."""
    found = []
    for entry in (e.strip() for e in env.get("REDIS_SENTINELS", "").split(",")):
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"REDIS_SENTINELS must be host:port,host:port..., got {entry!r}")
        found.append((host.strip("[]"), int(port)))
    return tuple(found)


def _max_notify_age(
    env: Mapping[str, str], environment: str, dedupe_window: timedelta, skew: timedelta
) -> timedelta | None:
    """AGORA_MAX_NOTIFY_AGE_SECONDS: 0 is off; blank is off in development and a day in
    production, or less when the dedupe window is shorter (explicit values that contradict
    each other are refused by _check_replay_window)."""
    default = (
        min(_DEFAULT_MAX_NOTIFY_AGE, dedupe_window - skew) if environment == "production" else None
    )
    age = _seconds_or_off(env, "AGORA_MAX_NOTIFY_AGE_SECONDS", default)
    if age is not None and age <= timedelta(0):
        # Only the shortened default gets here; a value that was set is positive.
        raise ConfigError(
            "AGORA_DEDUPE_WINDOW_SECONDS must be longer than AGORA_NOTIFY_CLOCK_SKEW_SECONDS, "
            "or a replayed callback could be stored twice "
            "(or set AGORA_MAX_NOTIFY_AGE_SECONDS=0: no age check)"
        )
    return age


def _check_replay_window(settings: Settings) -> None:
    """A replay that passes the notifyMs check must still meet its noticeId in the dedupe
    index, or a captured callback could be stored twice.

    The original arrived no earlier than notifyMs - skew (a later notifyMs is refused); a
    replay passes until notifyMs + max age. So the noticeId must be remembered for max age
    + skew after the original arrived.
    """
    if settings.max_notify_age is None:
        return
    needed = settings.max_notify_age + settings.notify_clock_skew
    if settings.dedupe_window < needed:
        raise ConfigError(
            "AGORA_DEDUPE_WINDOW_SECONDS must be at least AGORA_MAX_NOTIFY_AGE_SECONDS + "
            f"AGORA_NOTIFY_CLOCK_SKEW_SECONDS ({needed.total_seconds():g} s), got "
            f"{settings.dedupe_window.total_seconds():g} s: a replayed callback would pass the "
            "age check after its noticeId was forgotten, and be stored twice"
        )


# The tokens are compared as they are, unthrottled (docs/security.md): only their length
# keeps them from being guessed.
MIN_API_TOKEN_LENGTH = 16


def _api_tokens(env: Mapping[str, str], environment: str) -> tuple[str, ...]:
    tokens = tuple(t.strip() for t in env.get("API_TOKENS", "").split(",") if t.strip())
    short = sum(len(t) < MIN_API_TOKEN_LENGTH for t in tokens)
    if short and environment == "production":
        raise ConfigError(
            f"API_TOKENS holds {short} token(s) shorter than {MIN_API_TOKEN_LENGTH} "
            "characters; in production each must be a long random string, such as "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))' prints"
        )
    return tokens


def redact_url(url: str) -> str:
    """A Redis URL fit for logs: every password (user:password@ or ?password=) as ***."""
    url = _QUERY_PASSWORD.sub(r"\1***", url)
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if user else f"{scheme}://***@{host}"


_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)

"""configure_logging(): called once by wsgi.py, gunicorn's config and the worker."""

from __future__ import annotations

import logging.config
from collections.abc import Mapping
from typing import Any, Literal

LogFormat = Literal["json", "text"]


def access_log_target(env: Mapping[str, str]) -> str | None:
    """Where gunicorn's access log goes (GUNICORN_ACCESS_LOG: a path, or - for stdout),
    None when it is off: read by gunicorn's config and by wsgi.py's logging setup alike."""
    return env.get("GUNICORN_ACCESS_LOG") or None


class NoEmptyListeningLine(logging.Filter):
    """Drops gunicorn's "Listening at:  (pid)": with each worker on its own SO_REUSEPORT
    socket the master holds none, so gunicorn names no address; gunicorn_config's
    when_ready logs the real one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.msg == "Listening at: %s (%s)"
            and isinstance(record.args, tuple)
            and not record.args[0]
        )


def logging_config(
    log_format: LogFormat, level: str = "INFO", *, access_log: bool = False
) -> dict[str, Any]:
    """A dictConfig: one line per event, JSON in production, text in development."""
    formatter: dict[str, Any]
    if log_format == "json":
        formatter = {
            "()": "pythonjsonlogger.orjson.OrjsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
    else:
        formatter = {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {"no_empty_listening": {"()": NoEmptyListeningLine}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            # At DEBUG urllib3 logs request paths, and a Slack webhook's path is its token.
            "urllib3": {"level": "INFO"},
            "gunicorn.error": {
                "level": level,
                "handlers": ["stderr"],
                "propagate": False,
                "filters": ["no_empty_listening"],
            },
            # Off unless asked for: the service logs one richer line per callback itself,
            # and a second line per request costs real CPU.
            "gunicorn.access": {
                "level": level,
                "handlers": ["stderr"] if access_log else [],
                "propagate": False,
            },
        },
    }


def configure_logging(
    log_format: LogFormat = "json", level: str = "INFO", *, access_log: bool = False
) -> None:
    # We log one line per callback on the hot path; the logging docs' own optimisations
    # drop what we never print (caller frame lookup, thread and process names).
    logging._srcfile = None  # documented in the logging HOWTO, "Optimization"
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.config.dictConfig(logging_config(log_format, level, access_log=access_log))

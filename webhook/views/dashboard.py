"""The ops dashboard: server-rendered pages over the same stores as the read API.

No front-end build: Jinja templates, SVG drawn from webhook.charts, auto-refresh by a meta
tag. Behind a login with one of API_TOKENS (see webhook.views.auth).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError
from redis.exceptions import RedisError

from webhook.alerts import KINDS
from webhook.charts import TRAFFIC_SERIES, timeline, traffic_chart
from webhook.extensions import current_alerts, current_queue, current_recordings, current_store
from webhook.metrics import recent_workers
from webhook.reports import recording_document, session_page
from webhook.schemas import ALERT_QUERY_SCHEMA, RECORDING_LIST_QUERY_SCHEMA, STATES
from webhook.store import now_ms
from webhook.views import auth
from webhook.views.errors import store_error

logger = logging.getLogger(__name__)
bp = Blueprint("dashboard", __name__, url_prefix=auth.DASHBOARD_PREFIX)

# Pages reload themselves this often (seconds); ?refresh=0 turns it off.
REFRESH_S = 15
# The session page draws at most this many of the newest events.
TIMELINE_EVENTS = 2000
PAGE_SIZE = 50


@bp.before_request
def require_login() -> ResponseReturnValue | None:
    if request.endpoint in ("dashboard.login_form", "dashboard.login"):
        return None
    if not auth.logged_in():
        return redirect(url_for("dashboard.login_form", next=request.full_path))
    if request.method == "POST" and not auth.check_csrf(request.form.get("csrf")):
        return render_template("dashboard/error.html", message="The form has expired: reload "
                               "the page and try again."), 400  # fmt: skip
    return None


# Every page: no script, no frame, no other origin. Inline styles only (the base template's
# <style> and the progress bars' widths). Framed by another site, the Acknowledge and Log
# out buttons could be clicked for a logged-in operator; cached, a page would outlive the
# logout.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@bp.after_request
def add_security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


@bp.errorhandler(RedisError)
def store_unavailable(err: RedisError) -> ResponseReturnValue:
    """Redis down or stalled: a page saying so (and to retry), not the API's JSON."""
    logger.error("store_unavailable: %s: %s", type(err).__name__, err)
    message = f"{store_error(err).message.capitalize()}: this page reloads by itself."
    page = render_template("dashboard/error.html", message=message)
    return page, 503, {"Retry-After": "5"}


@bp.app_context_processor
def page_globals() -> dict[str, Any]:
    refresh = request.args.get("refresh", str(REFRESH_S))
    return {"csrf_token": auth.csrf_token, "refresh_s": refresh if refresh.isdigit() else "",
            "now_ms": now_ms()}  # fmt: skip


@bp.get("/login")
def login_form() -> ResponseReturnValue:
    return render_template("dashboard/login.html", next=_safe_next(request.args.get("next")))


@bp.post("/login")
def login() -> ResponseReturnValue:
    target = _safe_next(request.form.get("next"))
    if not auth.login(request.form.get("token", "")):
        return render_template("dashboard/login.html", next=target,
                               error="That token is not valid."), 401  # fmt: skip
    return redirect(target)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    auth.logout()
    return redirect(url_for("dashboard.login_form"))


@bp.get("/")
def overview() -> ResponseReturnValue:
    """Traffic per minute by outcome, what is wrong now, whether the pipeline keeps up."""
    now = now_ms()
    traffic = traffic_chart(current_store().outcomes_per_minute(now, minutes=60))
    active = current_alerts().in_state("open", limit=1000)
    acknowledged = current_alerts().in_state("acknowledged", limit=1000)
    by_kind = Counter((a.kind, a.severity, a.state) for a in active + acknowledged)
    queue = current_queue()
    pipeline = {
        "queue_depth": queue.count,
        # A read only: RQ's .count cleans the registry first, a write (see webhook.metrics).
        "failed_jobs": queue.failed_job_registry.get_job_count(cleanup=False),
        "workers_alive": recent_workers(current_recordings().redis),
    }
    return render_template(
        "dashboard/overview.html", traffic=traffic, series=TRAFFIC_SERIES,
        alerts_by_kind=sorted(by_kind.items(), key=lambda item: (-item[1], item[0])),
        pipeline=pipeline, totals=current_store().stats(), autorefresh=True,
    )  # fmt: skip


@bp.get("/sessions")
def sessions() -> ResponseReturnValue:
    """Sessions by last activity, or by when they entered a state; filters and pages."""
    args = {k: v for k, v in request.args.items() if v and k in ("state", "cname", "cursor")}
    try:
        query = RECORDING_LIST_QUERY_SCHEMA.load(args | {"limit": PAGE_SIZE})
    except ValidationError as err:
        return render_template("dashboard/error.html", message=_explain(err)), 400
    rows, next_cursor = session_page(current_store(), current_recordings(), query)
    return render_template(
        "dashboard/sessions.html",
        rows=rows,
        states=STATES,
        query=args,
        next_cursor=next_cursor,
        autorefresh=True,
    )


@bp.get("/sessions/<sid>")
def session(sid: str) -> ResponseReturnValue:
    """One recording: summary, the events over time, the app's calls, alerts, files."""
    store = current_store()
    document = recording_document(sid, store, current_recordings(), current_alerts())
    if document is None:
        return render_template("dashboard/error.html",
                               message=f"No recording {sid!r} is known."), 404  # fmt: skip
    events = store.events(sid, latest=TIMELINE_EVENTS)
    return render_template(
        "dashboard/session.html", recording=document, chart=timeline(events),
        shown_events=len(events), autorefresh=True,
    )  # fmt: skip


@bp.get("/alerts")
def alerts() -> ResponseReturnValue:
    """Alerts in one state (open by default), with acknowledge buttons."""
    args = {k: v for k, v in request.args.items() if v and k in ("state", "kind")}
    try:
        query = ALERT_QUERY_SCHEMA.load(args)
    except ValidationError as err:
        return render_template("dashboard/error.html", message=_explain(err)), 400
    found = current_alerts().in_state(query["state"], limit=query["limit"])
    if query.get("kind"):
        found = [a for a in found if a.kind == query["kind"]]
    return render_template(
        "dashboard/alerts.html", alerts=found, query=args, kinds=sorted(KINDS),
        states=("open", "acknowledged", "resolved"), autorefresh=True,
    )  # fmt: skip


@bp.post("/alerts/<alert_id>/ack")
def acknowledge(alert_id: str) -> ResponseReturnValue:
    alert = current_alerts().acknowledge(alert_id, now_ms=now_ms())
    if alert is None:
        return render_template("dashboard/error.html",
                               message=f"No alert {alert_id!r}."), 404  # fmt: skip
    return redirect(_safe_next(request.form.get("next")))


def _safe_next(target: str | None) -> str:
    """Only a path inside the dashboard: a login link must not send anyone elsewhere.
    Nor a control character: urlsplit drops CR and LF, and werkzeug refuses them in the
    Location header, with a 500."""
    if target and target.isprintable():
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and parts.path.startswith("/dashboard"):
            return target
    return url_for("dashboard.overview")


def _explain(err: ValidationError) -> str:
    messages = err.messages if isinstance(err.messages, dict) else {"query": err.messages}
    return "; ".join(f"{name}: {' '.join(map(str, problems))}"
                     for name, problems in messages.items())  # fmt: skip


@bp.app_template_filter("when")
def when(ms: int | None) -> str:
    """UTC wall time of a Unix-ms instant."""
    if ms is None:
        return "—"
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        # Agora's sendts is stored as sent, signed but unchecked: show what it says.
        return f"{ms} ms (not a date)"


@bp.app_template_filter("age")
def age(ms: int | None) -> str:
    """How long ago, coarsely: "42 s", "7 min", "3 h", "2 d"."""
    if ms is None:
        return "—"
    seconds = max(0, (now_ms() - ms) // 1000)
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"

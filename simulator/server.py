"""The simulator's HTTP API: Agora's REST routes (Basic auth) plus /_simulator control routes.

Routes are thin: they check credentials, parse JSON and call CloudRecordingService;
ApiError becomes Agora's JSON error body. SimulatorServer runs the app on a thread.
"""

from __future__ import annotations

import hmac
import logging
import threading
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

from simulator.faults import FaultError, Faults
from simulator.service import ApiError, CloudRecordingService, invalid_parameters

logger = logging.getLogger(__name__)

PREFIX = "/v1/apps/<app_id>/cloud_recording"
TASK = PREFIX + "/resourceid/<resource_id>/sid/<sid>/mode/<any(individual, mix, web):mode>"

rest = Blueprint("rest", __name__)
control = Blueprint("control", __name__, url_prefix="/_simulator")


def create_app(service: CloudRecordingService) -> Flask:
    """The simulator as a WSGI app."""
    app = Flask("simulator")
    app.extensions["simulator.service"] = service
    app.register_blueprint(rest)
    app.register_blueprint(control)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    return app


def current_service() -> CloudRecordingService:
    service: CloudRecordingService = current_app.extensions["simulator.service"]
    return service


@rest.before_request
def check_credentials() -> ResponseReturnValue | None:
    """Basic auth with the customer ID and secret, then the App ID (FACTS.md 6.3)."""
    config = current_service().config
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return jsonify(message="Unauthorized"), 401
    is_customer = hmac.compare_digest(auth.username or "", config.customer_id)
    is_secret = hmac.compare_digest(auth.password or "", config.customer_secret)
    if not (is_customer and is_secret):
        return jsonify(message="Invalid authentication credentials"), 401
    if (request.view_args or {}).get("app_id") != config.app_id:
        return jsonify(message="appid is invalid"), 400
    return None


@rest.post(PREFIX + "/acquire")
def acquire(app_id: str) -> ResponseReturnValue:
    return jsonify(current_service().acquire(_json_body()))


@rest.post(PREFIX + "/resourceid/<resource_id>/mode/<any(individual, mix, web):mode>/start")
def start(app_id: str, resource_id: str, mode: str) -> ResponseReturnValue:
    status, body = current_service().start(resource_id, mode, _json_body())
    return jsonify(body), status


@rest.get(TASK + "/query")
def query(app_id: str, resource_id: str, sid: str, mode: str) -> ResponseReturnValue:
    return jsonify(current_service().query(resource_id, sid, mode))


@rest.post(TASK + "/update")
def update(app_id: str, resource_id: str, sid: str, mode: str) -> ResponseReturnValue:
    return jsonify(current_service().update(resource_id, sid, mode, _json_body()))


@rest.post(PREFIX + "/resourceid/<resource_id>/sid/<sid>/mode/mix/updateLayout")
def update_layout(app_id: str, resource_id: str, sid: str) -> ResponseReturnValue:
    return jsonify(current_service().update_layout(resource_id, sid, _json_body()))


@rest.post(TASK + "/stop")
def stop(app_id: str, resource_id: str, sid: str, mode: str) -> ResponseReturnValue:
    status, body = current_service().stop(resource_id, sid, mode, _json_body())
    return jsonify(body), status


@control.put("/faults/<cname>")
def set_faults(cname: str) -> ResponseReturnValue:
    """Replace the faults of a channel: {"faults": [...], "options": {...}}."""
    try:
        faults = Faults.from_json(request.get_json(silent=True))
    except FaultError as err:
        return jsonify(error=str(err)), 400
    current_service().faults.set(cname, faults)
    return jsonify(faults.to_json() | {"cname": cname})


@control.delete("/faults/<cname>")
def clear_faults(cname: str) -> ResponseReturnValue:
    current_service().faults.clear(cname)
    return "", 204


@control.get("/stats")
def stats() -> ResponseReturnValue:
    """Callback counts per sid (notices, sent, delivered, dropped, suppressed)."""
    return jsonify(current_service().stats())


def _json_body() -> Any:
    body = request.get_json(silent=True)
    if body is None:
        raise invalid_parameters("the body must be JSON")
    return body


def _api_error(err: ApiError) -> ResponseReturnValue:
    return jsonify(err.body), err.http_status


def _http_error(err: HTTPException) -> ResponseReturnValue:
    if err.code in (404, 405):  # what Agora's gateway says for a wrong method or URL
        return jsonify(message="no Route matched with those values"), 404
    return jsonify(message=err.description), err.code or 500


class SimulatorServer:
    """The simulator on a background thread: start(), .url, then stop()."""

    def __init__(self, service: CloudRecordingService, host: str = "127.0.0.1", port: int = 0):
        self.service = service
        self._server = make_server(host, port, create_app(service), threaded=True)
        # A short poll keeps stop() quick; the server is idle-cheap either way.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="simulator-http", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self._server.host}:{self._server.port}"

    def start(self) -> SimulatorServer:
        self._thread.start()
        logger.info("Agora simulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop answering, then stop every recording and the callback sender."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        else:
            self._server.server_close()
        self.service.close()

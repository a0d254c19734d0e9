"""The two reference apps the benchmark compares the service with.

- floor_app: the least any receiver that keeps what it acknowledges must do: read the
  body, one Redis write (SET under a new key), answer 200 with a JSON body.
- bare_app: reads the body and answers, for context (no durability at all).
"""

from __future__ import annotations

import os
import uuid

from flask import Flask, Response, request
from redis import Redis

_OK = b'{"result":"stored"}'

floor_app = Flask("floor")
_redis = Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


@floor_app.post("/agora/callback")
def floor_callback() -> Response:
    _redis.set(f"floor:{uuid.uuid4().hex}", request.get_data())
    return Response(_OK, status=200, mimetype="application/json")


bare_app = Flask("bare")


@bare_app.post("/agora/callback")
def bare_callback() -> Response:
    request.get_data()
    return Response(_OK, status=200, mimetype="application/json")

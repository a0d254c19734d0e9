"""`agora-webhook`: developer and operator commands."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType
from typing import BinaryIO

import click

from webhook.redis_server import RedisServer
from webhook.signature import HEADER_V1, HEADER_V2, sign

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("AGORA_VAR_DIR", PROJECT_ROOT / "var"))
DEV_SECRET_FILE = VAR / "dev-callback-secret"
EXAMPLE = PROJECT_ROOT / "tests" / "data" / "callbacks" / "40_recorder_started.json"


def _callback_secret() -> str:
    """The first configured secret, else the local development one (created on first use)."""
    configured = [s for s in os.environ.get("AGORA_CALLBACK_SECRETS", "").split(",") if s]
    if configured:
        return configured[0].strip()
    if not DEV_SECRET_FILE.exists():
        VAR.mkdir(parents=True, exist_ok=True)
        DEV_SECRET_FILE.write_text(secrets.token_hex(24))
        DEV_SECRET_FILE.chmod(0o600)
    return DEV_SECRET_FILE.read_text().strip()


@click.group()
def main() -> None:
    """Agora Cloud Recording callback service."""


@main.command("sign")
@click.argument("body_file", type=click.File("rb"))
@click.option("--sha1", is_flag=True, help="The legacy Agora-Signature (HMAC-SHA1) instead.")
def sign_command(body_file: BinaryIO, sha1: bool) -> None:
    """Print the signature Agora would send for BODY_FILE (with AGORA_CALLBACK_SECRETS)."""
    click.echo(sign(body_file.read(), _callback_secret(), "sha1" if sha1 else "sha256"))


@main.command("send")
@click.argument("body_file", type=click.File("rb"))
@click.option("--url", default="http://127.0.0.1:8000/agora/callback", show_default=True)
def send_command(body_file: BinaryIO, url: str) -> None:
    """POST BODY_FILE to URL, signed as Agora signs it."""
    body = body_file.read()
    secret = _callback_secret()
    request = urllib.request.Request(  # noqa: S310  # the URL is the operator's own
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            HEADER_V2: sign(body, secret),
            HEADER_V1: sign(body, secret, "sha1"),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310  # same
            click.echo(f"{response.status} {response.read().decode()}")
    except urllib.error.HTTPError as err:
        click.echo(f"{err.code} {err.read().decode()}")
        sys.exit(1)


@main.command("dev")
@click.option("--port", envvar="PORT", default=8000, show_default=True)
def dev_command(port: int) -> None:
    """Run the whole service locally: Redis (unless REDIS_URL is set), gunicorn, a worker."""
    env = dict(os.environ)
    env.setdefault("APP_ENV", "development")
    env["PORT"] = str(port)
    env["AGORA_CALLBACK_SECRETS"] = env.get("AGORA_CALLBACK_SECRETS") or _callback_secret()
    redis: RedisServer | None = None
    if not env.get("REDIS_URL"):
        redis = RedisServer(data_dir=VAR / "redis", port=int(env.get("LOCAL_REDIS_PORT", "6390")))
        click.echo(f"starting redis-server on {redis.url} (AOF everysec, data in {redis.data_dir})")
        redis.start()
        env["REDIS_URL"] = redis.url
    names = ("gunicorn", "worker")
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "wsgi:app"],
            cwd=PROJECT_ROOT,
            env=env,
        ),
        subprocess.Popen([sys.executable, "-m", "workers"], cwd=PROJECT_ROOT, env=env),
    ]
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    url = f"http://127.0.0.1:{port}/agora/callback"
    click.echo(
        f"\ncallback URL: {url}\n"
        f"try it:       .venv/bin/agora-webhook send {EXAMPLE.relative_to(PROJECT_ROOT)}"
        f" --url {url}\n"
        f"or with curl: curl -X POST {url} -H 'Content-Type: application/json' "
        f'-H "{HEADER_V2}: $(.venv/bin/agora-webhook sign FILE)" --data-binary @FILE\n'
        "Ctrl-C stops everything.\n"
    )
    exit_code = 0
    try:
        while not stopping:
            for name, child in zip(names, children, strict=True):
                if child.poll() is not None:
                    click.echo(f"{name} exited with {child.returncode}; stopping", err=True)
                    exit_code = 1
                    stopping = True
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=25)
            except subprocess.TimeoutExpired:
                child.kill()
        if redis is not None:
            redis.stop()
        click.echo("stopped")
    sys.exit(exit_code)

"""agora-webhook's operator commands against a real redis-server."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from redis import Redis

from tests.conftest import DATA, SECRET, load_example
from webhook.cli import _cli_environment, main
from webhook.config import Settings
from webhook.events import EventType
from webhook.schemas import load_callback
from webhook.signature import HEADER_V2, sign
from webhook.store import CallbackStore, Rejection, now_ms
from webhook.store.alerts import AlertStore
from workers.lifecycle import alerts_for_event

SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"


@pytest.fixture
def cli(settings: Settings, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("AGORA_CALLBACK_SECRETS", SECRET)
    monkeypatch.setenv("APP_ENV", "production")
    return CliRunner()


def store_example(redis: Redis, prefix: str) -> dict[str, object]:
    body = load_example(prefix)
    CallbackStore(redis).record(load_callback(body), json.dumps(body).encode(),
                                received_ms=1_749_551_500_000)  # fmt: skip
    return body


def test_show_prints_a_recording_with_its_timeline(cli: CliRunner, redis: Redis):
    store_example(redis, "31_")

    result = cli.invoke(main, ["show", SID, "--events"])

    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["upload_status"] == "uploaded"
    assert [e["event_type"] for e in shown["timeline"]["events"]] == [31]


def test_show_of_an_unknown_sid_fails_clearly(cli: CliRunner):
    result = cli.invoke(main, ["show", "nobody"])

    assert result.exit_code == 1
    assert "no recording 'nobody'" in result.output


def test_alerts_lists_and_ack_acknowledges(cli: CliRunner, redis: Redis):
    from webhook.store import now_ms

    alert, _ = AlertStore(redis).raise_alert(
        sid=SID, cname="class1024", kind="backup_not_uploaded", message="files missing",
        evidence={}, now_ms=now_ms(),
    )  # fmt: skip

    listed = cli.invoke(main, ["alerts"])
    acked = cli.invoke(main, ["ack", alert.id])
    after = cli.invoke(main, ["alerts", "--state", "acknowledged"])

    assert alert.id in listed.output
    assert "backup_not_uploaded" in listed.output
    assert acked.output.strip() == f"{alert.id} acknowledged"
    assert alert.id in after.output
    assert cli.invoke(main, ["ack", "al_nothing"]).exit_code == 1


def test_alerts_prints_no_control_character_a_callback_brought(cli: CliRunner, redis: Redis):
    # errorMsg is the callback's: an escape sequence in it would reach the operator's
    # terminal (retitle it, move the cursor, hide lines), a newline would forge a line.
    (spec,) = alerts_for_event(EventType.CLOUD_RECORDING_ERROR, {
        "module": 0, "errorLevel": 5, "errorCode": 50,
        "errorMsg": "boom\x1b]0;owned\x07\x1b[2K\r\nal_fake  critical",
    }, SID)  # fmt: skip
    AlertStore(redis).raise_alert(
        sid=SID, cname="class1024", kind=spec.kind, message=spec.message, evidence={},
        now_ms=now_ms(),
    )  # fmt: skip

    listed = cli.invoke(main, ["alerts"])

    assert listed.exit_code == 0, listed.output
    assert "\x1b" not in listed.output
    assert "\r" not in listed.output
    assert listed.output.count("\n") == 1
    assert r"boom\x1b]0;owned\x07\x1b[2K\r\nal_fake  critical" in listed.output


def test_replay_rejected_takes_a_kept_callback_in_again(cli: CliRunner, redis: Redis):
    raw = json.dumps(load_example("40_")).encode()
    entry = CallbackStore(redis).record_rejected(Rejection(
        reason="signature_mismatch", status=401, message="", received_ms=1, remote_addr=None,
        body=raw, body_truncated=False, headers={HEADER_V2: sign(raw, SECRET)},
    ))  # fmt: skip

    first = cli.invoke(main, ["replay-rejected", entry])
    again = cli.invoke(main, ["replay-rejected", entry])

    assert (first.exit_code, first.output.strip()) == (0, "stored")
    assert again.output.strip() == "duplicate"


def test_replay_rejected_needs_a_secret_to_verify_with(
    cli: CliRunner, redis: Redis, monkeypatch: pytest.MonkeyPatch
):
    # A shell without the service's secret: in development that would store unverified.
    monkeypatch.delenv("AGORA_CALLBACK_SECRETS")
    monkeypatch.setenv("APP_ENV", "development")
    raw = json.dumps(load_example("40_")).encode()
    entry = CallbackStore(redis).record_rejected(Rejection(
        reason="signature_missing", status=401, message="", received_ms=1, remote_addr=None,
        body=raw, body_truncated=False, headers={},
    ))  # fmt: skip

    result = cli.invoke(main, ["replay-rejected", entry])

    assert result.exit_code == 1
    assert "AGORA_CALLBACK_SECRETS" in result.output
    assert CallbackStore(redis).session(SID) is None


def test_make_run_never_prints_a_redis_url_or_secret_of_yours(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@cache:6379/0")
    monkeypatch.setenv("AGORA_CALLBACK_SECRETS", "my-callback-secret")
    env = {"REDIS_URL": "redis://:hunter2@cache:6379/0", "APP_ENV": "development",
           "AGORA_CALLBACK_SECRETS": "my-callback-secret"}  # fmt: skip

    printed = _cli_environment(env)

    assert "hunter2" not in printed
    assert "my-callback-secret" not in printed
    assert printed == "export APP_ENV=development"


def test_the_printed_exports_work_from_any_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    from webhook import cli

    for name in ("REDIS_URL", "AGORA_CALLBACK_SECRETS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(cli.DEV_SECRET_FILE.parent.parent)  # where make run runs

    printed = _cli_environment({"REDIS_URL": "redis://127.0.0.1:6390/0", "APP_ENV": "development"})

    # The line is for another shell: the secret file by its absolute path.
    assert f"AGORA_CALLBACK_SECRETS=$(cat {cli.DEV_SECRET_FILE.resolve()})" in printed


def test_tail_follows_a_session_through_a_quiet_spell(settings: Settings, redis: Redis):
    # A real process, as an operator runs it: redis-py's socket timeout is 5 s, and tail
    # used to wait on the stream that long, so the first quiet spell ended it.
    env = os.environ | {"REDIS_URL": settings.redis_url, "AGORA_CALLBACK_SECRETS": SECRET,
                        "APP_ENV": "production"}  # fmt: skip
    command = [sys.executable, "-c", "from webhook.cli import main; main()", "tail", SID]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as tail:
        assert tail.stdout is not None
        try:
            time.sleep(6.5)  # nothing arrives
            body = store_example(redis, "40_")
            with selectors.DefaultSelector() as waiting:
                waiting.register(tail.stdout, selectors.EVENT_READ)
                assert waiting.select(timeout=10), f"no line; tail exited {tail.poll()}"
            line = json.loads(tail.stdout.readline())
            assert (line["notice_id"], tail.poll()) == (body["noticeId"], None)
        finally:
            tail.terminate()


def test_export_writes_sessions_and_events_as_ndjson(cli: CliRunner, redis: Redis, tmp_path):
    store_example(redis, "40_")
    store_example(redis, "31_")
    out = tmp_path / "export.ndjson"

    result = cli.invoke(main, ["export", "--out", str(out)])

    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["type"] for line in lines] == ["session", "event", "event"]
    assert lines[0]["sid"] == SID


def test_prune_reports_what_it_removed(cli: CliRunner, redis: Redis):
    redis.zadd("agora:sessions", {"ancient": 1})

    result = cli.invoke(main, ["prune"])

    assert result.exit_code == 0
    assert result.output.strip() == "removed 1 index entries older than the retention"


def test_a_broken_configuration_is_a_clear_error(cli: CliRunner, monkeypatch):
    monkeypatch.delenv("AGORA_CALLBACK_SECRETS")

    result = cli.invoke(main, ["alerts"])

    assert result.exit_code == 1
    assert "AGORA_CALLBACK_SECRETS" in result.output


@pytest.mark.parametrize(
    "command",
    [
        ["alerts"],
        ["show", SID],
        ["prune"],
        ["ack", "a"],
        ["export", "--no-events"],
        ["replay-rejected", "1-0"],
    ],
)
def test_an_unreachable_redis_is_one_line_not_a_traceback(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, command: list[str]
):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens on port 1

    result = cli.invoke(main, command)

    assert result.exit_code == 1
    assert result.output.startswith("Error: Redis: "), result.output
    assert len(result.output.strip().splitlines()) == 1


def test_send_to_nothing_listening_is_one_line_not_a_traceback(cli: CliRunner):
    example = str(DATA / "40_recorder_started.json")

    result = cli.invoke(main, ["send", example, "--url", "http://127.0.0.1:1/agora/callback"])

    assert result.exit_code == 1
    assert result.output.startswith("Error: http://127.0.0.1:1/agora/callback: ")
    assert len(result.output.strip().splitlines()) == 1

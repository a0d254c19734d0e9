"""The dashboard's pages and login, through Flask's test client against a real Redis.

The browser test (tests/system/test_dashboard_browser.py) drives the same pages in Chromium.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import replace

import flask
import pytest
from flask.testing import FlaskClient
from redis import Redis

from tests.conftest import load_example, varied
from webhook.app import create_app
from webhook.config import Settings
from webhook.schemas import load_callback
from webhook.store import CallbackStore, now_ms
from webhook.store.alerts import AlertStore
from webhook.store.recordings import RecordingStore
from webhook.views.dashboard import PAGE_SIZE

TOKEN = "dashboard-token"
SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"


@pytest.fixture
def browser(settings: Settings, redis: Redis) -> FlaskClient:
    return create_app(replace(settings, api_tokens=(TOKEN, "other-token"))).test_client()


def log_in(client: FlaskClient, token: str = TOKEN) -> None:
    answer = client.post("/dashboard/login", data={"token": token, "next": "/dashboard/"})
    assert answer.status_code == 302


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def store_event(redis: Redis, prefix: str, sequence: int, **details: object) -> None:
    body = varied(load_example(prefix), sid=SID, notice_id=f"n-{prefix}{sequence}")
    body["payload"]["sequence"] = sequence
    body["payload"]["details"].update(details)
    CallbackStore(redis).record(
        load_callback(body), json.dumps(body).encode(), received_ms=now_ms()
    )


@pytest.fixture
def failing_session(redis: Redis) -> str:
    store_event(redis, "40_", 1)
    store_event(redis, "33_", 2, progress=4500)
    store_event(redis, "31_", 3, status=1)
    RecordingStore(redis).set_state(SID, "uploaded", now_ms())
    alert, _ = AlertStore(redis).raise_alert(
        sid=SID, cname="class1024", kind="upload_failed", message="Agora reported a failure",
        evidence={}, now_ms=now_ms(),
    )  # fmt: skip
    return alert.id


class TestLogin:
    @pytest.mark.parametrize(
        "page", ["/dashboard/", "/dashboard/sessions", f"/dashboard/sessions/{SID}",
                 "/dashboard/alerts"],
    )  # fmt: skip
    def test_every_page_asks_for_a_login_first(self, browser: FlaskClient, page: str):
        answer = browser.get(page)

        assert answer.status_code == 302
        assert answer.location.startswith("/dashboard/login?next=")

    def test_a_wrong_token_is_refused_with_a_message(self, browser: FlaskClient):
        answer = browser.post("/dashboard/login", data={"token": "guess"})

        assert answer.status_code == 401
        assert "That token is not valid." in answer.text
        assert browser.get("/dashboard/").status_code == 302

    def test_a_good_token_opens_the_page_asked_for(self, browser: FlaskClient):
        answer = browser.post(
            "/dashboard/login", data={"token": TOKEN, "next": "/dashboard/alerts?state=open"}
        )

        assert answer.location == "/dashboard/alerts?state=open"
        assert browser.get("/dashboard/alerts").status_code == 200

    @pytest.mark.parametrize(
        "target", ["https://evil.example/", "//evil.example/x", "/api/v1/x",
                   # Not a header injection (werkzeug refuses it), but it was a 500.
                   "/dashboard/\r\nSet-Cookie: x=1"],
    )  # fmt: skip
    def test_login_never_redirects_outside_the_dashboard(self, browser: FlaskClient, target: str):
        answer = browser.post("/dashboard/login", data={"token": TOKEN, "next": target})

        assert answer.location == "/dashboard/"

    def test_the_cookie_holds_no_token_and_is_http_only_and_same_site(self, browser: FlaskClient):
        answer = browser.post("/dashboard/login", data={"token": TOKEN})

        cookie = answer.headers["Set-Cookie"]
        assert TOKEN not in cookie
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie

    def test_removing_the_token_from_the_settings_ends_the_session(
        self, browser: FlaskClient, settings: Settings, redis: Redis
    ):
        log_in(browser, "other-token")
        rotated = create_app(replace(settings, api_tokens=(TOKEN,))).test_client()
        cookie = browser.get_cookie("agora_dashboard")
        assert cookie is not None
        rotated.set_cookie("agora_dashboard", cookie.value)

        assert rotated.get("/dashboard/").status_code == 302

    def test_logging_out_ends_the_session(self, browser: FlaskClient):
        log_in(browser)
        page = browser.get("/dashboard/").text

        browser.post("/dashboard/logout", data={"csrf": csrf(page)})

        assert browser.get("/dashboard/").status_code == 302

    @pytest.mark.parametrize(
        "page", ["/dashboard/login", "/dashboard/", "/dashboard/sessions?state=burning",
                 f"/dashboard/sessions/{SID}"],
    )  # fmt: skip
    def test_pages_cannot_be_framed_sniffed_or_cached(self, browser: FlaskClient, page: str):
        # Framed, the Acknowledge and Log out buttons could be clicked for the operator
        # (clickjacking); cached, a page would outlive the logout in a shared browser.
        if page != "/dashboard/login":
            log_in(browser)

        headers = browser.get(page).headers

        policy = headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy
        assert "default-src 'none'" in policy
        assert "script-src" not in policy  # no script at all: default-src 'none' holds
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
        assert headers["Cache-Control"] == "no-store"

    @pytest.mark.parametrize("path", ["/agora/callback", "/api/v1/recordings", "/dashboards"])
    def test_no_session_is_opened_outside_the_dashboard(self, browser: FlaskClient, path: str):
        # Opening one costs a callback real CPU, and nothing outside the dashboard uses it.
        log_in(browser)
        cookie = browser.get_cookie("agora_dashboard")
        assert cookie is not None
        app = browser.application

        with app.test_request_context(path, headers={"Cookie": f"agora_dashboard={cookie.value}"}):
            assert app.session_interface.is_null_session(flask.session)
        with app.test_request_context(
            "/dashboard/", headers={"Cookie": f"agora_dashboard={cookie.value}"}
        ):
            assert not app.session_interface.is_null_session(flask.session)
            assert flask.session


class TestPages:
    def test_the_overview_shows_traffic_by_outcome_and_open_alerts_by_kind(
        self, browser: FlaskClient, failing_session: str
    ):
        log_in(browser)

        page = browser.get("/dashboard/").text

        assert 'id="traffic"' in page
        assert "bar-stored" in page
        assert "stored: 3" in page
        assert "upload_failed" in page
        assert '<meta http-equiv="refresh" content="15">' in page

    def test_auto_refresh_can_be_turned_off(self, browser: FlaskClient):
        log_in(browser)

        assert 'http-equiv="refresh"' not in browser.get("/dashboard/?refresh=0").text

    def test_the_sessions_table_shows_state_progress_and_alerts(
        self, browser: FlaskClient, failing_session: str
    ):
        log_in(browser)

        page = browser.get("/dashboard/sessions").text

        row = page[page.index(f'data-sid="{SID}"') :]
        assert "state-uploaded" in row
        assert 'aria-valuenow="45"' in row
        assert "upload_failed" in row

    def test_the_sessions_table_filters_by_state_and_channel(
        self, browser: FlaskClient, failing_session: str
    ):
        log_in(browser)

        assert SID in browser.get("/dashboard/sessions?state=uploaded").text
        assert SID not in browser.get("/dashboard/sessions?state=verified").text
        assert SID in browser.get("/dashboard/sessions?cname=class1024").text
        assert SID not in browser.get("/dashboard/sessions?cname=elsewhere").text

    def test_the_sessions_table_pages_through_every_session(
        self, browser: FlaskClient, redis: Redis
    ):
        store, now = CallbackStore(redis), now_ms()
        for n in range(2 * PAGE_SIZE + 1):
            body = varied(load_example("40_"), sid=f"sid-{n:03}", notice_id=f"n-{n}")
            store.record(load_callback(body), json.dumps(body).encode(), received_ms=now - n)
        log_in(browser)

        seen, page = [], browser.get("/dashboard/sessions?cname=class1024")
        while True:
            assert page.status_code == 200
            seen += re.findall(r'data-sid="([^"]+)"', page.text)
            link = re.search(r'rel="next" href="([^"]+)"', page.text)
            if link is None:
                break
            assert "cname=class1024" in link.group(1)
            page = browser.get(html.unescape(link.group(1)))

        assert seen == [f"sid-{n:03}" for n in range(2 * PAGE_SIZE + 1)]

    def test_a_bad_filter_is_a_400_page_naming_it(self, browser: FlaskClient):
        log_in(browser)

        answer = browser.get("/dashboard/sessions?state=nonsense")

        assert answer.status_code == 400
        assert "state:" in answer.text

    def test_the_session_page_draws_the_timeline_and_marks_the_failed_upload(
        self, browser: FlaskClient, failing_session: str
    ):
        log_in(browser)

        page = browser.get(f"/dashboard/sessions/{SID}").text

        assert page.count('class="mark') == 3
        assert 'class="mark problem"' in page
        assert "Agora reports a failure" in page
        assert "Acknowledge" in page

    def test_wild_numbers_from_a_signed_callback_still_render(
        self, browser: FlaskClient, redis: Redis
    ):
        body = varied(load_example("33_"), sid=SID, notice_id="n-wild")
        body["payload"] |= {"sendts": 10**17, "sequence": 2**70}
        CallbackStore(redis).record(
            load_callback(body), json.dumps(body).encode(), received_ms=now_ms()
        )
        log_in(browser)

        answer = browser.get(f"/dashboard/sessions/{SID}")

        assert answer.status_code == 200
        assert f"{10**17} ms (not a date)" in answer.text

    def test_an_unknown_session_is_a_404_page(self, browser: FlaskClient):
        log_in(browser)

        answer = browser.get("/dashboard/sessions/nothing-here")

        assert answer.status_code == 404
        assert "No recording" in answer.text

    def test_values_from_callbacks_are_escaped(self, browser: FlaskClient, redis: Redis):
        body = varied(load_example("33_"), sid="sid-x", cname="<script>alert(1)</script>")
        CallbackStore(redis).record(
            load_callback(body), json.dumps(body).encode(), received_ms=now_ms()
        )
        log_in(browser)

        page = browser.get("/dashboard/sessions").text

        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;" in page


class TestAcknowledge:
    def test_acknowledging_moves_the_alert_and_returns_to_the_page(
        self, browser: FlaskClient, failing_session: str, redis: Redis
    ):
        log_in(browser)
        page = browser.get(f"/dashboard/sessions/{SID}").text

        answer = browser.post(
            f"/dashboard/alerts/{failing_session}/ack",
            data={"csrf": csrf(page), "next": f"/dashboard/sessions/{SID}"},
        )

        assert answer.location == f"/dashboard/sessions/{SID}"
        alert = AlertStore(redis).get(failing_session)
        assert alert is not None
        assert alert.state == "acknowledged"

    def test_a_form_without_the_csrf_token_changes_nothing(
        self, browser: FlaskClient, failing_session: str, redis: Redis
    ):
        log_in(browser)

        answer = browser.post(f"/dashboard/alerts/{failing_session}/ack", data={"csrf": "x"})
        # Not a 500 either for one compare_digest cannot take as text.
        non_ascii = browser.post(f"/dashboard/alerts/{failing_session}/ack", data={"csrf": "é"})

        assert answer.status_code == non_ascii.status_code == 400
        alert = AlertStore(redis).get(failing_session)
        assert alert is not None
        assert alert.state == "open"

    def test_an_unknown_alert_is_a_404_page(self, browser: FlaskClient):
        log_in(browser)
        token = csrf(browser.get("/dashboard/alerts").text)

        answer = browser.post("/dashboard/alerts/al_nothing/ack", data={"csrf": token})

        assert answer.status_code == 404

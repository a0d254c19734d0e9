"""StorageVerifier against a real S3 HTTP server (moto): playlists, backup copies, failures."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.integration.s3_server import S3Server, s3_bucket, s3_server
from workers.storage import (
    Problem,
    StorageConfig,
    StorageLocation,
    StorageVerifier,
    VerificationResult,
)

__all__ = ["s3_bucket", "s3_server"]  # fixtures, used by name

SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
CNAME = "class1024"
STARTED = datetime(2025, 6, 10, 10, 30, 51, 123_000, tzinfo=UTC)
AUDIO = f"{SID}_{CNAME}__uid_s_1001__uid_e_audio"
VIDEO = f"{SID}_{CNAME}__uid_s_1001__uid_e_video"
COMPOSITE = f"{SID}_{CNAME}"
TICK = 1_749_551_451_000  # ms: Agora's <tick> in backup copy names


def segment_names(stem: str, count: int, first: int = 0) -> list[str]:
    """TS names as Agora writes them: <stem>_<utc YYYYMMDDhhmmssSSS>.ts, 15 s apart."""
    names = []
    for index in range(first, first + count):
        at = STARTED + timedelta(seconds=15 * index)
        names.append(f"{stem}_{at:%Y%m%d%H%M%S}{at.microsecond // 1000:03d}.ts")
    return names


def playlist_text(segments: Sequence[str], *, finished: bool = True) -> str:
    """An HLS media playlist, with Agora's own tag, listing `segments`: finished
    (#EXT-X-ENDLIST), or a snapshot Agora uploads while it still records."""
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-ALLOW-CACHE:YES",
        "#EXT-X-TARGETDURATION:18",
        f"#EXT-X-AGORA-TRACK-EVENT:EVENT=START,TIMESTAMP={TICK}",
    ]
    for number, segment in enumerate(segments):
        lines += [f"#EXTINF:{15.0 + number % 3 * 0.016:.3f}", segment]
    if finished:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


class Bucket:
    """Puts a recording's objects where Agora would, under the location's prefix."""

    def __init__(self, client: Any, name: str, prefix: Sequence[str] = ()) -> None:
        self.client = client
        self.name = name
        self.directory = "".join(f"{part}/" for part in prefix)

    def put(self, name: str, body: str | bytes = b"\x47" * 188) -> str:
        key = self.directory + name
        data = body.encode() if isinstance(body, str) else body
        self.client.put_object(Bucket=self.name, Key=key, Body=data)
        return key

    def put_recording(
        self, playlist: str, segments: Sequence[str], *, skip: Sequence[str] = ()
    ) -> list[str]:
        """The playlist and its segments (except `skip`); returns every key it wrote."""
        keys = [self.put(playlist, playlist_text(segments))]
        keys += [self.put(segment) for segment in segments if segment not in skip]
        return keys


@pytest.fixture
def client(s3_server: S3Server) -> Iterator[Any]:
    client = s3_server.client()
    yield client
    client.close()


@pytest.fixture
def bucket(client: Any, s3_bucket: str) -> Bucket:
    return Bucket(client, s3_bucket)


@pytest.fixture
def config(s3_server: S3Server, s3_bucket: str) -> StorageConfig:
    # Read credentials only; the endpoint comes from the location (vendor 11) unless a test
    # says otherwise.
    credentials = {
        "access_key_id": s3_server.access_key_id,
        "secret_access_key": s3_server.secret_access_key,
    }
    return StorageConfig.from_mapping({"buckets": {s3_bucket: credentials}})


@pytest.fixture
def verifier(config: StorageConfig) -> Iterator[StorageVerifier]:
    # One attempt and short timeouts keep the failure tests fast.
    verifier = StorageVerifier(config, connect_timeout_s=1.0, read_timeout_s=1.0, max_attempts=1)
    yield verifier
    verifier.close()


@pytest.fixture
def location(s3_server: S3Server, s3_bucket: str) -> StorageLocation:
    """Vendor 11 (S3-compatible) pointing at the test server, as Agora's start request would."""
    return StorageLocation(vendor=11, region=0, bucket=s3_bucket, endpoint=s3_server.endpoint_url)


def assert_verified(result: VerificationResult) -> None:
    found = (result.verified, result.reason, result.missing, result.empty_playlists)
    assert found == (True, None, (), ())


class TestPlaylists:
    def test_individual_mode_playlists_with_every_segment_present_are_verified(
        self, verifier: StorageVerifier, location: StorageLocation, bucket: Bucket
    ):
        written = bucket.put_recording(f"{AUDIO}.m3u8", segment_names(AUDIO, 4))
        written += bucket.put_recording(f"{VIDEO}.m3u8", segment_names(VIDEO, 3))

        result = verifier.verify(location, [f"{AUDIO}.m3u8", f"{VIDEO}.m3u8"])

        assert_verified(result)
        assert sorted(result.checked) == sorted(written)
        assert [(p.key, p.segment_count) for p in result.playlists] == [
            (f"{AUDIO}.m3u8", 4),
            (f"{VIDEO}.m3u8", 3),
        ]

    def test_one_missing_segment_fails_verification_and_is_named(
        self, verifier: StorageVerifier, location: StorageLocation, bucket: Bucket
    ):
        segments = segment_names(AUDIO, 4)
        bucket.put_recording(f"{AUDIO}.m3u8", segments, skip=[segments[2]])

        result = verifier.verify(location, [f"{AUDIO}.m3u8"])

        assert not result.verified
        assert result.missing == (segments[2],)
        assert result.reason is None
        assert len(result.checked) == 4  # the playlist and three segments

    def test_a_long_recording_is_checked_from_listings_not_one_request_per_segment(
        self, verifier: StorageVerifier, location: StorageLocation, bucket: Bucket
    ):
        # Over 6 hours of 15 s segments: one HEAD each (12 hours took minutes against a
        # real endpoint, past the job's timeout) and the check never concluded.
        segments = segment_names(AUDIO, 1500)
        bucket.put_recording(f"{AUDIO}.m3u8", segments)
        requests: list[str] = []
        # The verifier's own boto3 session: every request its clients send.
        verifier._session.events.register(
            "before-send.s3", lambda request, **_: requests.append(request.method)
        )

        result = verifier.verify(location, [f"{AUDIO}.m3u8"])

        assert_verified(result)
        assert len(result.checked) == 1501
        assert len(requests) < 10  # the bucket, the listing's pages (1,000 keys each), the GET

    def test_an_absent_playlist_is_missing(
        self, verifier: StorageVerifier, location: StorageLocation, bucket: Bucket
    ):
        bucket.put_recording(f"{AUDIO}.m3u8", segment_names(AUDIO, 2))

        result = verifier.verify(location, [f"{AUDIO}.m3u8", f"{VIDEO}.m3u8"])

        assert not result.verified
        assert result.missing == (f"{VIDEO}.m3u8",)

    def test_a_playlist_listing_no_segment_is_not_verified(
        self, verifier: StorageVerifier, location: StorageLocation, bucket: Bucket
    ):
        bucket.put(f"{AUDIO}.m3u8", playlist_text([]))

        result = verifier.verify(location, [f"{AUDIO}.m3u8"])

        assert not result.verified
        assert result.empty_playlists == (f"{AUDIO}.m3u8",)
        assert result.missing == ()
        assert result.reason == f"playlists list no segment: {AUDIO}.m3u8"
        assert result.problem is None

    def test_an_unparseable_playlist_counts_as_empty_rather_than_crashing(
        self, verifier: StorageVerifier, location: StorageLocation, bucket: Bucket
    ):
        (segment,) = segment_names(AUDIO, 1)
        bucket.put(segment)
        # Cut off right after "#EXTINF:", as a half-written copy could be.
        bucket.put(f"{AUDIO}.m3u8", f"#EXTM3U\n#EXTINF:15.0,\n{segment}\n#EXTINF:")

        result = verifier.verify(location, [f"{AUDIO}.m3u8"])

        assert not result.verified
        assert result.empty_playlists == (f"{AUDIO}.m3u8",)
        assert result.playlists[0].segment_count == 0

    def test_segments_resolve_against_the_playlists_directory_and_ignore_url_hosts(
        self, verifier: StorageVerifier, s3_bucket: str, bucket: Bucket
    ):
        prefixed = Bucket(bucket.client, s3_bucket, ["recordings", "class1024"])
        first, second, third = segment_names(AUDIO, 3)
        prefixed.put(f"part/{first}")
        bucket.put(f"recordings/shared/{second}")
        prefixed.put(third)
        prefixed.put(
            f"{AUDIO}.m3u8",
            playlist_text(
                [
                    f"part/{first}",
                    f"../shared/{second}?token=abc",
                    f"https://cdn.example.com/recordings/class1024/{third}",
                ]
            ),
        )
        location = StorageLocation(
            vendor=11,
            region=0,
            bucket=s3_bucket,
            prefix=("recordings", "class1024"),
            endpoint=bucket.client.meta.endpoint_url,
        )

        result = verifier.verify(location, [f"{AUDIO}.m3u8"])

        assert_verified(result)
        assert result.checked[1:] == (
            f"recordings/class1024/part/{first}",
            f"recordings/shared/{second}",
            f"recordings/class1024/{third}",
        )

    def test_failover_playlists_with_the_bak_prefix_verify_like_any_other(
        self, verifier: StorageVerifier, location: StorageLocation, bucket: Bucket
    ):
        stem = f"bak0_{AUDIO}"
        bucket.put_recording(f"{stem}.m3u8", segment_names(stem, 2))

        assert_verified(verifier.verify(location, [f"{stem}.m3u8"]))


class TestBackupCopies:
    def test_with_only_copies_the_highest_index_is_used(
        self, verifier: StorageVerifier, location: StorageLocation, bucket: Bucket
    ):
        segments = segment_names(AUDIO, 3)
        bucket.put(f"{AUDIO}_{TICK}_0.m3u8", playlist_text(segments[:1]))
        bucket.put(f"{AUDIO}_{TICK + 9_000}_2.m3u8", playlist_text(segments[:2]))
        # Numeric, not lexical: index 10 is newer than index 2.
        bucket.put(f"{AUDIO}_{TICK + 20_000}_10.m3u8", playlist_text(segments))
        for segment in segments:
            bucket.put(segment)

        result = verifier.verify(location, [f"{AUDIO}.m3u8"])

        assert_verified(result)
        (choice,) = result.playlists
        assert choice.key == f"{AUDIO}_{TICK + 20_000}_10.m3u8"
        assert choice.copies == (
            f"{AUDIO}_{TICK}_0.m3u8",
            f"{AUDIO}_{TICK + 9_000}_2.m3u8",
            f"{AUDIO}_{TICK + 20_000}_10.m3u8",
        )
        assert choice.segment_count == 3

    def test_a_copy_larger_than_the_unsuffixed_playlist_is_kept(
        self, verifier: StorageVerifier, location: StorageLocation, bucket: Bucket
    ):
        segments = segment_names(AUDIO, 4)
        bucket.put(f"{AUDIO}.m3u8", playlist_text(segments[:1]))
        bucket.put(f"{AUDIO}_{TICK}_0.m3u8", playlist_text(segments))
        for segment in segments[:1]:
            bucket.put(segment)

        result = verifier.verify(location, [f"{AUDIO}.m3u8"])

        assert result.playlists[0].key == f"{AUDIO}_{TICK}_0.m3u8"
        assert result.playlists[0].copies == (f"{AUDIO}.m3u8", f"{AUDIO}_{TICK}_0.m3u8")
        # The complete copy lists segments the bucket does not hold yet.
        assert not result.verified
        assert result.missing == tuple(segments[1:])

    def test_an_unsuffixed_playlist_larger_than_the_copy_is_kept(
        self, verifier: StorageVerifier, location: StorageLocation, bucket: Bucket
    ):
        segments = segment_names(AUDIO, 3)
        bucket.put_recording(f"{AUDIO}.m3u8", segments)
        bucket.put(f"{AUDIO}_{TICK}_0.m3u8", playlist_text(segments[:1]))

        result = verifier.verify(location, [f"{AUDIO}.m3u8"])

        assert_verified(result)
        assert result.playlists[0].key == f"{AUDIO}.m3u8"
        assert result.playlists[0].size_bytes == len(playlist_text(segments))

    def test_a_snapshot_from_during_the_recording_is_not_taken_for_the_recording(
        self, verifier: StorageVerifier, location: StorageLocation, bucket: Bucket
    ):
        # The last upload of the playlist failed and went to Agora's backup: the bucket
        # holds an earlier snapshot, whose every segment is there.
        segments = segment_names(AUDIO, 4)
        bucket.put(f"{AUDIO}.m3u8", playlist_text(segments[:2], finished=False))
        for segment in segments[:2]:
            bucket.put(segment)

        result = verifier.verify(location, [f"{AUDIO}.m3u8"])

        assert not result.verified
        assert result.missing == ()
        assert result.unfinished_playlists == (f"{AUDIO}.m3u8",)
        assert result.playlists[0].finished is False
        assert result.reason is not None
        assert "#EXT-X-ENDLIST" in result.reason

    def test_the_finished_copy_from_the_backup_verifies_it(
        self, verifier: StorageVerifier, location: StorageLocation, bucket: Bucket
    ):
        segments = segment_names(AUDIO, 4)
        bucket.put(f"{AUDIO}.m3u8", playlist_text(segments[:2], finished=False))
        bucket.put(f"{AUDIO}_{TICK}_3.m3u8", playlist_text(segments))
        for segment in segments:
            bucket.put(segment)

        result = verifier.verify(location, [f"{AUDIO}.m3u8"])

        assert_verified(result)
        assert (result.playlists[0].key, result.playlists[0].finished) == (
            f"{AUDIO}_{TICK}_3.m3u8",
            True,
        )

    def test_composite_segments_sharing_the_playlist_stem_are_not_taken_for_copies(
        self, verifier: StorageVerifier, location: StorageLocation, bucket: Bucket
    ):
        bucket.put_recording(f"{COMPOSITE}.m3u8", segment_names(COMPOSITE, 3))
        bucket.put(f"{COMPOSITE}_0.mp4")

        result = verifier.verify(location, [f"{COMPOSITE}.m3u8", f"{COMPOSITE}_0.mp4"])

        assert_verified(result)
        assert result.playlists[0].copies == (f"{COMPOSITE}.m3u8",)
        assert result.checked[-1] == f"{COMPOSITE}_0.mp4"


class TestOtherFiles:
    def test_an_mp4_that_is_there_is_verified(
        self, verifier: StorageVerifier, location: StorageLocation, bucket: Bucket
    ):
        key = bucket.put(f"{COMPOSITE}_0.mp4")

        result = verifier.verify(location, [f"{COMPOSITE}_0.mp4"])

        assert_verified(result)
        assert result.checked == (key,)

    def test_an_mp4_that_is_not_there_is_missing(
        self, verifier: StorageVerifier, location: StorageLocation, bucket: Bucket
    ):
        bucket.put(f"{COMPOSITE}_0.mp4")

        result = verifier.verify(location, [f"{COMPOSITE}_0.mp4", f"{COMPOSITE}_1.mp4"])

        assert not result.verified
        assert result.missing == (f"{COMPOSITE}_1.mp4",)

    def test_file_name_prefix_directories_are_honoured(
        self, verifier: StorageVerifier, location: StorageLocation, s3_bucket: str, bucket: Bucket
    ):
        prefixed = Bucket(bucket.client, s3_bucket, ["recordings", "class1024"])
        written = prefixed.put_recording(f"{AUDIO}.m3u8", segment_names(AUDIO, 2))
        written.append(prefixed.put(f"{COMPOSITE}_0.mp4"))
        bucket.put(f"{VIDEO}.m3u8", playlist_text([]))  # at the root: must not count
        names = [f"{AUDIO}.m3u8", f"{COMPOSITE}_0.mp4", f"{VIDEO}.m3u8"]
        at_prefix = StorageLocation(
            vendor=11,
            region=0,
            bucket=s3_bucket,
            prefix=("recordings", "class1024"),
            endpoint=location.endpoint,
        )

        result = verifier.verify(at_prefix, names)

        assert sorted(result.checked) == sorted(written)
        assert result.missing == (f"recordings/class1024/{VIDEO}.m3u8",)

    def test_no_file_names_is_not_taken_for_success(
        self, verifier: StorageVerifier, location: StorageLocation
    ):
        result = verifier.verify(location, [])

        assert (result.verified, result.problem) == (False, Problem.NOTHING_TO_CHECK)


class TestWhereAndHow:
    def test_vendor_11_uses_the_endpoint_from_the_start_request(
        self, verifier: StorageVerifier, location: StorageLocation, bucket: Bucket
    ):
        bucket.put(f"{COMPOSITE}_0.mp4")
        location_from_agora = StorageLocation.from_storage_config(
            {
                "vendor": 11,
                "region": 0,
                "bucket": location.bucket,
                "accessKey": "agora-write-key",
                "secretKey": "agora-write-secret",
                "extensionParams": {"endpoint": location.endpoint},
            }
        )

        assert_verified(verifier.verify(location_from_agora, [f"{COMPOSITE}_0.mp4"]))

    def test_an_endpoint_url_in_the_config_overrides_the_vendors(
        self, s3_server: S3Server, s3_bucket: str, bucket: Bucket
    ):
        bucket.put(f"{COMPOSITE}_0.mp4")
        entry = {
            "access_key_id": s3_server.access_key_id,
            "secret_access_key": s3_server.secret_access_key,
            "endpoint_url": s3_server.endpoint_url,
        }
        verifier = StorageVerifier(StorageConfig.from_mapping({"buckets": {s3_bucket: entry}}))
        amazon = StorageLocation(vendor=1, region=4, bucket=s3_bucket)

        result = verifier.verify(amazon, [f"{COMPOSITE}_0.mp4"])
        verifier.close()

        assert_verified(result)

    def test_a_bucket_without_credentials_gives_a_reason(
        self, verifier: StorageVerifier, location: StorageLocation
    ):
        elsewhere = StorageLocation(vendor=11, region=0, bucket="not-ours", endpoint="s3.example")

        result = verifier.verify(elsewhere, [f"{COMPOSITE}_0.mp4"])

        assert result == VerificationResult(
            verified=False,
            reason="no credentials configured for bucket 'not-ours'",
            problem=Problem.NO_CREDENTIALS,
        )

    def test_azure_is_unsupported_with_a_reason(
        self, verifier: StorageVerifier, location: StorageLocation
    ):
        azure = StorageLocation(vendor=5, region=0, bucket=location.bucket)

        result = verifier.verify(azure, [f"{COMPOSITE}_0.mp4"])

        assert (result.verified, result.problem) == (False, Problem.UNSUPPORTED)
        assert result.reason == "vendor 5 (Azure Blob) is not S3-compatible"

    def test_a_bucket_that_does_not_exist_is_named_not_reported_as_missing_files(
        self, s3_server: S3Server, location: StorageLocation
    ):
        entry = {"access_key_id": "k", "secret_access_key": "s"}
        config = StorageConfig.from_mapping({"buckets": {"test-no-such-bucket": entry}})
        verifier = StorageVerifier(config, max_attempts=1)
        absent = StorageLocation(
            vendor=11, region=0, bucket="test-no-such-bucket", endpoint=s3_server.endpoint_url
        )

        result = verifier.verify(absent, [f"{COMPOSITE}_0.mp4"])
        verifier.close()

        assert (result.verified, result.problem, result.missing) == (
            False,
            Problem.BUCKET_NOT_FOUND,
            (),
        )
        assert "'test-no-such-bucket'" in (result.reason or "")

    def test_an_unreachable_endpoint_is_a_reason_not_an_exception(
        self, verifier: StorageVerifier, location: StorageLocation
    ):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            closed_port = sock.getsockname()[1]
        nowhere = StorageLocation(
            vendor=11, region=0, bucket=location.bucket, endpoint=f"http://127.0.0.1:{closed_port}"
        )

        result = verifier.verify(nowhere, [f"{COMPOSITE}_0.mp4"])

        assert (result.verified, result.problem) == (False, Problem.UNAVAILABLE)
        assert "unreachable" in (result.reason or "")

    def test_a_server_that_never_answers_times_out_into_a_reason(
        self, config: StorageConfig, location: StorageLocation
    ):
        verifier = StorageVerifier(config, read_timeout_s=0.2, max_attempts=1)
        # The kernel accepts the connection into the backlog; nobody ever reads or replies.
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            port = silent.getsockname()[1]
            stalled = StorageLocation(
                vendor=11, region=0, bucket=location.bucket, endpoint=f"http://127.0.0.1:{port}"
            )

            result = verifier.verify(stalled, [f"{COMPOSITE}_0.mp4"])
        verifier.close()

        assert (result.verified, result.problem) == (False, Problem.UNAVAILABLE)
        assert "ReadTimeoutError" in (result.reason or "")

    @pytest.mark.parametrize(
        ("status", "problem"),
        [
            (403, Problem.ACCESS_DENIED),  # S3's answer for a missing key we may not list
            (400, Problem.STORAGE_ERROR),
            (503, Problem.UNAVAILABLE),
        ],
    )
    def test_an_object_refused_is_a_reason_never_a_missing_file(
        self, config: StorageConfig, location: StorageLocation, status: int, problem: Problem
    ):
        # moto grants everything, so a minimal server plays the refusing vendor: the bucket
        # opens, every object request gets `status`.
        with refusing_server(location.bucket, status) as endpoint:
            verifier = StorageVerifier(config, max_attempts=1)
            refused = StorageLocation(
                vendor=11, region=0, bucket=location.bucket, endpoint=endpoint
            )

            result = verifier.verify(refused, [f"{COMPOSITE}_0.mp4"])
            verifier.close()

        assert (result.verified, result.problem, result.missing) == (False, problem, ())
        assert f"HTTP {status}" in (result.reason or "")


@contextmanager
def refusing_server(bucket: str, status: int) -> Iterator[str]:
    """An HTTP server that lets HEAD /<bucket> through and answers `status` to the rest."""

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(200 if self.path == f"/{bucket}" else status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            self.do_HEAD()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output to the assertions

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

"""Recording files named the way Agora names them (FACTS.md section 8), written with boto3.

Segments are a few tiny MPEG-TS null packets and the MP4 is a bare ftyp box: enough for a
checker that lists, HEADs or parses playlists, not for a player.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

SLICE_S: Final = 15.0  # Agora slices about every 15 s
MAX_SEGMENTS: Final = 6
S3_COMPATIBLE_VENDOR: Final = 11
# Web page recording replaces these cname characters with "-" in file names.
WEB_CNAME_SPECIALS: Final = frozenset("!@#$%^&*()+_.=[]{}~|,;:?<>")
# 188-byte MPEG-TS null packets (sync byte 0x47, PID 0x1FFF).
TS_NULL_PACKET: Final = bytes([0x47, 0x1F, 0xFF, 0x10]) + b"\xff" * 184
MP4_HEADER: Final = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00\x00\x00\x08mdat"
STORAGE_ERRORS: Final = (BotoCoreError, ClientError)


def utc_stamp(ms: int) -> str:
    """Agora's <utc> in file names: YYYYMMDDhhmmssSSS in UTC+0."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y%m%d%H%M%S") + f"{ms % 1000:03d}"


def web_safe_cname(cname: str) -> str:
    return "".join("-" if char in WEB_CNAME_SPECIALS else char for char in cname)


def backup_name(playlist: str, tick: int, index: int = 0) -> str:
    """The name of a playlist copied over from Agora Cloud Backup: <stem>_<tick>_<index>.m3u8."""
    stem = playlist.removesuffix(".m3u8")
    return f"{stem}_{tick}_{index}.m3u8"


@dataclass(frozen=True)
class Segment:
    name: str
    duration_s: float


@dataclass(frozen=True)
class Playlist:
    """One M3U8 with its TS segments: one fileList entry."""

    name: str
    segments: tuple[Segment, ...]
    track_type: str
    uid: str
    slice_start_ms: int

    @property
    def mixed_all_user(self) -> bool:
        return self.uid == "0"

    def text(self) -> str:
        target = math.ceil(max(segment.duration_s for segment in self.segments))
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:3",
            "#EXT-X-MEDIA-SEQUENCE:0",
            "#EXT-X-ALLOW-CACHE:YES",
            f"#EXT-X-TARGETDURATION:{target}",
        ]
        for segment in self.segments:
            lines += [f"#EXTINF:{segment.duration_s:.3f},", segment.name]
        lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RecordingFiles:
    """Every file one recording produced, and the fileList Agora reports for them."""

    playlists: tuple[Playlist, ...]
    mp4_names: tuple[str, ...] = ()

    def file_list(self) -> list[dict[str, Any]]:
        """fileList entries as in callbacks 31/32 and json-mode query/stop answers."""
        entries = [
            _file_info(name, "audio_and_video", "0", self._start_ms()) for name in self.mp4_names
        ]
        entries += [
            _file_info(p.name, p.track_type, p.uid, p.slice_start_ms) for p in self.playlists
        ]
        return entries

    def objects(self, renamed: Mapping[str, str] | None = None) -> Iterator[tuple[str, bytes]]:
        """(name, bytes) to write: segments, then playlists (under `renamed` names), MP4s."""
        for playlist in self.playlists:
            for segment in playlist.segments:
                yield segment.name, TS_NULL_PACKET * 4
        for playlist in self.playlists:
            name = (renamed or {}).get(playlist.name, playlist.name)
            yield name, playlist.text().encode("utf-8")
        for name in self.mp4_names:
            yield name, MP4_HEADER

    def _start_ms(self) -> int:
        return min((p.slice_start_ms for p in self.playlists), default=0)


def individual_playlist(
    sid: str, cname: str, uid: str, track: str, start_ms: int, duration_s: float
) -> Playlist:
    """<sid>_<cname>__uid_s_<uid>__uid_e_<audio|video>.m3u8 and its _<utc>.ts segments."""
    stem = f"{sid}_{cname}__uid_s_{uid}__uid_e_{track}"
    return Playlist(f"{stem}.m3u8", _segments(stem, start_ms, duration_s), track, uid, start_ms)


def composite_playlist(
    sid: str, cname: str, track_type: str, start_ms: int, duration_s: float
) -> Playlist:
    """<sid>_<cname>.m3u8 and its <sid>_<cname>_<utc>.ts segments (composite and web modes)."""
    stem = f"{sid}_{cname}"
    return Playlist(
        f"{stem}.m3u8", _segments(stem, start_ms, duration_s), track_type, "0", start_ms
    )


def mp4_name(sid: str, cname: str, index: int = 0) -> str:
    return f"{sid}_{cname}_{index}.mp4"


def _segments(stem: str, start_ms: int, duration_s: float) -> tuple[Segment, ...]:
    count = min(MAX_SEGMENTS, max(1, math.ceil(duration_s / SLICE_S)))
    segments = []
    offset_ms = 0
    for index in range(count):
        # Slices cut on I-frames, so they run a little over or under 15 s.
        length_s = SLICE_S + (0.04, -0.02, 0.0)[index % 3]
        if index == count - 1 and duration_s < count * SLICE_S:
            length_s = max(1.0, duration_s - (count - 1) * SLICE_S)
        segments.append(Segment(f"{stem}_{utc_stamp(start_ms + offset_ms)}.ts", length_s))
        offset_ms += round(length_s * 1000)
    return tuple(segments)


def _file_info(name: str, track_type: str, uid: str, start_ms: int) -> dict[str, Any]:
    return {
        "fileName": name,
        "trackType": track_type,
        "uid": uid,
        "mixedAllUser": uid == "0",
        "isPlayable": True,
        "sliceStartTime": start_ms,
    }


@dataclass(frozen=True)
class Destination:
    """Where one recording's files go: an S3 endpoint, bucket and fileNamePrefix."""

    endpoint_url: str
    bucket: str
    prefix: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)

    def key(self, name: str) -> str:
        return self.prefix + name

    @classmethod
    def from_storage_config(
        cls,
        storage: Mapping[str, Any],
        *,
        endpoint: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> Destination | None:
        """The start request's storageConfig, with the simulator's overrides applied.

        None when the files cannot go anywhere we can reach: a vendor other than 11 (S3
        compatible, extensionParams.endpoint) and no endpoint override.
        """
        extension = storage.get("extensionParams")
        if endpoint is None and storage.get("vendor") == S3_COMPATIBLE_VENDOR:
            given = extension.get("endpoint") if isinstance(extension, Mapping) else None
            endpoint = given if isinstance(given, str) else None
        bucket = storage.get("bucket")
        if not endpoint or not isinstance(bucket, str) or not bucket:
            return None
        if "://" not in endpoint:
            endpoint = f"https://{endpoint}"  # Agora's examples give a bare domain
        segments = storage.get("fileNamePrefix") or []
        prefix = "".join(f"{segment}/" for segment in segments if isinstance(segment, str))
        return cls(
            endpoint_url=endpoint,
            bucket=bucket,
            prefix=prefix,
            access_key=access_key or str(storage.get("accessKey", "")),
            secret_key=secret_key or str(storage.get("secretKey", "")),
        )


class ObjectStore:
    """Puts objects with boto3; one client per endpoint and key, closed by close()."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str, str], Any] = {}

    def put(self, destination: Destination, name: str, body: bytes) -> None:
        """Raises one of STORAGE_ERRORS when the store refuses or cannot be reached."""
        self._client(destination).put_object(
            Bucket=destination.bucket,
            Key=destination.key(name),
            Body=body,
            ContentType=_content_type(name),
        )

    def write(
        self,
        destination: Destination,
        files: RecordingFiles,
        renamed: Mapping[str, str] | None = None,
    ) -> None:
        for name, body in files.objects(renamed):
            self.put(destination, name, body)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def _client(self, destination: Destination) -> Any:
        cache_key = (destination.endpoint_url, destination.access_key, destination.secret_key)
        with self._lock:
            client = self._clients.get(cache_key)
            if client is None:
                client = boto3.session.Session().client(
                    "s3",
                    endpoint_url=destination.endpoint_url,
                    aws_access_key_id=destination.access_key,
                    aws_secret_access_key=destination.secret_key,
                    region_name="us-east-1",
                    config=Config(
                        s3={"addressing_style": "path"},
                        retries={"max_attempts": 2},
                        connect_timeout=5,
                        read_timeout=10,
                    ),
                )
                self._clients[cache_key] = client
            return client


def _content_type(name: str) -> str:
    if name.endswith(".m3u8"):
        return "application/vnd.apple.mpegurl"
    if name.endswith(".ts"):
        return "video/mp2t"
    return "video/mp4"

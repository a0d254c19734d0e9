"""Whether a recording's files really are in the customer's S3-compatible bucket.

Agora reports no "copied from backup" event, so after `backuped` the bucket itself is the only
witness (FACTS §0.5). This module only reads (HEAD, LIST, GET of playlists); it never writes,
and it never keeps the keys Agora's start request carried: ours come from the storage config.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from os import PathLike, fspath
from types import MappingProxyType
from typing import Any, ClassVar, Literal, get_args
from urllib.parse import unquote, urlsplit

import boto3
import m3u8
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from webhook.errors import ConfigError

logger = logging.getLogger(__name__)

AddressingStyle = Literal["auto", "virtual", "path"]
_ADDRESSING_STYLES: Mapping[str, AddressingStyle] = {
    style: style for style in get_args(AddressingStyle)
}
# Agora's region code -> (Agora's name for it, the vendor's own region id or None).
RegionTable = Mapping[int, tuple[str, str | None]]

# Most self-hosted S3 servers (MinIO, Ceph RGW, SeaweedFS) sign with this region by default.
DEFAULT_SIGNING_REGION = "us-east-1"


@dataclass(frozen=True)
class Vendor:
    """How one of Agora's storageConfig vendors is reached over the S3 API (FACTS §7).

    A None region id in `regions` is a code Agora documents but for which we know no S3
    endpoint; `regions=None` means Agora ignores the region for this vendor.
    """

    code: int
    name: str
    endpoint: str | None = None  # "{region}" is filled in; None: boto3's own (Amazon)
    regions: RegionTable | None = None
    signing_region: str = DEFAULT_SIGNING_REGION  # only when `regions` is None
    addressing_style: AddressingStyle = "virtual"
    endpoint_from_location: bool = False  # vendor 11: extensionParams.endpoint
    unsupported: str | None = None  # why it cannot be checked over S3 at all


# Amazon's region ids are Agora's names in lower case with hyphens. Agora has no 17 or 23, and
# legacy 26 (AWS_REGION_NUM) was a sentinel, not a region.
_AMAZON_REGIONS: RegionTable = MappingProxyType(
    {
        0: ("US_EAST_1", "us-east-1"),
        1: ("US_EAST_2", "us-east-2"),
        2: ("US_WEST_1", "us-west-1"),
        3: ("US_WEST_2", "us-west-2"),
        4: ("EU_WEST_1", "eu-west-1"),
        5: ("EU_WEST_2", "eu-west-2"),
        6: ("EU_WEST_3", "eu-west-3"),
        7: ("EU_CENTRAL_1", "eu-central-1"),
        8: ("AP_SOUTHEAST_1", "ap-southeast-1"),
        9: ("AP_SOUTHEAST_2", "ap-southeast-2"),
        10: ("AP_NORTHEAST_1", "ap-northeast-1"),
        11: ("AP_NORTHEAST_2", "ap-northeast-2"),
        12: ("SA_EAST_1", "sa-east-1"),
        13: ("CA_CENTRAL_1", "ca-central-1"),
        14: ("AP_SOUTH_1", "ap-south-1"),
        15: ("CN_NORTH_1", "cn-north-1"),
        16: ("CN_NORTHWEST_1", "cn-northwest-1"),
        18: ("AF_SOUTH_1", "af-south-1"),
        19: ("AP_EAST_1", "ap-east-1"),
        20: ("AP_NORTHEAST_3", "ap-northeast-3"),
        21: ("EU_NORTH_1", "eu-north-1"),
        22: ("ME_SOUTH_1", "me-south-1"),
        24: ("AP_SOUTHEAST_3", "ap-southeast-3"),
        25: ("EU_SOUTH_1", "eu-south-1"),
    }
)

# OSS region ids from Alibaba's endpoint list. Agora's EU_East_1, CN_Northeast_2 and
# CN_Southeast_7 match no OSS region id we could confirm, so they need an endpoint_url.
_ALIBABA_REGIONS: RegionTable = MappingProxyType(
    {
        0: ("CN_Hangzhou", "cn-hangzhou"),
        1: ("CN_Shanghai", "cn-shanghai"),
        2: ("CN_Qingdao", "cn-qingdao"),
        3: ("CN_Beijing", "cn-beijing"),
        4: ("CN_Zhangjiakou", "cn-zhangjiakou"),
        5: ("CN_Huhehaote", "cn-huhehaote"),
        6: ("CN_Shenzhen", "cn-shenzhen"),
        7: ("CN_Hongkong", "cn-hongkong"),
        8: ("US_West_1", "us-west-1"),
        9: ("US_East_1", "us-east-1"),
        10: ("AP_Southeast_1", "ap-southeast-1"),
        11: ("AP_Southeast_2", "ap-southeast-2"),
        12: ("AP_Southeast_3", "ap-southeast-3"),
        13: ("AP_Southeast_5", "ap-southeast-5"),
        14: ("AP_Northeast_1", "ap-northeast-1"),
        15: ("AP_South_1", "ap-south-1"),
        16: ("EU_Central_1", "eu-central-1"),
        17: ("EU_West_1", "eu-west-1"),
        18: ("EU_East_1", None),
        19: ("AP_Southeast_6", "ap-southeast-6"),
        20: ("CN_Heyuan", "cn-heyuan"),
        21: ("CN_Guangzhou", "cn-guangzhou"),
        22: ("CN_Chengdu", "cn-chengdu"),
        23: ("CN_Nanjing", "cn-nanjing"),
        24: ("CN_Fuzhou", "cn-fuzhou"),
        25: ("CN_Wulanchabu", "cn-wulanchabu"),
        26: ("CN_Northeast_2", None),
        27: ("CN_Southeast_7", None),
    }
)

# COS region ids are Agora's names in lower case with hyphens (ap-beijing-1, ap-shenzhen-fsi).
_TENCENT_REGIONS: RegionTable = MappingProxyType(
    {
        0: ("AP_Beijing_1", "ap-beijing-1"),
        1: ("AP_Beijing", "ap-beijing"),
        2: ("AP_Shanghai", "ap-shanghai"),
        3: ("AP_Guangzhou", "ap-guangzhou"),
        4: ("AP_Chengdu", "ap-chengdu"),
        5: ("AP_Chongqing", "ap-chongqing"),
        6: ("AP_Shenzhen_FSI", "ap-shenzhen-fsi"),
        7: ("AP_Shanghai_FSI", "ap-shanghai-fsi"),
        8: ("AP_Beijing_FSI", "ap-beijing-fsi"),
        9: ("AP_Hongkong", "ap-hongkong"),
        10: ("AP_Singapore", "ap-singapore"),
        11: ("AP_Mumbai", "ap-mumbai"),
        12: ("AP_Seoul", "ap-seoul"),
        13: ("AP_Bangkok", "ap-bangkok"),
        14: ("AP_Tokyo", "ap-tokyo"),
        15: ("NA_Siliconvalley", "na-siliconvalley"),
        16: ("NA_Ashburn", "na-ashburn"),
        17: ("NA_Toronto", "na-toronto"),
        18: ("EU_Frankfurt", "eu-frankfurt"),
        19: ("EU_Moscow", "eu-moscow"),
    }
)

# OBS region ids are Agora's names in Huawei's spelling (cn-north-4, la-south-2). The Latin
# American ones were not each checked against Huawei's list: an endpoint_url fixes a wrong one.
_HUAWEI_REGIONS: RegionTable = MappingProxyType(
    {
        0: ("CN_North_1", "cn-north-1"),
        1: ("CN_North_4", "cn-north-4"),
        2: ("CN_East_2", "cn-east-2"),
        3: ("CN_East_3", "cn-east-3"),
        4: ("CN_South_1", "cn-south-1"),
        5: ("CN_Southwest_2", "cn-southwest-2"),
        6: ("AP_Southeast_1", "ap-southeast-1"),
        7: ("AP_Southeast_2", "ap-southeast-2"),
        8: ("AP_Southeast_3", "ap-southeast-3"),
        9: ("AF_South_1", "af-south-1"),
        10: ("SA_Argentina_1", "sa-argentina-1"),
        11: ("SA_Peru_1", "sa-peru-1"),
        12: ("NA_Mexico_1", "na-mexico-1"),
        13: ("SA_Brazil_1", "sa-brazil-1"),
        14: ("LA_South_2", "la-south-2"),
        15: ("SA_Chile_1", "sa-chile-1"),
    }
)

# Baidu documents HTTPS S3 endpoints only for bj, bd, su and gz; Wuhan (fwh) and Hong Kong (hkg)
# are listed as plain HTTP, and Singapore and Shanghai have none. 0 Beijing is legacy-only.
_BAIDU_REGIONS: RegionTable = MappingProxyType(
    {
        0: ("Beijing", "bj"),
        1: ("Baoding", "bd"),
        2: ("Suzhou", "su"),
        3: ("Guangzhou", "gz"),
        4: ("Hongkong", None),
        5: ("Singapore", None),
        6: ("Wuhan", None),
        7: ("Shanghai", None),
    }
)

# Qiniu's S3 region ids for its five original zones (z0, z1, z2, na0, as0).
_QINIU_REGIONS: RegionTable = MappingProxyType(
    {
        0: ("East China", "cn-east-1"),
        1: ("North China", "cn-north-1"),
        2: ("South China", "cn-south-1"),
        3: ("North America", "us-north-1"),
        4: ("Southeast Asia", "ap-southeast-1"),
    }
)

# KS3 speaks an S3-like API, but we found no documented S3 endpoint for Agora's region codes,
# so Kingsoft buckets are checked only through an endpoint_url in the storage config.
_KINGSOFT_REGIONS: RegionTable = MappingProxyType(
    {
        0: ("CN_Hangzhou", None),
        1: ("CN_Shanghai", None),
        2: ("CN_Qingdao", None),
        3: ("CN_Beijing", None),
        4: ("CN_Guangzhou", None),
        5: ("CN_Hongkong", None),
        6: ("JR_Beijing", None),
        7: ("JR_Shanghai", None),
        8: ("NA_Russia_1", None),
        9: ("NA_Singapore_1", None),
    }
)

# Agora documents only vendor 11 as S3-compatible. Everything said here about the others' S3
# endpoints comes from the vendors' own docs, not Agora's.
VENDORS: Mapping[int, Vendor] = MappingProxyType(
    {
        vendor.code: vendor
        for vendor in (
            Vendor(0, "Qiniu Kodo", "https://s3.{region}.qiniucs.com", _QINIU_REGIONS),
            Vendor(1, "Amazon S3", regions=_AMAZON_REGIONS, addressing_style="auto"),
            # Alibaba's newer AWS-SDK page names s3.oss-<region>.aliyuncs.com instead, and OSS
            # takes only virtual-hosted requests: an override needs addressing_style "virtual".
            # Since 2025-03-20 new accounts must use their own domain (CNAME) for data calls on
            # mainland-China buckets, which boto3's bucket addressing cannot express.
            Vendor(2, "Alibaba Cloud OSS", "https://oss-{region}.aliyuncs.com", _ALIBABA_REGIONS),
            Vendor(3, "Tencent Cloud COS", "https://cos.{region}.myqcloud.com", _TENCENT_REGIONS),
            Vendor(4, "Kingsoft Cloud KS3", regions=_KINGSOFT_REGIONS),
            Vendor(5, "Azure Blob", unsupported="is not S3-compatible"),
            # GCS interoperability takes HMAC keys and ignores the signing region.
            Vendor(
                6, "Google Cloud Storage", "https://storage.googleapis.com", signing_region="auto"
            ),
            Vendor(
                7, "Huawei Cloud OBS", "https://obs.{region}.myhuaweicloud.com", _HUAWEI_REGIONS
            ),
            Vendor(8, "Baidu AI Cloud BOS", "https://s3.{region}.bcebos.com", _BAIDU_REGIONS),
            Vendor(11, "S3-compatible", addressing_style="path", endpoint_from_location=True),
        )
    }
)


class UnsupportedStorageError(Exception):
    """The location cannot be reached over the S3 API with what Agora and our config say."""


class StorageConfigError(ConfigError):
    """The storage config file (per-bucket read credentials) is missing or malformed."""

    reason = "invalid_storage_configuration"


@dataclass(frozen=True)
class StorageLocation:
    """Where Agora was told to put a recording: storageConfig without its credentials."""

    vendor: int
    region: int
    bucket: str
    prefix: tuple[str, ...] = ()  # fileNamePrefix: the directories of every object key
    endpoint: str | None = None  # extensionParams.endpoint (vendor 11)

    @classmethod
    def from_storage_config(cls, storage_config: Mapping[str, Any]) -> StorageLocation:
        """Read the start request's storageConfig; accessKey, secretKey and stsToken are dropped.

        Raises ValueError when a field has the wrong type or the bucket is missing.
        """
        vendor = storage_config.get("vendor")
        region = storage_config.get("region", 0)
        bucket = storage_config.get("bucket")
        prefix = storage_config.get("fileNamePrefix") or []
        extension = storage_config.get("extensionParams") or {}
        # bool is an int to Python, but never a vendor or a region.
        if not isinstance(vendor, int) or isinstance(vendor, bool):
            raise ValueError(f"storageConfig.vendor must be an integer, got {vendor!r}")
        if not isinstance(region, int) or isinstance(region, bool):
            raise ValueError(f"storageConfig.region must be an integer, got {region!r}")
        if not isinstance(bucket, str) or not bucket:
            raise ValueError("storageConfig.bucket must be a non-empty string")
        if not isinstance(prefix, list) or not all(isinstance(p, str) and p for p in prefix):
            raise ValueError("storageConfig.fileNamePrefix must be a list of non-empty strings")
        if not isinstance(extension, Mapping):
            raise ValueError("storageConfig.extensionParams must be an object")
        endpoint = extension.get("endpoint")
        if endpoint is not None and not isinstance(endpoint, str):
            raise ValueError("storageConfig.extensionParams.endpoint must be a string")
        return cls(
            vendor=vendor,
            region=region,
            bucket=bucket,
            prefix=tuple(prefix),
            endpoint=endpoint or None,
        )

    def key_for(self, file_name: str) -> str:
        """The object key of a file Agora names in fileList."""
        directory = "/".join(self.prefix)
        # Agora does not document whether fileList names include fileNamePrefix (FACTS §8.1);
        # accept both rather than look for "dir/dir/dir/dir/name".
        if not directory or file_name.startswith(directory + "/"):
            return file_name
        return f"{directory}/{file_name}"


@dataclass(frozen=True)
class BucketCredentials:
    """Our read access to one customer bucket, from the storage config file."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    endpoint_url: str | None = None  # overrides the vendor's endpoint (custom domains, proxies)
    region_name: str | None = None  # overrides the signing region
    addressing_style: AddressingStyle | None = None  # default: path with an endpoint_url


_BUCKET_KEYS = frozenset(
    {"access_key_id", "secret_access_key", "endpoint_url", "region_name", "addressing_style"}
)


@dataclass(frozen=True)
class StorageConfig:
    """Per-bucket read credentials: {"buckets": {"<bucket>": {"access_key_id": ..., ...}}}."""

    buckets: Mapping[str, BucketCredentials] = field(default_factory=lambda: MappingProxyType({}))

    def credentials_for(self, bucket: str) -> BucketCredentials | None:
        return self.buckets.get(bucket)

    @classmethod
    def from_file(cls, path: str | PathLike[str]) -> StorageConfig:
        """Load the JSON file STORAGE_CONFIG names.

        Raises StorageConfigError when it cannot be read or is malformed.
        """
        source = fspath(path)
        try:
            with open(source, encoding="utf-8") as file:
                data = json.load(file)
        except OSError as err:
            raise StorageConfigError(
                f"cannot read storage config {source}: {err.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise StorageConfigError(f"storage config {source} is not UTF-8 text") from None
        except json.JSONDecodeError as err:
            # err.msg names the syntax problem only; err.doc (the text, secrets and all) stays out.
            raise StorageConfigError(
                f"storage config {source} is not valid JSON: {err.msg} "
                f"(line {err.lineno}, column {err.colno})"
            ) from None
        return cls.from_mapping(data, source=source)

    @classmethod
    def from_mapping(cls, data: object, *, source: str = "storage config") -> StorageConfig:
        """Build the config from parsed JSON; messages name keys, never values.

        Raises StorageConfigError when the shape is wrong.
        """
        if not isinstance(data, Mapping):
            raise StorageConfigError(f"{source}: the top level must be a JSON object")
        unknown = sorted(set(data) - {"buckets"})
        if unknown:
            raise StorageConfigError(f"{source}: unknown top-level keys {unknown}")
        buckets = data.get("buckets", {})
        if not isinstance(buckets, Mapping):
            raise StorageConfigError(f"{source}: 'buckets' must be an object keyed by bucket name")
        parsed = {
            name: _bucket_credentials(entry, f"{source}: buckets.{name}")
            for name, entry in buckets.items()
        }
        if "" in parsed:
            raise StorageConfigError(f"{source}: a bucket name must not be empty")
        return cls(buckets=MappingProxyType(parsed))


def _bucket_credentials(entry: object, where: str) -> BucketCredentials:
    if not isinstance(entry, Mapping):
        raise StorageConfigError(f"{where} must be an object")
    # A misspelt optional key ("endpoint", "region") would otherwise be ignored in silence.
    unknown = sorted(set(entry) - _BUCKET_KEYS)
    if unknown:
        raise StorageConfigError(f"{where}: unknown keys {unknown}")
    endpoint_url = _optional_string(entry, "endpoint_url", where)
    if endpoint_url is not None:
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise StorageConfigError(f"{where}.endpoint_url must be an http(s) URL with a host")
    style_name = _optional_string(entry, "addressing_style", where)
    style = _ADDRESSING_STYLES.get(style_name) if style_name is not None else None
    if style_name is not None and style is None:
        raise StorageConfigError(
            f"{where}.addressing_style must be one of {sorted(_ADDRESSING_STYLES)}"
        )
    return BucketCredentials(
        access_key_id=_required_string(entry, "access_key_id", where),
        secret_access_key=_required_string(entry, "secret_access_key", where),
        endpoint_url=endpoint_url,
        region_name=_optional_string(entry, "region_name", where),
        addressing_style=style,
    )


def _required_string(entry: Mapping[str, object], key: str, where: str) -> str:
    value = _optional_string(entry, key, where)
    if value is None:
        raise StorageConfigError(f"{where}.{key} is required")
    return value


def _optional_string(entry: Mapping[str, object], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise StorageConfigError(f"{where}.{key} must be a non-empty string")
    return value.strip()


@dataclass(frozen=True)
class S3Endpoint:
    """What boto3 needs to reach a bucket: endpoint URL, signing region, addressing style."""

    endpoint_url: str | None  # None: boto3's own Amazon endpoint for the region
    region_name: str
    addressing_style: AddressingStyle


def resolve_endpoint(
    location: StorageLocation, credentials: BucketCredentials | None = None
) -> S3Endpoint:
    """The S3 endpoint of a location: the config's endpoint_url, else vendor 11's, else the table.

    Raises UnsupportedStorageError, whose message is the reason for an operator.
    """
    vendor = VENDORS.get(location.vendor)
    if vendor is None:
        raise UnsupportedStorageError(f"vendor {location.vendor} is not one Agora documents")
    if vendor.unsupported is not None:
        raise UnsupportedStorageError(f"vendor {vendor.code} ({vendor.name}) {vendor.unsupported}")
    entry = vendor.regions.get(location.region) if vendor.regions is not None else None
    region_id = entry[1] if entry is not None else None
    endpoint_url = credentials.endpoint_url if credentials is not None else None
    region_name = credentials.region_name if credentials is not None else None
    style = credentials.addressing_style if credentials is not None else None

    # The operator's endpoint wins over everything Agora says, so it also covers regions our
    # table cannot map and regions Agora adds after this table was written.
    if endpoint_url is not None:
        return S3Endpoint(
            endpoint_url=endpoint_url,
            region_name=region_name or region_id or vendor.signing_region,
            addressing_style=style or "path",
        )
    if vendor.endpoint_from_location:
        if location.endpoint is None:
            raise UnsupportedStorageError(
                f"vendor {vendor.code} ({vendor.name}) needs extensionParams.endpoint in the "
                f"start request, or endpoint_url for bucket {location.bucket!r} in the "
                "storage config"
            )
        # Agora asks for "your domain"; a bare host name means HTTPS.
        endpoint = location.endpoint
        if "://" not in endpoint:
            endpoint = f"https://{endpoint}"
        return S3Endpoint(
            endpoint_url=endpoint,
            region_name=region_name or vendor.signing_region,
            addressing_style=style or vendor.addressing_style,
        )
    if vendor.regions is not None and entry is None:
        raise UnsupportedStorageError(
            f"region {location.region} is not one Agora documents for vendor "
            f"{vendor.code} ({vendor.name})"
        )
    if entry is not None and region_id is None:
        raise UnsupportedStorageError(
            f"region {location.region} ({entry[0]}) of vendor {vendor.code} ({vendor.name}) "
            f"has no S3 endpoint we know of; set endpoint_url for bucket {location.bucket!r} "
            "in the storage config"
        )
    return S3Endpoint(
        endpoint_url=(
            vendor.endpoint.format(region=region_id) if vendor.endpoint is not None else None
        ),
        region_name=region_name or region_id or vendor.signing_region,
        addressing_style=style or vendor.addressing_style,
    )


class Problem(StrEnum):
    """Why storage could not answer; stable codes for logs, metrics and alert routing."""

    UNSUPPORTED = "unsupported_storage"  # fix the config or check by hand
    NO_CREDENTIALS = "no_credentials"  # add the bucket to the storage config
    NOTHING_TO_CHECK = "nothing_to_check"  # no file names (web mode sends no fileList)
    BUCKET_NOT_FOUND = "bucket_not_found"
    ACCESS_DENIED = "access_denied"  # our key lacks s3:ListBucket / s3:GetObject
    STORAGE_ERROR = "storage_error"  # any other refusal (wrong region, bad request)
    UNAVAILABLE = "storage_unavailable"  # network, timeout or 5xx: check again later


@dataclass(frozen=True)
class PlaylistChoice:
    """Which object stood for a playlist Agora named, and why (FACTS §8.1 backup copies)."""

    file_name: str  # as given to verify()
    key: str  # the object used: the larger of the unsuffixed file and the newest copy
    size_bytes: int
    copies: tuple[str, ...]  # every candidate found: unsuffixed first, then copies by index
    segment_count: int
    # Ends with #EXT-X-ENDLIST, as a finished recording's playlist does (Agora's examples);
    # without it, a snapshot uploaded during the recording.
    finished: bool = True


@dataclass(frozen=True)
class VerificationResult:
    """What the bucket holds for one recording.

    `reason` says why it is not verified when `missing` does not: storage could not be checked
    (then `problem` is set), or a playlist lists no segment.
    """

    verified: bool
    checked: tuple[str, ...] = ()  # object keys found
    missing: tuple[str, ...] = ()  # object keys not found
    reason: str | None = None
    problem: Problem | None = None
    playlists: tuple[PlaylistChoice, ...] = ()
    empty_playlists: tuple[str, ...] = ()  # keys of playlists listing no segment (or unparseable)
    unfinished_playlists: tuple[str, ...] = ()  # keys of playlists without #EXT-X-ENDLIST

    @classmethod
    def unchecked(cls, problem: Problem, reason: str) -> VerificationResult:
        return cls(verified=False, reason=reason, problem=problem)


class _StorageProblemError(Exception):
    """Storage stopped answering usefully; ends one verify() call, never leaves this module."""

    def __init__(self, problem: Problem, reason: str) -> None:
        super().__init__(reason)
        self.problem = problem
        self.reason = reason


_PLAYLIST_SUFFIX = ".m3u8"


class _Check:
    """One verify() call against one bucket: the requests made and what they found."""

    # S3 answers 403 rather than 404 for a missing key when the caller may not list the
    # bucket, so a 403 is never read as "missing".
    _DENIED_CODES: ClassVar[frozenset[str]] = frozenset(
        {"403", "401", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"}
    )
    _NOT_FOUND_CODES: ClassVar[frozenset[str]] = frozenset({"404", "NoSuchKey", "NotFound"})

    def __init__(self, client: Any, bucket: str, endpoint: S3Endpoint) -> None:
        self._client = client
        self._bucket = bucket
        self._where = f"bucket {bucket!r} at {endpoint.endpoint_url or 'Amazon S3'}"
        self.checked: list[str] = []
        self.missing: list[str] = []
        self.playlists: list[PlaylistChoice] = []
        self.empty_playlists: list[str] = []
        self.unfinished_playlists: list[str] = []

    def result(self, error: _StorageProblemError | None = None) -> VerificationResult:
        reason = error.reason if error is not None else None
        if reason is None and self.empty_playlists:
            # Nothing is missing, yet nothing proves the recording is there: say why.
            reason = f"playlists list no segment: {', '.join(self.empty_playlists)}"
        if reason is None and self.unfinished_playlists:
            reason = (
                "playlists without #EXT-X-ENDLIST, snapshots uploaded during the recording "
                f"(the finished ones are not there yet): {', '.join(self.unfinished_playlists)}"
            )
        return VerificationResult(
            verified=error is None
            and not self.missing
            and not self.empty_playlists
            and not self.unfinished_playlists,
            checked=tuple(self.checked),
            missing=tuple(self.missing),
            reason=reason,
            problem=error.problem if error is not None else None,
            playlists=tuple(self.playlists),
            empty_playlists=tuple(self.empty_playlists),
            unfinished_playlists=tuple(self.unfinished_playlists),
        )

    def bucket(self) -> None:
        # One cheap call first, so a wrong bucket or key reads as that and not as
        # "every file missing" (HEAD of a key in a missing bucket is a bare 404 too).
        self._call("open the bucket", self._client.head_bucket, Bucket=self._bucket)

    def file(self, file_name: str, key: str) -> None:
        if key.lower().endswith(_PLAYLIST_SUFFIX):
            self.playlist(file_name, key)
        else:
            self.object(key)

    def object(self, key: str) -> int | None:
        """HEAD one key: its size, or None (and noted missing) when it is not there."""
        response = self._call(
            "read an object", self._client.head_object, Bucket=self._bucket, Key=key
        )
        if response is None:
            self.missing.append(key)
            return None
        self.checked.append(key)
        return int(response.get("ContentLength", 0))

    def playlist(self, file_name: str, key: str) -> None:
        stem = key[: -len(_PLAYLIST_SUFFIX)]
        sizes = self._list(stem)
        copy_pattern = re.compile(re.escape(stem) + r"_(\d+)_(\d+)\.m3u8\Z")
        copies = sorted(
            (int(match[2]), int(match[1]), candidate)
            for candidate in sizes
            if (match := copy_pattern.match(candidate))
        )
        candidates = ([key] if key in sizes else []) + [candidate for *_, candidate in copies]
        if not candidates:
            self.missing.append(key)
            return
        chosen = key if key in sizes else copies[-1][2]
        if copies and key in sizes and sizes[copies[-1][2]] > sizes[key]:
            # Agora: compare the highest-index copy with the unsuffixed file, keep the larger.
            # On a tie the unsuffixed one stays: nothing says the copy is more complete.
            chosen = copies[-1][2]
        body = self._call("read an object", self._read_body, chosen)
        if body is None:  # deleted between LIST and GET
            self.missing.append(chosen)
            return
        self.checked.append(chosen)
        segment_keys, finished = _read_playlist(body, chosen, self._bucket)
        self.playlists.append(
            PlaylistChoice(
                file_name=file_name,
                key=chosen,
                size_bytes=sizes[chosen],
                copies=tuple(candidates),
                segment_count=len(segment_keys),
                finished=finished,
            )
        )
        if not segment_keys:
            self.empty_playlists.append(chosen)
        elif not finished:
            # Agora uploads the playlist again and again while it records (the backup copies'
            # index counts those snapshots): an old one in the bucket, its segments all there,
            # would pass for a recording whose end went to Agora's backup.
            self.unfinished_playlists.append(chosen)
        for segment_key in segment_keys:
            if segment_key in sizes:
                # Listed with the playlist (its segments share its stem): no request of its
                # own. A HEAD each made a 12-hour track (2,880 segments) outlast the job.
                self.checked.append(segment_key)
            else:
                self.object(segment_key)  # named otherwise, or not there: HEAD it

    def _list(self, prefix: str) -> dict[str, int]:
        paginator = self._client.get_paginator("list_objects_v2")

        def list_all() -> dict[str, int]:
            return {
                item["Key"]: int(item.get("Size", 0))
                for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix)
                for item in page.get("Contents", ())
            }

        listed: dict[str, int] | None = self._call("list objects", list_all)
        return listed or {}

    def _read_body(self, key: str) -> str:
        response = self._client.get_object(Bucket=self._bucket, Key=key)
        with response["Body"] as body:
            data: bytes = body.read()
        return data.decode("utf-8", errors="replace")

    def _call(self, action: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one storage call; None for a missing key, _StorageProblemError for the rest."""
        try:
            return function(*args, **kwargs)
        except ClientError as err:
            error = err.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if code == "NoSuchBucket" or (action == "open the bucket" and status == 404):
                raise _StorageProblemError(
                    Problem.BUCKET_NOT_FOUND, f"{self._where} does not exist"
                ) from None
            if code in self._NOT_FOUND_CODES or status == 404:
                return None
            # HEAD answers have no body, so their "code" is the bare status.
            answer = f"HTTP {status}" + (f" {code}" if code and code != str(status) else "")
            if code in self._DENIED_CODES or status in (401, 403):
                raise _StorageProblemError(
                    Problem.ACCESS_DENIED,
                    f"{self._where} refused to {action} ({answer}): our key needs "
                    "s3:ListBucket and s3:GetObject there",
                ) from None
            problem = Problem.UNAVAILABLE if status >= 500 else Problem.STORAGE_ERROR
            raise _StorageProblemError(
                problem, f"{self._where} failed to {action} ({answer})"
            ) from None
        except (BotoConnectionError, HTTPClientError) as err:
            # Connection refused, DNS, TLS and timeouts, after botocore's own retries.
            raise _StorageProblemError(
                Problem.UNAVAILABLE, f"{self._where} unreachable: {type(err).__name__}"
            ) from None


def _read_playlist(text: str, playlist_key: str, bucket: str) -> tuple[tuple[str, ...], bool]:
    """Object keys of every segment (and init section) a playlist lists, in order, once each,
    and whether it is finished (#EXT-X-ENDLIST)."""
    try:
        playlist = m3u8.loads(text)
    except (ValueError, m3u8.ParseError):
        # A half-copied playlist can carry a cut EXTINF line; it verifies nothing.
        return (), False
    directory = posixpath.dirname(playlist_key)
    uris = [
        uri
        for segment in playlist.segments
        for uri in (getattr(segment.init_section, "uri", None), segment.uri)
        if uri
    ]
    keys = tuple(dict.fromkeys(_segment_key(uri, directory, bucket) for uri in uris))
    return keys, bool(playlist.is_endlist)


def _segment_key(uri: str, directory: str, bucket: str) -> str:
    parts = urlsplit(uri)
    path = unquote(parts.path)
    if parts.scheme or parts.netloc:
        # Absolute URL: the host is a CDN or the vendor's domain; the object is in our bucket.
        key = path.lstrip("/")
        is_virtual_hosted = parts.hostname is not None and parts.hostname.startswith(f"{bucket}.")
        if not is_virtual_hosted and key.startswith(f"{bucket}/"):
            key = key[len(bucket) + 1 :]
        return key
    if path.startswith("/"):
        return posixpath.normpath(path).lstrip("/")
    return posixpath.normpath(posixpath.join(directory, path)).lstrip("/")


class StorageVerifier:
    """Checks recordings against customers' buckets over the S3 API; one per worker process."""

    def __init__(
        self,
        config: StorageConfig,
        *,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 10.0,
        max_attempts: int = 3,
    ) -> None:
        self._config = config
        self._session = boto3.session.Session()
        self._clients: dict[tuple[S3Endpoint, BucketCredentials], Any] = {}
        self._client_config = Config(
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            # Short timeouts, few retries: the caller re-checks later, and a worker stuck on
            # one dead endpoint delays every other session's check.
            # total_max_attempts counts the first try; botocore's max_attempts does not.
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            signature_version="s3v4",
            # boto3 >= 1.36 adds CRC checksums that several S3-compatible vendors reject.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # AWS_ENDPOINT_URL in the environment must not redirect a customer's Amazon bucket.
            ignore_configured_endpoint_urls=True,
        )

    def verify(self, location: StorageLocation, file_names: Sequence[str]) -> VerificationResult:
        """Whether every named file (and every segment of every playlist) is in the bucket.

        Storage trouble (credentials, permissions, endpoint, timeouts) comes back as
        verified=False with a reason; only programming errors raise.
        """
        if isinstance(file_names, str):
            raise TypeError("file_names must be a sequence of names, not one string")
        result = self._verify(location, file_names)
        logger.info(
            "storage %s",
            "verified" if result.verified else "not verified",
            extra={
                "bucket": location.bucket,
                "checked": len(result.checked),
                "missing": len(result.missing),
                "problem": result.problem.value if result.problem is not None else None,
            },
        )
        return result

    def _verify(self, location: StorageLocation, file_names: Sequence[str]) -> VerificationResult:
        credentials = self._config.credentials_for(location.bucket)
        # Support first: for Azure, credentials would not help, and for a region we cannot map
        # the reason says to add an endpoint_url along with them.
        try:
            endpoint = resolve_endpoint(location, credentials)
        except UnsupportedStorageError as err:
            return VerificationResult.unchecked(Problem.UNSUPPORTED, str(err))
        if credentials is None:
            return VerificationResult.unchecked(
                Problem.NO_CREDENTIALS,
                f"no credentials configured for bucket {location.bucket!r}",
            )
        if not file_names:
            return VerificationResult.unchecked(
                Problem.NOTHING_TO_CHECK, "no file names given: nothing to look for"
            )
        check = _Check(self._client(endpoint, credentials), location.bucket, endpoint)
        try:
            check.bucket()
            for file_name in dict.fromkeys(file_names):
                check.file(file_name, location.key_for(file_name))
        except _StorageProblemError as err:
            return check.result(err)
        return check.result()

    def _client(self, endpoint: S3Endpoint, credentials: BucketCredentials) -> Any:
        # boto3 clients are costly to build (endpoint rules, models) and thread-safe to reuse.
        cache_key = (endpoint, credentials)
        client = self._clients.get(cache_key)
        if client is None:
            client = self._session.client(
                "s3",
                endpoint_url=endpoint.endpoint_url,
                region_name=endpoint.region_name,
                aws_access_key_id=credentials.access_key_id,
                aws_secret_access_key=credentials.secret_access_key,
                config=self._client_config.merge(
                    Config(s3={"addressing_style": endpoint.addressing_style})
                ),
            )
            self._clients[cache_key] = client
        return client

    def close(self) -> None:
        """Close the cached clients' connection pools."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

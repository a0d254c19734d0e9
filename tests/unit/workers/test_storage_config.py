"""workers.storage without a network: storageConfig, vendor/region endpoints, the config file."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest

from webhook.config import MAX_STORAGE_READ_TIMEOUT_S
from webhook.errors import ConfigError
from webhook.jobs import JOB_TIMEOUT_S
from workers.storage import (
    VENDORS,
    BucketCredentials,
    S3Endpoint,
    StorageConfig,
    StorageConfigError,
    StorageLocation,
    StorageVerifier,
    UnsupportedStorageError,
    resolve_endpoint,
)

# storageConfig as a start request carries it (camelCase, credentials included).
STORAGE_CONFIG: dict[str, Any] = {
    "vendor": 2,
    "region": 3,
    "bucket": "my-recordings",
    "accessKey": "LTAI-access-key-from-agora",
    "secretKey": "agora-secret-key-value",
    "stsToken": "agora-sts-token-value",
    "fileNamePrefix": ["recordings", "class1024"],
    "extensionParams": {"sse": "kms", "tag": "x", "endpoint": "s3.example.net"},
}
CREDENTIALS = {
    "access_key_id": "AKIAREADONLY",
    "secret_access_key": "very-secret-read-key",
}


def location(vendor: int, region: int = 0, endpoint: str | None = None) -> StorageLocation:
    return StorageLocation(vendor=vendor, region=region, bucket="rec", endpoint=endpoint)


class TestStorageLocation:
    def test_storage_config_is_read_without_any_credential(self):
        found = StorageLocation.from_storage_config(STORAGE_CONFIG)

        assert found == StorageLocation(
            vendor=2,
            region=3,
            bucket="my-recordings",
            prefix=("recordings", "class1024"),
            endpoint="s3.example.net",
        )
        kept = repr(found) + repr(vars(found))
        for secret in ("accessKey", "secretKey", "stsToken"):
            assert STORAGE_CONFIG[secret] not in kept

    def test_region_and_prefix_and_endpoint_are_optional(self):
        found = StorageLocation.from_storage_config({"vendor": 6, "bucket": "rec"})

        assert found == StorageLocation(vendor=6, region=0, bucket="rec")

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"vendor": "2"}, "vendor"),
            ({"vendor": True}, "vendor"),
            ({"region": None}, "region"),
            ({"bucket": ""}, "bucket"),
            ({"fileNamePrefix": "recordings/class1024"}, "fileNamePrefix"),
            ({"fileNamePrefix": ["recordings", 7]}, "fileNamePrefix"),
            ({"extensionParams": ["endpoint"]}, "extensionParams"),
            ({"extensionParams": {"endpoint": 443}}, "endpoint"),
        ],
    )
    def test_a_malformed_field_is_named(self, change: dict[str, Any], field: str):
        with pytest.raises(ValueError, match=field):
            StorageLocation.from_storage_config(STORAGE_CONFIG | change)

    def test_keys_are_the_prefix_directories_then_the_name(self):
        found = StorageLocation(vendor=1, region=0, bucket="rec", prefix=("a", "b"))

        assert found.key_for("sid_cname.m3u8") == "a/b/sid_cname.m3u8"

    def test_without_prefix_the_key_is_the_name_with_no_leading_slash(self):
        assert location(1).key_for("sid_cname_0.mp4") == "sid_cname_0.mp4"

    def test_a_name_that_already_carries_the_prefix_is_not_prefixed_twice(self):
        found = StorageLocation(vendor=1, region=0, bucket="rec", prefix=("a", "b"))

        assert found.key_for("a/b/sid_cname.m3u8") == "a/b/sid_cname.m3u8"


class TestEndpoints:
    @pytest.mark.parametrize(
        ("vendor", "region", "endpoint_url", "region_name"),
        [
            (1, 0, None, "us-east-1"),
            (1, 15, None, "cn-north-1"),
            (1, 25, None, "eu-south-1"),
            (2, 0, "https://oss-cn-hangzhou.aliyuncs.com", "cn-hangzhou"),
            (2, 17, "https://oss-eu-west-1.aliyuncs.com", "eu-west-1"),
            (3, 1, "https://cos.ap-beijing.myqcloud.com", "ap-beijing"),
            (3, 6, "https://cos.ap-shenzhen-fsi.myqcloud.com", "ap-shenzhen-fsi"),
            (6, 0, "https://storage.googleapis.com", "auto"),
            (7, 1, "https://obs.cn-north-4.myhuaweicloud.com", "cn-north-4"),
            (8, 1, "https://s3.bd.bcebos.com", "bd"),
            (0, 0, "https://s3.cn-east-1.qiniucs.com", "cn-east-1"),
        ],
    )
    def test_vendor_and_region_give_the_vendors_s3_endpoint(
        self, vendor: int, region: int, endpoint_url: str | None, region_name: str
    ):
        found = resolve_endpoint(location(vendor, region))

        assert (found.endpoint_url, found.region_name) == (endpoint_url, region_name)

    def test_vendor_endpoints_use_virtual_hosted_buckets_and_amazon_lets_boto3_choose(self):
        assert resolve_endpoint(location(2)).addressing_style == "virtual"
        assert resolve_endpoint(location(1)).addressing_style == "auto"

    @pytest.mark.parametrize(
        ("vendor", "region"),
        [(v.code, r) for v in VENDORS.values() for r in (v.regions or {0: ("", None)})],
    )
    def test_every_documented_region_maps_to_an_https_endpoint_or_says_why_not(
        self, vendor: int, region: int
    ):
        try:
            found = resolve_endpoint(location(vendor, region, "s3.example.net"))
        except UnsupportedStorageError as err:
            reason = str(err)
            assert "S3-compatible" in reason or "set endpoint_url" in reason
        else:
            assert found.endpoint_url is None or found.endpoint_url.startswith("https://")
            assert "{" not in (found.endpoint_url or "")

    def test_amazon_has_no_region_17_or_23(self):
        for region in (17, 23, 26):
            with pytest.raises(UnsupportedStorageError, match=f"region {region} is not one"):
                resolve_endpoint(location(1, region))

    def test_azure_is_not_s3_compatible_even_with_an_endpoint_override(self):
        credentials = BucketCredentials("k", "s", endpoint_url="https://gateway.example.net")

        with pytest.raises(UnsupportedStorageError, match=r"vendor 5 \(Azure Blob\) is not S3"):
            resolve_endpoint(location(5), credentials)

    def test_an_unknown_vendor_is_unsupported(self):
        with pytest.raises(UnsupportedStorageError, match="vendor 9 is not one Agora documents"):
            resolve_endpoint(location(9))

    def test_an_agora_region_with_no_known_s3_endpoint_asks_for_an_endpoint_url(self):
        with pytest.raises(UnsupportedStorageError, match=r"18 \(EU_East_1\).*endpoint_url"):
            resolve_endpoint(location(2, 18))

    def test_kingsoft_needs_an_endpoint_url_and_works_with_one(self):
        with pytest.raises(UnsupportedStorageError, match="Kingsoft"):
            resolve_endpoint(location(4, 3))

        credentials = BucketCredentials("k", "s", endpoint_url="https://ks3-cn-beijing.example")
        found = resolve_endpoint(location(4, 3), credentials)

        assert found.endpoint_url == "https://ks3-cn-beijing.example"

    def test_google_ignores_the_region_as_agora_does(self):
        assert resolve_endpoint(location(6, 42)) == resolve_endpoint(location(6, 0))

    def test_s3_compatible_uses_the_start_requests_endpoint_path_style(self):
        found = resolve_endpoint(location(11, 0, "https://minio.example.net:9000"))

        assert found == S3Endpoint("https://minio.example.net:9000", "us-east-1", "path")

    def test_s3_compatible_endpoint_without_a_scheme_means_https(self):
        found = resolve_endpoint(location(11, 0, "minio.example.net"))

        assert found.endpoint_url == "https://minio.example.net"

    def test_s3_compatible_without_any_endpoint_is_unsupported(self):
        with pytest.raises(UnsupportedStorageError, match=r"extensionParams\.endpoint"):
            resolve_endpoint(location(11))

    def test_the_bucket_config_overrides_endpoint_region_and_addressing(self):
        credentials = BucketCredentials(
            "k",
            "s",
            endpoint_url="https://oss-cn-hangzhou-internal.aliyuncs.com",
            region_name="oss-cn-hangzhou",
            addressing_style="virtual",
        )

        found = resolve_endpoint(location(2, 0), credentials)

        assert found == S3Endpoint(
            "https://oss-cn-hangzhou-internal.aliyuncs.com", "oss-cn-hangzhou", "virtual"
        )

    def test_an_endpoint_override_covers_a_region_code_newer_than_our_table(self):
        credentials = BucketCredentials("k", "s", endpoint_url="https://oss-new.example.net")

        found = resolve_endpoint(location(2, 99), credentials)

        assert found == S3Endpoint("https://oss-new.example.net", "us-east-1", "path")

    def test_an_endpoint_override_is_path_style_and_keeps_the_vendors_region(self):
        credentials = BucketCredentials("k", "s", endpoint_url="http://127.0.0.1:9000")

        found = resolve_endpoint(location(1, 4), credentials)

        assert found == S3Endpoint("http://127.0.0.1:9000", "eu-west-1", "path")


class TestStorageConfig:
    def test_buckets_are_read_from_a_json_file(self, tmp_path: Path):
        path = tmp_path / "storage.json"
        entry = CREDENTIALS | {"endpoint_url": "https://s3.example.net", "region_name": "eu-1"}
        path.write_text(json.dumps({"buckets": {"my-recordings": entry}}))

        config = StorageConfig.from_file(path)

        assert config.credentials_for("my-recordings") == BucketCredentials(
            access_key_id="AKIAREADONLY",
            secret_access_key="very-secret-read-key",
            endpoint_url="https://s3.example.net",
            region_name="eu-1",
        )
        assert config.credentials_for("someone-else") is None

    def test_repr_never_shows_the_secret(self):
        config = StorageConfig.from_mapping({"buckets": {"my-recordings": CREDENTIALS}})

        assert "very-secret-read-key" not in repr(config)
        assert "very-secret-read-key" not in str(config.credentials_for("my-recordings"))
        assert "AKIAREADONLY" in repr(config)

    def test_an_empty_config_has_no_buckets(self):
        assert StorageConfig.from_mapping({"buckets": {}}) == StorageConfig()
        assert StorageConfig.from_mapping({}).credentials_for("x") is None

    def test_it_is_a_config_error_the_worker_already_reports(self):
        assert issubclass(StorageConfigError, ConfigError)

    def test_a_missing_file_is_named(self, tmp_path: Path):
        path = tmp_path / "absent.json"

        with pytest.raises(
            StorageConfigError, match=re.escape(f"cannot read storage config {path}")
        ):
            StorageConfig.from_file(str(path))

    def test_invalid_json_says_where_without_echoing_the_text(self, tmp_path: Path):
        path = tmp_path / "storage.json"
        path.write_text('{"buckets": {"b": {"secret_access_key": "leak-me",}}}')

        with pytest.raises(StorageConfigError, match=r"not valid JSON.*line 1") as caught:
            StorageConfig.from_file(path)

        assert "leak-me" not in str(caught.value)

    def test_non_utf8_text_is_refused(self, tmp_path: Path):
        path = tmp_path / "storage.json"
        path.write_bytes(b'{"buckets": "\xff"}')

        with pytest.raises(StorageConfigError, match="not UTF-8"):
            StorageConfig.from_file(path)

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (["buckets"], "top level must be a JSON object"),
            ({"bucket": {}}, "unknown top-level keys"),
            ({"buckets": []}, "'buckets' must be an object"),
            ({"buckets": {"b": "key:secret"}}, r"buckets\.b must be an object"),
            ({"buckets": {"": CREDENTIALS}}, "bucket name must not be empty"),
            ({"buckets": {"b": {"access_key_id": "k"}}}, r"b\.secret_access_key is required"),
            ({"buckets": {"b": CREDENTIALS | {"access_key_id": 7}}}, "access_key_id must be"),
            ({"buckets": {"b": CREDENTIALS | {"region_name": " "}}}, "region_name must be"),
            ({"buckets": {"b": CREDENTIALS | {"endpoint": "x"}}}, r"unknown keys \['endpoint'\]"),
            (
                {"buckets": {"b": CREDENTIALS | {"endpoint_url": "s3.example.net"}}},
                "endpoint_url must be an http",
            ),
            (
                {"buckets": {"b": CREDENTIALS | {"addressing_style": "host"}}},
                "addressing_style must be one of",
            ),
        ],
    )
    def test_a_malformed_config_is_refused_with_the_key_named(self, data: Any, message: str):
        with pytest.raises(StorageConfigError, match=message) as caught:
            StorageConfig.from_mapping(data, source="storage.json")

        assert str(caught.value).startswith("storage.json")
        assert "very-secret-read-key" not in str(caught.value)


def test_a_check_at_the_longest_read_timeout_allowed_still_fits_in_its_job() -> None:
    # Otherwise RQ would kill a check on a dead endpoint before it could say why.
    defaults = inspect.signature(StorageVerifier).parameters
    attempts = defaults["max_attempts"].default
    connect_s = defaults["connect_timeout_s"].default

    assert attempts * (connect_s + MAX_STORAGE_READ_TIMEOUT_S) < JOB_TIMEOUT_S

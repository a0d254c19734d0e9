"""webhook.store.keys: the one place a Redis key is spelled, with a per-session hash tag."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import load_example
from webhook.errors import PayloadError
from webhook.schemas import load_callback
from webhook.store import keys

ROOT = Path(__file__).resolve().parents[3]
KEYS_MODULE = ROOT / "webhook" / "store" / "keys.py"
SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"


def key_functions() -> dict[str, Callable[..., str]]:
    """The public functions of keys.py that return a key (not a handoff member)."""
    return {
        name: func
        for name, func in inspect.getmembers(keys, inspect.isfunction)
        if func.__module__ == keys.__name__
        and not name.startswith("_")
        and "handoff_member" not in name
        and name != "shard_of"
    }


def parameters(func: Callable[..., str]) -> list[str]:
    return list(inspect.signature(func).parameters)


def per_session() -> list[str]:
    return sorted(n for n, f in key_functions().items() if parameters(f) == ["sid"])


def global_keys() -> list[str]:
    return sorted(n for n, f in key_functions().items() if "sid" not in parameters(f))


def sharded() -> list[str]:
    return sorted(n for n, f in key_functions().items() if "shard" in parameters(f))


def cluster_hash_tag(key: str) -> str | None:
    """What Redis Cluster hashes: the text of the first non-empty {...}, else None."""
    start = key.find("{")
    if start == -1:
        return None
    end = key.find("}", start + 1)
    if end in (-1, start + 1):
        return None
    return key[start + 1 : end]


def python_sources() -> list[Path]:
    return sorted(
        path
        for package in ("webhook", "workers")
        for path in (ROOT / package).rglob("*.py")
        if ".venv" not in path.parts
    )


def test_the_scan_sees_the_packages() -> None:
    sources = python_sources()

    assert KEYS_MODULE in sources
    assert any(p.parts[-2] == "workers" for p in sources)


# A string literal that starts a key: "agora:..., f"agora:..., 'agora:...
KEY_LITERAL = re.compile(r"""[fbr]?["']agora:""")


def test_no_module_but_keys_spells_a_redis_key() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in python_sources()
        if path != KEYS_MODULE
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if KEY_LITERAL.search(line)
    ]

    assert offenders == []


def test_the_classification_covers_every_key_function() -> None:
    assert per_session() == [
        "calls", "events", "files", "notices", "recording", "sequences", "session",
        "session_alerts", "session_handoffs", "session_lock",
    ]  # fmt: skip
    assert set(per_session()) | set(global_keys()) == set(key_functions())


@pytest.mark.parametrize("name", per_session())
def test_every_per_session_key_carries_the_sid_hash_tag(name: str) -> None:
    key = key_functions()[name](SID)

    assert key.startswith(f"{keys.PREFIX}:")
    assert f"{{{SID}}}" in key
    assert cluster_hash_tag(key) == SID


def test_per_session_keys_of_one_sid_are_distinct() -> None:
    made = [key_functions()[name](SID) for name in per_session()]

    assert len(set(made)) == len(made)


def test_per_session_keys_of_two_sids_never_collide() -> None:
    one = {key_functions()[name](SID) for name in per_session()}
    other = {key_functions()[name](SID[::-1]) for name in per_session()}

    assert one.isdisjoint(other)


@pytest.mark.parametrize("name", global_keys())
def test_global_keys_carry_no_hash_tag_on_one_primary(name: str) -> None:
    func = key_functions()[name]
    key = func(*["class1024" for p in parameters(func) if p != "shard"])

    assert key.startswith(f"{keys.PREFIX}:")
    assert "{" not in key
    assert "}" not in key


@pytest.mark.parametrize("name", sharded())
def test_a_sharded_global_key_carries_its_shard_as_the_hash_tag(name: str) -> None:
    func = key_functions()[name]
    args = ["class1024" for p in parameters(func) if p != "shard"]

    made = {func(*args, shard=n) for n in range(keys.SHARDS)}

    assert {cluster_hash_tag(k) for k in made} == {f"g{n}" for n in range(keys.SHARDS)}
    assert func(*args) not in made


def test_every_global_key_the_callback_path_writes_is_sharded() -> None:
    assert {"outcomes_in_minute", "pending_handoffs", "refusals_by_client", "rejected",
            "sessions_by_activity", "sessions_by_cname", "stats"} <= set(sharded())  # fmt: skip


def test_shards_spread_sids_evenly_and_never_move() -> None:
    counts = [0] * keys.SHARDS
    for n in range(16_000):
        counts[keys.shard_of(f"sid-{n}")] += 1

    assert min(counts) > 800
    assert keys.shard_of(SID) == keys.shard_of(SID)


@pytest.mark.parametrize("sid", ["}x", "a{b}", "{"])
def test_a_sid_that_would_break_the_hash_tag_never_reaches_the_keys(sid: str) -> None:
    body = load_example("31_")
    body["payload"]["sid"] = sid

    with pytest.raises(PayloadError) as refused:
        load_callback(body)

    assert "sid" in refused.value.errors["payload"]


def test_a_handoff_member_parses_back_into_its_ids() -> None:
    member = keys.handoff_member(SID, "042b393a8973450a0603ac823b95cc8b", "1749549601200-0")

    assert keys.parse_handoff_member(member) == (
        SID,
        "042b393a8973450a0603ac823b95cc8b",
        "1749549601200-0",
    )

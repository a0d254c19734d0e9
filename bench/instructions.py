"""`make bench-instructions`: what one callback costs redis-server, in instructions.

The ingestion benchmark's rates move with whatever else the machine runs (on one day
everything here ran twice as slow); instruction counts do not. This starts redis-server
under valgrind's callgrind (AOF on, as `make run` and the benchmark run it), writes the
same realistic callbacks through each of

- floor: the durable floor's one SET of the body;
- noop: a record script that does nothing, with the real one's 12 keys and 17 arguments
  (what entering a script with them costs);
- dedupe_log: a script that only dedupes on noticeId (HSETNX) and appends to the
  session's log (XADD);
- commands_only: the real script's ten Redis calls for a new event, none of its logic;
- record: the service's record script (webhook/store/lua/record_callback.lua);

and counts the instructions redis-server executed per callback, in user space (the
kernel's side of the socket and the AOF write is not counted), after a warm-up. The same
binary and inputs give the same counts, whatever else the machine is doing.

    python -m bench.instructions [--calls 2000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis

from bench.traffic import build_sessions, interleave
from bench.variant_scripts import (
    COMMANDS_ONLY_LUA,
    DEDUPE_LOG_LUA,
    NOOP_LUA,
    store_with_script,
)
from webhook.events import Callback
from webhook.intake import parse_json
from webhook.redis_server import RedisServer
from webhook.schemas import load_callback
from webhook.store import CallbackStore

WARM_UP = 200
# Whole recordings side by side, so the summaries and logs grow as in production.
CONCURRENT_SESSIONS = 30


@dataclass
class CallgrindRedis(RedisServer):
    """redis-server under callgrind; counting starts at zero() and is read by count()."""

    out_file: Path = field(default_factory=lambda: Path(tempfile.mkdtemp()) / "callgrind.out")

    def command(self) -> list[str]:
        return [
            "valgrind", "--tool=callgrind", "--dump-instr=no",
            f"--callgrind-out-file={self.out_file}", *super().command(),
        ]  # fmt: skip

    def _control(self, option: str) -> None:
        if self.process is None:
            raise RuntimeError("redis-server is not running")
        subprocess.run(
            ["callgrind_control", option, str(self.process.pid)],  # noqa: S607  # valgrind's tool
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def zero(self) -> None:
        self._control("--zero")

    def count(self) -> int:
        """Instructions since zero(), read from the dump this asks for."""
        before = set(self.out_file.parent.glob(f"{self.out_file.name}.*"))
        self._control("--dump")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for dump in set(self.out_file.parent.glob(f"{self.out_file.name}.*")) - before:
                match = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.M)
                if match:
                    return int(match.group(1))
            time.sleep(0.1)
        raise TimeoutError("callgrind wrote no dump")


def callbacks(count: int) -> list[tuple[Callback, bytes]]:
    """count callbacks of whole recordings, loaded once: every target gets the same ones."""
    sessions = build_sessions(count // 60 + CONCURRENT_SESSIONS, seed=11)
    events = interleave(sessions, concurrent=CONCURRENT_SESSIONS)
    bodies = (json.dumps(body, separators=(",", ":")).encode() for body in events)
    return [(load_callback(parse_json(body)), body) for body in itertools.islice(bodies, count)]


TARGETS = ("floor", "noop", "dedupe_log", "commands_only", "record")
SCRIPTS = {"noop": NOOP_LUA, "dedupe_log": DEDUPE_LOG_LUA, "commands_only": COMMANDS_ONLY_LUA}


def writer(target: str, redis: Redis) -> Callable[[Callback, bytes], object]:
    """One callback's write to Redis, as the target makes it."""
    if target == "floor":
        return lambda _, body: redis.set(f"floor:{uuid.uuid4().hex}", body)
    store = store_with_script(SCRIPTS[target])(redis) if target in SCRIPTS else CallbackStore(redis)
    return lambda callback, body: store.record(callback, body, received_ms=int(time.time() * 1000))


def instructions_per_callback(
    target: str, traffic: list[tuple[Callback, bytes]], work: Path
) -> float:
    """Instructions per callback of traffic after the first WARM_UP of them."""
    server = CallgrindRedis(data_dir=work / target)
    server.start(timeout_s=120)  # valgrind starts slowly
    redis = Redis(port=server.port)
    try:
        write = writer(target, redis)
        for callback, body in traffic[:WARM_UP]:  # loads the script, grows the buffers
            write(callback, body)
        server.zero()
        for callback, body in traffic[WARM_UP:]:
            write(callback, body)
        return server.count() / (len(traffic) - WARM_UP)
    finally:
        redis.close()
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="callbacks counted per target")
    parser.add_argument("--out", type=Path, help="where the JSON goes")
    args = parser.parse_args(argv)
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    traffic = callbacks(WARM_UP + args.calls)
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as work:
        counts = {t: instructions_per_callback(t, traffic, Path(work)) for t in TARGETS}
    print(f"\n== redis-server instructions per callback ({args.calls} callbacks, AOF on)")
    for target, count in counts.items():
        print(f"{target:14} {count:10,.0f}   {count / counts['floor']:5.1f}x the floor's SET")
    if args.out:
        args.out.write_text(json.dumps({"calls": args.calls, "per_callback": counts}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

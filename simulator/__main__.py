"""`python -m simulator`: run the Agora simulator until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Sequence

from simulator.config import SimulatorConfig
from simulator.server import SimulatorServer
from simulator.service import CloudRecordingService

logger = logging.getLogger("simulator")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--callback-url", required=True, help="where NCS callbacks are POSTed")
    parser.add_argument("--callback-secret", required=True, help="the NCS secret that signs them")
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--customer-id", required=True, help="REST Basic auth user")
    parser.add_argument("--customer-secret", required=True, help="REST Basic auth password")
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="real seconds per Agora second"
    )
    parser.add_argument("--s3-endpoint", help="write every recording here, whatever its vendor")
    parser.add_argument("--s3-access-key", help="overrides storageConfig.accessKey")
    parser.add_argument("--s3-secret-key", help="overrides storageConfig.secretKey")
    parser.add_argument("--seed", type=int, help="seed for the reorder fault's shuffles")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    config = SimulatorConfig(
        app_id=args.app_id,
        customer_id=args.customer_id,
        customer_secret=args.customer_secret,
        callback_url=args.callback_url,
        callback_secret=args.callback_secret,
        time_scale=args.time_scale,
        s3_endpoint=args.s3_endpoint,
        s3_access_key=args.s3_access_key,
        s3_secret_key=args.s3_secret_key,
        seed=args.seed,
    )
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    server = SimulatorServer(CloudRecordingService(config), args.host, args.port).start()
    stopping.wait()
    logger.info("stopping")
    server.stop()


if __name__ == "__main__":
    main()

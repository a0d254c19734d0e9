"""`make demo`: the whole pipeline on this machine, a clean recording and a failing one.

Starts a private redis-server, an S3-compatible server (moto), the web app under gunicorn,
one worker with the scheduler and the Agora simulator; then records two sessions the way an
app server would (acquire/start/stop with our Agora client, forwarding start and stop to
/api/v1/recordings): one clean, one whose upload goes to Agora's backup and never reaches
the bucket. Deadlines are shortened to seconds so the five-minute alert shows in the demo.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from moto.server import ThreadedMotoServer
from redis import Redis

from webhook.agora_client import AgoraClient
from webhook.redis_server import RedisServer, free_port
from webhook.store.alerts import AlertStore
from webhook.store.recordings import RecordingStore

ROOT = Path(__file__).resolve().parent.parent
SECRET = "demo-ncs-secret"
TOKEN = "demo-api-token-for-the-tour"
DEADLINE_S = 5


def say(text: str) -> None:
    print(text, flush=True)  # noqa: T201  # the demo talks to the person running it


def wait(url: str) -> None:
    for _ in range(150):
        try:
            urllib.request.urlopen(url, timeout=1).close()  # noqa: S310  # our own loopback URL
            return
        except OSError as err:
            if getattr(err, "code", None):
                return
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def post(url: str, body: dict[str, Any], headers: dict[str, str], method: str = "POST") -> None:
    request = urllib.request.Request(  # noqa: S310  # our own loopback URL
        url, data=json.dumps(body).encode(), method=method,
        headers={"Content-Type": "application/json", **headers},
    )  # fmt: skip
    urllib.request.urlopen(request, timeout=10).close()  # noqa: S310  # same


def main() -> int:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log
    work = Path(tempfile.mkdtemp(prefix="agora-demo-"))
    redis_server = RedisServer(data_dir=work / "redis").start()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, s3_port = moto.get_host_and_port()
    s3 = f"http://{host}:{s3_port}"
    storage = work / "storage.json"
    storage.write_text(json.dumps({"buckets": {"demo-recordings": {
        "access_key_id": "demo", "secret_access_key": "demo", "endpoint_url": s3}}}))  # fmt: skip
    import boto3  # dev dependency, needed only here

    boto3.client("s3", endpoint_url=s3, region_name="us-east-1", aws_access_key_id="demo",
                 aws_secret_access_key="demo").create_bucket(Bucket="demo-recordings")  # fmt: skip
    web_port, sim_port = free_port(), free_port()
    web, sim = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{sim_port}"
    env = os.environ | {
        "REDIS_URL": redis_server.url, "AGORA_CALLBACK_SECRETS": SECRET, "APP_ENV": "production",
        "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING", "API_TOKENS": TOKEN,
        "GUNICORN_BIND": f"127.0.0.1:{web_port}", "STORAGE_CONFIG": str(storage),
        "BACKUP_DEADLINE_SECONDS": str(DEADLINE_S), "UPLOAD_STATUS_DEADLINE_SECONDS": "5",
        "RECORDER_START_DEADLINE_SECONDS": "5", "SWEEP_INTERVAL_SECONDS": "1",
        "BACKUP_RECHECK_SECONDS": "3",
    }  # fmt: skip
    log = (work / "processes.log").open("ab")
    processes = [
        subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py",
                          "wsgi:app"], cwd=ROOT, env=env, stdout=log, stderr=log),
        subprocess.Popen([sys.executable, "-m", "workers"], cwd=ROOT, env=env, stdout=log,
                         stderr=log),
        subprocess.Popen([sys.executable, "-m", "simulator", "--port", str(sim_port),
                          "--callback-url", f"{web}/agora/callback", "--callback-secret", SECRET,
                          "--app-id", "demo", "--customer-id", "cid", "--customer-secret", "cs",
                          "--time-scale", "0.02", "--s3-endpoint", s3, "--s3-access-key", "demo",
                          "--s3-secret-key", "demo"], cwd=ROOT, env=env, stdout=log, stderr=log),
    ]  # fmt: skip
    redis = Redis.from_url(redis_server.url)
    try:
        wait(f"{web}/readyz")
        wait(f"{sim}/_simulator/stats")
        say(f"service {web}, simulator {sim}, S3 {s3}, logs in {work}/processes.log\n")
        sessions = {}
        for cname, faults in (("clean-class", []), ("unlucky-class", ["backuped_never_restored"])):
            post(f"{sim}/_simulator/faults/{cname}", {"faults": faults}, {}, method="PUT")
            with AgoraClient(sim, "demo", "cid", "cs") as agora:
                request = {"storageConfig": {
                    "vendor": 11, "region": 0, "bucket": "demo-recordings", "accessKey": "demo",
                    "secretKey": "demo", "fileNamePrefix": ["demo", cname],
                    "extensionParams": {"endpoint": s3}}}  # fmt: skip
                resource_id = agora.acquire(cname, "1001")
                sid = agora.start(resource_id, "individual", cname, "1001", request)
                auth = {"Authorization": f"Bearer {TOKEN}"}
                post(f"{web}/api/v1/recordings", {"resourceId": resource_id, "sid": sid,
                     "cname": cname, "uid": "1001", "mode": "individual",
                     "clientRequest": request}, auth)  # fmt: skip
                say(f"{cname}: started {sid} ({', '.join(faults) or 'no faults'})")
                time.sleep(2)
                stop = agora.stop(resource_id, sid, "individual", cname, "1001")
                post(f"{web}/api/v1/recordings/{sid}/stop",
                     {"httpStatus": stop.http_status, "response": stop.raw}, auth)  # fmt: skip
                say(f"{cname}: stopped, Agora says uploadingStatus={stop.uploading_status}")
            sessions[cname] = sid
        say(f"\nwatching for {DEADLINE_S + 10} s (the backup deadline is {DEADLINE_S} s here) ...")
        time.sleep(DEADLINE_S + 10)
        recordings, alerts = RecordingStore(redis), AlertStore(redis)
        for cname, sid in sessions.items():
            found = alerts.for_session(sid)
            say(f"\n{cname} ({sid}): state {recordings.facts(sid).state}")
            for alert in found or ():
                say(f"  ALERT {alert.severity} {alert.kind}: {alert.message}")
                say(f"        missing: {', '.join(alert.evidence.get('missing', [])) or '-'}")
            if not found:
                say("  no alert")
        return 0
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
        log.close()
        moto.stop()
        redis_server.stop()


if __name__ == "__main__":
    sys.exit(main())

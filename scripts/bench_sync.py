"""Content sync benchmark: see scripts/bench-sync. Usage: bench_sync.py [LATENCY_SAMPLES]."""

import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lambda_harness import Bootstrap, RuntimeApi, binary  # noqa: E402
from test_sync_content import (  # noqa: E402
    PREFIX, SHARE, Bucket, PrivateMoto, client, create_table, eventbridge, make_changes, sqs_batch,
    shuffled_with_duplicates,
)

import botocore.config  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main(samples: int) -> int:
    moto = PrivateMoto()
    runtime = RuntimeApi()
    bootstrap = None
    try:
        s3 = client("s3", moto.url, config=botocore.config.Config(s3={"addressing_style": "path"}))
        table = create_table(client("dynamodb", moto.url))
        bucket = f"bench-{uuid.uuid4().hex[:10]}"
        s3.create_bucket(Bucket=bucket)
        parameter = f"/fargate-smb-bench/admin-{uuid.uuid4().hex[:8]}"
        password = open(os.environ["FARGATE_SMB_ADMIN_PASSWORD_FILE"]).read()
        client("ssm", moto.url).put_parameter(Name=parameter, Value=password, Type="SecureString")
        folder = f"bench-sync-{uuid.uuid4().hex[:6]}"
        bootstrap = Bootstrap(binary("sync-content", profile="release"), runtime, {
            "AWS_ENDPOINT_URL": moto.url, "BUCKET": bucket, "PREFIX": PREFIX, "SHARE_UNC": SHARE, "FOLDER": folder,
            "ADMIN_USERNAME": "EXAMPLE\\Administrator", "ADMIN_PASSWORD_PARAMETER": parameter,
            "STATE_TABLE": table, "PARALLELISM": "16",
        })

        # Load: 9,091 changes to 200 keys + 10 % duplicates, shuffled, SQS batches of 1,000.
        b = Bucket(s3, bucket)
        rng = random.Random(11)
        keys = [f"{PREFIX}d{i % 10}/k{i}.txt" for i in range(200)]
        plan = [("delete" if rng.random() < 0.15 else "put", rng.choice(keys)) for _ in range(9091)]
        make_changes(b, plan)
        events = shuffled_with_duplicates(b.events, 0.1, seed=3)
        load = {}
        for batch in (1000, 100):
            # A fresh folder and table per run: the second run must not find everything applied.
            if batch == 100:
                bootstrap.stop()
                table = create_table(client("dynamodb", moto.url))
                bootstrap = Bootstrap(binary("sync-content", profile="release"), runtime, {**bootstrap.env, "STATE_TABLE": table,
                                                                                       "FOLDER": folder + "-b"})
            started = time.monotonic()
            failed = 0
            for i in range(0, len(events), batch):
                payload, _ = sqs_batch(bucket, events[i:i + batch])
                status, body = runtime.invoke(payload, timeout=600)
                assert status == "response", body
                failed += len(body["batchItemFailures"])
            elapsed = time.monotonic() - started
            load[batch] = (elapsed, failed)

        # Latency: one 100 KiB object per event, one event per invocation (EventBridge shape).
        latencies = []
        body = os.urandom(100 * 1024)
        for i in range(samples + 5):
            e = b.put(f"{PREFIX}latency/obj-{i:04}.bin", body)
            event = eventbridge(bucket, e)
            started = time.monotonic()
            status, answer = runtime.invoke(event)
            elapsed = time.monotonic() - started
            assert status == "response" and answer["copied"] == 1, answer
            if i >= 5:  # the first few warm the container (first HTTPS client, first session)
                latencies.append(elapsed * 1000)

        # Witness: the last object, downloaded with smbclient, is the object.
        with tempfile.TemporaryDirectory() as tmp:
            auth = Path(tmp) / "auth"
            auth.write_text(f"username = Administrator\npassword = {password}\ndomain = EXAMPLE\n")
            auth.chmod(0o600)
            local = Path(tmp) / "last.bin"
            subprocess.run(["smbclient", "//127.0.0.1/share", "-A", str(auth), "-m", "SMB3", "--client-protection=encrypt",
                            "-c", f'get "{bootstrap.env["FOLDER"]}\\latency\\obj-{samples + 4:04}.bin" "{local}"'],
                           check=True, capture_output=True, timeout=60)
            assert local.read_bytes() == body

        print("functions/sync-content, release bootstrap, moto (own server) + Samba on loopback:")
        for batch, (elapsed, failed) in load.items():
            print(f"  load: {len(events):,} events (10 % duplicates, shuffled), SQS batches of {batch:>5}: "
                  f"{elapsed:6.1f} s, {len(events) / elapsed:7.0f} events/s, {failed} failed records")
        print(f"  latency, invocation to file in place, 100 KiB, one event per invocation, n={len(latencies)}: "
              f"p50 {statistics.median(latencies):.1f} ms, p95 {percentile(latencies, 95):.1f} ms, "
              f"min {min(latencies):.1f} ms, max {max(latencies):.1f} ms")
        return 0
    finally:
        if bootstrap:
            bootstrap.stop()
        runtime.close()
        moto.stop()


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))

"""functions/sync-content end to end: the real bootstrap applies S3 events (EventBridge events
and SQS batches of S3 notification records) from moto's S3 to the Samba share, with its per-key
state in moto's DynamoDB. Witnesses: boto3 (what the bucket holds) and smbclient (what the
folder holds, downloaded independently of our SMB code).

moto's S3 → SQS/EventBridge notifications carry a fixed sequencer, so the events here are built
from the real objects (real ETags from PutObject) with sequencers that increase per key, as
S3's do; keys are URL-encoded as S3 encodes them in notification records."""

import json
import os
import random
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import boto3
import botocore.config
import pytest

from lambda_harness import ROOT, Bootstrap, binary
from test_web_content import PROBE, PROBE_BODY, SHARE, Smb

PREFIX = "site/"


@pytest.fixture
def smb(tmp_path):
    return Smb(tmp_path)


class PrivateMoto:
    """A moto server of its own (also used by scripts/bench_sync.py). moto keeps every object it
    ever created (its model tracker holds them until a reset), so the load run's ~9,000 object
    versions would slow the shared stack's moto for every later test; here they go away with
    the process."""

    def __init__(self):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"fargate-smb-sync-moto-{port}.log", "wb")
        self.process = subprocess.Popen([str(ROOT / ".venv" / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                        stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=2).read()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"moto did not start on {self.url}") from None
                time.sleep(0.2)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def moto():
    server = PrivateMoto()
    yield server.url
    server.stop()


def client(service: str, url: str, **kw):
    return boto3.client(service, endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing",
                        region_name="us-east-1", **kw)


@pytest.fixture(scope="module")
def s3(moto):
    return client("s3", moto, config=botocore.config.Config(s3={"addressing_style": "path"}))


@pytest.fixture(scope="module")
def dynamodb(moto):
    return client("dynamodb", moto)


def create_table(dynamodb) -> str:
    """The table the template creates: (scope, objectKey)."""
    name = f"sync-state-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "scope", "AttributeType": "S"},
                              {"AttributeName": "objectKey", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "scope", "KeyType": "HASH"}, {"AttributeName": "objectKey", "KeyType": "RANGE"}],
    )
    return name


@pytest.fixture
def table(dynamodb):
    return create_table(dynamodb)


@pytest.fixture
def bucket(s3):
    name = f"sc-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def folder():
    return f"sct-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def admin_parameter(moto, smb):
    name = f"/fargate-smb-test/sync-admin-{uuid.uuid4().hex[:8]}"
    client("ssm", moto).put_parameter(Name=name, Value=smb.admin_password, Type="SecureString")
    return name


@pytest.fixture
def start(runtime, moto):
    """Start the sync-content bootstrap against this module's moto; stopped after the test."""
    started: list[Bootstrap] = []

    def run(env: dict) -> Bootstrap:
        b = Bootstrap(binary("sync-content"), runtime, {"AWS_ENDPOINT_URL": moto, **env})
        started.append(b)
        return b

    yield run
    for b in started:
        b.stop()


@pytest.fixture
def fn(start, runtime, bucket, folder, table, admin_parameter):
    bootstrap = start({
        "BUCKET": bucket, "PREFIX": "site", "SHARE_UNC": SHARE, "FOLDER": folder,
        "ADMIN_USERNAME": "EXAMPLE\\Administrator", "ADMIN_PASSWORD_PARAMETER": admin_parameter,
        "STATE_TABLE": table, "PARALLELISM": "8",
    })
    return bootstrap, runtime


class Bucket:
    """Changes the bucket through boto3 and records the event S3 would send for each change,
    with a sequencer that increases per key."""

    def __init__(self, s3, name: str):
        self.s3, self.name = s3, name
        self.counter = 0x0055AED6DCD90281E5
        self.events: list[dict] = []

    def _seq(self) -> str:
        self.counter += random.randint(1, 4096)
        return f"{self.counter:018X}"

    def put(self, key: str, body: bytes) -> dict:
        etag = self.s3.put_object(Bucket=self.name, Key=key, Body=body)["ETag"].strip('"')
        e = {"kind": "put", "key": key, "etag": etag, "size": len(body), "seq": self._seq()}
        self.events.append(e)
        return e

    def delete(self, key: str) -> dict:
        self.s3.delete_object(Bucket=self.name, Key=key)
        e = {"kind": "delete", "key": key, "seq": self._seq()}
        self.events.append(e)
        return e

    def listing(self, prefix: str = PREFIX) -> dict[str, bytes]:
        out = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            for o in page.get("Contents", []):
                out[o["Key"][len(prefix):]] = self.s3.get_object(Bucket=self.name, Key=o["Key"])["Body"].read()
        return out


def encode(key: str) -> str:
    """As S3 writes keys into notification records: form encoding, `/` kept."""
    return urllib.parse.quote_plus(key, safe="/")


def record(bucket: str, e: dict) -> dict:
    obj = {"key": encode(e["key"]), "sequencer": e["seq"]}
    if e["kind"] == "put":
        obj.update({"size": e["size"], "eTag": e["etag"]})
    return {
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-25T00:00:00.000Z",
        "eventName": "ObjectCreated:Put" if e["kind"] == "put" else "ObjectRemoved:Delete",
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "sync", "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": obj},
    }


def sqs_batch(bucket: str, events: list[dict]) -> tuple[dict, list[str]]:
    """One SQS message per S3 event (as S3 sends them); returns the event and the message ids."""
    ids = [str(uuid.uuid4()) for _ in events]
    records = [{
        "messageId": mid, "receiptHandle": "h", "body": json.dumps({"Records": [record(bucket, e)]}),
        "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:sync", "awsRegion": "us-east-1",
    } for mid, e in zip(ids, events)]
    return {"Records": records}, ids


def eventbridge(bucket: str, e: dict) -> dict:
    obj = {"key": encode(e["key"]), "sequencer": e["seq"]}
    if e["kind"] == "put":
        obj.update({"size": e["size"], "etag": e["etag"]})
    return {
        "version": "0", "id": str(uuid.uuid4()),
        "detail-type": "Object Created" if e["kind"] == "put" else "Object Deleted",
        "source": "aws.s3", "account": "123456789012", "time": "2026-11-25T00:00:00Z", "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {"version": "0", "bucket": {"name": bucket}, "object": obj,
                   "reason": "PutObject" if e["kind"] == "put" else "DeleteObject"},
    }


def deliver_sqs(runtime, bucket: str, events: list[dict], batch: int, rounds: int = 5) -> list[dict]:
    """Deliver in batches like the SQS event source; redeliver what the function reports failed.
    Returns the events still failing after `rounds` deliveries."""
    pending = events
    for _ in range(rounds):
        failed = []
        for i in range(0, len(pending), batch):
            chunk = pending[i:i + batch]
            payload, ids = sqs_batch(bucket, chunk)
            status, body = runtime.invoke(payload, timeout=300)
            assert status == "response", body
            by_id = dict(zip(ids, chunk))
            failed += [by_id[f["itemIdentifier"]] for f in body["batchItemFailures"]]
        if not failed:
            return []
        pending = failed
    return pending


def share_files(smb: Smb, folder: str) -> dict[str, bytes]:
    return {k: v for k, v in smb.tree(folder).items() if not k.startswith(".fargate-smb")}


def shuffled_with_duplicates(events: list[dict], ratio: float, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = events + [rng.choice(events) for _ in range(int(len(events) * ratio))]
    rng.shuffle(out)
    return out


def test_shuffled_duplicated_sqs_and_eventbridge_converge(fn, s3, bucket, folder, smb):
    bootstrap, runtime = fn
    b = Bucket(s3, bucket)
    rng = random.Random(7)
    keys = [f"{PREFIX}index.html", f"{PREFIX}css/site.css", f"{PREFIX}img/red flower+1.jpg",
            f"{PREFIX}deep/a/b/ü.txt", f"{PREFIX}gone.txt", f"{PREFIX}50%.txt"]
    for round_ in range(4):
        for k in keys:
            b.put(k, f"{k} v{round_} {rng.random()}".encode() * rng.randint(1, 50))
    b.delete(f"{PREFIX}gone.txt")
    b.delete(f"{PREFIX}css/site.css")
    b.put(f"{PREFIX}css/site.css", b"body { color: red }")  # re-created after its delete
    events = shuffled_with_duplicates(b.events, 0.5, seed=1)
    half = len(events) // 2
    left = deliver_sqs(runtime, bucket, events[:half], batch=7)
    assert left == []
    for e in events[half:]:
        status, body = runtime.invoke(eventbridge(bucket, e))
        assert status == "response", body
    assert share_files(smb, folder) == b.listing()
    assert "red flower+1.jpg" in smb.run("ls img\\*", directory=folder).stdout
    # Everything again, in another order: nothing changes, everything is a duplicate or older.
    again = shuffled_with_duplicates(b.events, 0.0, seed=2)
    payload, _ = sqs_batch(bucket, again)
    status, body = runtime.invoke(payload)
    assert status == "response" and body == {"batchItemFailures": []}
    assert share_files(smb, folder) == b.listing()
    status, body = runtime.invoke(eventbridge(bucket, b.events[0]))
    assert status == "response"
    assert body["copied"] == 0 and body["duplicates"] + body["older"] == 1, body


def test_malicious_keys_are_rejected_by_name_and_not_retried(fn, s3, bucket, folder, smb):
    bootstrap, runtime = fn
    b = Bucket(s3, bucket)
    good = b.put(f"{PREFIX}ok.txt", b"fine")
    bad_keys = [f"{PREFIX}../x", f"{PREFIX}a/CON.txt", f"{PREFIX}a:b", f"{PREFIX}trailing.", f"{PREFIX}.fargate-smb-content.json"]
    bad = [b.put(k, b"evil") for k in bad_keys]
    outside = b.put("elsewhere/x.txt", b"not ours")
    payload, ids = sqs_batch(bucket, [good, *bad, outside])
    status, body = runtime.invoke(payload)
    assert status == "response" and body == {"batchItemFailures": []}, body
    out = bootstrap.output()
    for k in bad_keys:
        assert json.dumps(k)[1:-1] in out, f"{k} not reported"
    assert '"rule":"dot-segment"' in out and '"rule":"reserved-name"' in out and '"rule":"colon"' in out
    assert '"rule":"trailing-dot-or-space"' in out and '"rule":"reserved-by-fargate-smb"' in out
    # EventBridge: the rejection is in the response, by name.
    status, body = runtime.invoke(eventbridge(bucket, bad[1]))
    assert status == "response", body
    assert body["rejected"][0]["key"] == f"{PREFIX}a/CON.txt" and "CON" in body["rejected"][0]["reason"]
    assert share_files(smb, folder) == {"ok.txt": b"fine"}


def test_the_bookkeeping_folder_and_the_old_manifest_are_neither_synced_over_nor_removed(fn, s3, bucket, folder, smb):
    """With FOLDER empty the content folder is the share root, whose .fargate-smb holds ShareAcl's
    records and WebContent's manifests; and a folder WebContent deployed before the manifest moved
    keeps .fargate-smb-content.json until its next Update. No event may write over them and
    reconcile must not remove them. The rule does not depend on where the folder is, so it is
    shown in a folder of its own (reconciling the shared share's root would remove every other
    test's folder)."""
    bootstrap, runtime = fn
    b = Bucket(s3, bucket)
    b.put(f"{PREFIX}index.html", b"i")
    assert deliver_sqs(runtime, bucket, b.events, batch=10) == []
    ours = {
        ".fargate-smb/acl/record.json": b"an ACL record",
        ".fargate-smb/acl/unmatched.json": b"no object maps here",
        ".fargate-smb/content/manifest.json": b"a manifest",
        ".fargate-smb-content.json": b"an old-location manifest",
    }
    smb.run(f'mkdir "{folder}\\.fargate-smb"; mkdir "{folder}\\.fargate-smb\\acl"; mkdir "{folder}\\.fargate-smb\\content"')
    for path, body in ours.items():
        smb.put(folder, path.replace("/", "\\"), body)
    evil = [f"{PREFIX}.fargate-smb/content/manifest.json", f"{PREFIX}.FARGATE-SMB/acl/record.json",
            f"{PREFIX}.fargate-smb-content.json", f"{PREFIX}.fargate-smb"]
    puts = [b.put(k, b"evil") for k in evil]
    payload, _ = sqs_batch(bucket, puts)
    status, body = runtime.invoke(payload)
    assert status == "response" and body == {"batchItemFailures": []}, body
    assert bootstrap.output().count('"rule":"reserved-by-fargate-smb"') >= len(evil)
    status, body = runtime.invoke({"reconcile": True})
    assert status == "response", body
    r = body["reconcile"]
    assert r["removed"] == [] and r["failed"] == [] and r["copied"] == [], r
    assert sorted(x["key"] for x in r["rejected"]) == sorted(evil), r
    # Deletes of those keys are rejected too: nothing of ours goes.
    dels = [b.delete(k) for k in evil]
    payload, _ = sqs_batch(bucket, dels)
    status, body = runtime.invoke(payload)
    assert status == "response" and body == {"batchItemFailures": []}, body
    status, body = runtime.invoke({"reconcile": True})
    assert status == "response" and body["reconcile"]["removed"] == [], body
    assert smb.tree(folder) == {"index.html": b"i", **ours}


def test_a_failing_record_is_the_only_batch_failure_and_succeeds_on_retry(fn, s3, bucket, folder, smb):
    bootstrap, runtime = fn
    b = Bucket(s3, bucket)
    smb.mkdir(folder)
    smb.put(folder, "blocker", b"a file where the sync needs a folder")
    blocked = b.put(f"{PREFIX}blocker/page.html", b"<p>blocked</p>")
    fine = [b.put(f"{PREFIX}p{i}.html", f"<p>{i}</p>".encode()) for i in range(5)]
    payload, ids = sqs_batch(bucket, [fine[0], fine[1], blocked, fine[2], fine[3], fine[4]])
    status, body = runtime.invoke(payload)
    assert status == "response", body
    assert body == {"batchItemFailures": [{"itemIdentifier": ids[2]}]}
    # The obstacle goes (reconcile removes a file with no object); the retried record applies.
    status, body = runtime.invoke({"reconcile": True})
    assert status == "response", body
    assert "blocker" in body["reconcile"]["removed"], body
    left = deliver_sqs(runtime, bucket, [blocked], batch=10, rounds=1)
    assert left == []
    assert share_files(smb, folder) == b.listing()
    # An EventBridge event that fails fails the invocation (Lambda retries it).
    smb.put(folder, "blocker2", b"x")
    e = b.put(f"{PREFIX}blocker2/x.html", b"x")
    status, body = runtime.invoke(eventbridge(bucket, e))
    assert status == "error", body


def test_reconcile_repairs_drift_and_reports(fn, s3, bucket, folder, smb):
    bootstrap, runtime = fn
    b = Bucket(s3, bucket)
    for i in range(6):
        b.put(f"{PREFIX}f{i}.txt", f"file {i}".encode())
    b.put(f"{PREFIX}sub/x.txt", b"x")
    b.put(f"{PREFIX}bad:name.txt", b"rejected")
    assert deliver_sqs(runtime, bucket, b.events, batch=10) == []
    smb.put(folder, "extra.txt", b"put by hand")
    smb.run('mkdir "stray"; put /etc/hostname "stray\\h.txt"', directory=folder)
    smb.run('del "f1.txt"', directory=folder)
    smb.put(folder, "f2.txt", b"changed by hand")
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}missed.txt", Body=b"no event for this one")
    status, body = runtime.invoke({"reconcile": True})
    assert status == "response", body
    r = body["reconcile"]
    assert set(r["copied"]) == {f"{PREFIX}f1.txt", f"{PREFIX}f2.txt", f"{PREFIX}missed.txt"}, r
    assert set(r["removed"]) == {"extra.txt", "stray/h.txt"}, r
    assert [x["key"] for x in r["rejected"]] == [f"{PREFIX}bad:name.txt"]
    assert r["failed"] == []
    assert share_files(smb, folder) == {k: v for k, v in b.listing().items() if k != "bad:name.txt"}
    assert not smb.exists(f"{folder}\\stray")
    # A second reconcile finds nothing to fix.
    status, body = runtime.invoke({"reconcile": True})
    assert status == "response" and body["reconcile"]["copied_count"] == 0 and body["reconcile"]["removed_count"] == 0, body


def make_changes(b: Bucket, plan: list[tuple[str, str]], threads: int = 8) -> None:
    """Apply (kind, key) changes to the bucket, keys in parallel, each key's changes in order;
    the events get sequencers in plan order (so increasing per key, as S3's)."""
    from concurrent.futures import ThreadPoolExecutor

    events = []
    for kind, key in plan:
        e = {"kind": kind, "key": key, "seq": b._seq()}
        events.append(e)
    by_key: dict[str, list[dict]] = {}
    for e in events:
        by_key.setdefault(e["key"], []).append(e)

    def run(changes: list[dict]) -> None:
        for n, e in enumerate(changes):
            if e["kind"] == "put":
                body = f"{e['key']} {n}".encode()
                e["etag"] = b.s3.put_object(Bucket=b.name, Key=e["key"], Body=body)["ETag"].strip('"')
                e["size"] = len(body)
            else:
                b.s3.delete_object(Bucket=b.name, Key=e["key"])

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, by_key.values()))
    b.events.extend(events)


def test_load_10000_events_converge(fn, s3, bucket, folder, smb):
    """10,000 events (9,091 changes to 200 keys + 10 % duplicates), shuffled, in SQS batches of
    1,000 records."""
    bootstrap, runtime = fn
    b = Bucket(s3, bucket)
    rng = random.Random(11)
    keys = [f"{PREFIX}d{i % 10}/k{i}.txt" for i in range(200)]
    plan = [("delete" if rng.random() < 0.15 else "put", rng.choice(keys)) for _ in range(9091)]
    make_changes(b, plan)
    events = shuffled_with_duplicates(b.events, 0.1, seed=3)
    assert len(events) == 10000
    assert deliver_sqs(runtime, bucket, events, batch=1000) == []
    assert share_files(smb, folder) == b.listing()
    out = bootstrap.output()
    assert '"message":"batch applied"' in out


def test_bad_configuration_names_the_variable(start, runtime):
    start({"BUCKET": "b", "SHARE_UNC": SHARE, "ADMIN_SECRET_ID": "x"})
    status, body = runtime.invoke({"reconcile": True})
    assert status == "error" and "STATE_TABLE" in json.dumps(body), body


def test_sample_events_parse(fn):
    """The samples in events/sync-content are accepted (their bucket is not this one: ignored)."""
    bootstrap, runtime = fn
    for name in ["eventbridge-object-created.json", "eventbridge-object-deleted.json", "sqs-batch.json"]:
        payload = json.loads((ROOT / "events" / "sync-content" / name).read_text())
        status, body = runtime.invoke(payload)
        assert status == "response", (name, body)
        if "batchItemFailures" in body:
            assert body["batchItemFailures"] == []
        else:
            assert body["ignored"] == 1 and body["copied"] == 0, body


def test_eventbridge_events_through_the_queue_and_unreadable_bodies_go_to_the_dlq(fn, s3, bucket, folder, smb):
    """The template's wiring: EventBridge rules target the SQS queue, so each message body is an
    EventBridge event. A body that is neither that nor S3 notification records is returned as a
    batch failure, so the queue's redrive policy parks it in the dead-letter queue."""
    bootstrap, runtime = fn
    b = Bucket(s3, bucket)
    put = b.put(f"{PREFIX}via queue/page.html", b"<p>through EventBridge and SQS</p>")
    ids = [str(uuid.uuid4()) for _ in range(2)]
    base = {"receiptHandle": "h", "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:sync", "awsRegion": "us-east-1"}
    payload = {"Records": [
        {**base, "messageId": ids[0], "body": json.dumps(eventbridge(bucket, put))},
        {**base, "messageId": ids[1], "body": "{\"not\": \"an event\"}"},
    ]}
    status, body = runtime.invoke(payload)
    assert status == "response", body
    assert body == {"batchItemFailures": [{"itemIdentifier": ids[1]}]}
    assert share_files(smb, folder) == {"via queue/page.html": b"<p>through EventBridge and SQS</p>"}
    assert "returned for the dead-letter queue" in bootstrap.output()


# --- Issue 15: reconcile against concurrent events, names that differ in case, versioned buckets,
# temporaries, resumable passes.

class HoldProxy:
    """An HTTP forwarder in front of moto that, when armed, holds the answer to the next S3
    ListObjectsV2 (after moto computed it) until released: what a reconcile sees when an object
    is put, and applied by its event, while its listing is in flight."""

    def __init__(self, moto_url: str, hold=lambda method, path, headers: method == "GET" and "list-type=2" in path):
        import http.server
        import threading

        self.moto = moto_url
        self.hold = hold
        self.armed = False
        self.listed = threading.Event()
        self.release = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "accept-encoding")}
                request = urllib.request.Request(proxy.moto + self.path, data=body if body else None, headers=headers,
                                                 method=self.command)
                try:
                    with urllib.request.urlopen(request, timeout=60) as r:
                        status, answer, reply_headers = r.status, r.read(), r.headers
                except urllib.error.HTTPError as e:
                    status, answer, reply_headers = e.code, e.read(), e.headers
                if proxy.armed and proxy.hold(self.command, self.path, self.headers):
                    proxy.armed = False
                    proxy.listed.set()
                    proxy.release.wait(60)
                self.send_response(status)
                for k, v in reply_headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def sync_env(bucket, folder, table, admin_parameter, **extra) -> dict:
    return {"BUCKET": bucket, "PREFIX": "site", "SHARE_UNC": SHARE, "FOLDER": folder,
            "ADMIN_USERNAME": "EXAMPLE\\Administrator", "ADMIN_PASSWORD_PARAMETER": admin_parameter,
            "STATE_TABLE": table, "PARALLELISM": "8", **extra}


def deliver(runtime, bucket: str, events: list[dict]) -> dict:
    status, body = runtime.invoke(sqs_batch(bucket, events)[0], timeout=120)
    assert status == "response" and body["batchItemFailures"] == [], body
    return body


def apply_one(runtime, bucket: str, e: dict) -> dict:
    status, body = runtime.invoke(eventbridge(bucket, e), timeout=120)
    assert status == "response", body
    return body


def reconcile(runtime, **kw) -> dict:
    status, body = runtime.invoke({"reconcile": True}, timeout=300, **kw)
    assert status == "response", body
    return body["reconcile"]


def test_reconcile_keeps_a_file_whose_object_was_put_during_its_listing(start, moto, s3, bucket, folder, table,
                                                                         admin_parameter, smb):
    """Item 1: objects put and applied by their events while reconcile lists the bucket. Its
    listing does not have them, its look at the share may: `gone.txt` was deleted (no event
    yet) before reconcile started and is put again, and applied, while the listing is held;
    `fresh.txt` is new. Both must stay; only the real stray goes."""
    import threading

    from lambda_harness import RuntimeApi

    b = Bucket(s3, bucket)
    env = sync_env(bucket, folder, table, admin_parameter)
    proxy = HoldProxy(moto)
    direct_runtime, held_runtime = RuntimeApi(), RuntimeApi()
    direct = Bootstrap(binary("sync-content"), direct_runtime, {**env, "AWS_ENDPOINT_URL": moto})
    held = Bootstrap(binary("sync-content"), held_runtime, {**env, "AWS_ENDPOINT_URL": proxy.url})
    try:
        assert apply_one(direct_runtime, bucket, b.put(f"{PREFIX}old.txt", b"old"))["copied"] == 1
        assert apply_one(direct_runtime, bucket, b.put(f"{PREFIX}gone.txt", b"first"))["copied"] == 1
        s3.delete_object(Bucket=bucket, Key=f"{PREFIX}gone.txt")  # its event is late
        smb.put(folder, "stale.txt", b"no object")
        result: dict = {}
        proxy.armed = True
        worker = threading.Thread(target=lambda: result.update(r=reconcile(held_runtime)))
        worker.start()
        assert proxy.listed.wait(60), "reconcile never listed the bucket"
        assert apply_one(direct_runtime, bucket, b.put(f"{PREFIX}gone.txt", b"back again"))["copied"] == 1
        assert apply_one(direct_runtime, bucket, b.put(f"{PREFIX}fresh.txt", b"new"))["copied"] == 1
        proxy.release.set()
        worker.join(120)
        assert not worker.is_alive()
        r = result["r"]
        assert share_files(smb, folder) == {"old.txt": b"old", "gone.txt": b"back again", "fresh.txt": b"new"}
        assert r["removed"] == ["stale.txt"] and r["failed"] == [], r
        assert r["kept"] == 1, r
    finally:
        held.stop()
        direct.stop()
        held_runtime.close()
        direct_runtime.close()
        proxy.close()


def one_file_ci(smb: Smb, folder: str) -> tuple[str, bytes]:
    files = share_files(smb, folder)
    assert len(files) == 1, files
    return next(iter(files.items()))


def test_a_key_differing_only_in_case_never_removes_the_owners_file(fn, s3, bucket, folder, smb):
    """Item 2: INDEX.HTML uploaded by mistake and deleted leaves index.html's file as it was; when
    the owner is deleted while the other lives, the other is handed the file."""
    bootstrap, runtime = fn
    b = Bucket(s3, bucket)
    assert apply_one(runtime, bucket, b.put(f"{PREFIX}index.html", b"the real page"))["copied"] == 1
    body = apply_one(runtime, bucket, b.put(f"{PREFIX}INDEX.HTML", b"uploaded by mistake"))
    assert one_file_ci(smb, folder)[1] == b"the real page"
    assert body["copied"] == 0 and body["collision_count"] == 1, body
    assert "index.html" in body["collisions"][0]["reason"], body
    body = apply_one(runtime, bucket, b.delete(f"{PREFIX}INDEX.HTML"))
    assert one_file_ci(smb, folder)[1] == b"the real page"
    assert body["deleted"] == 0, body
    # The other way round: the owner goes while the other key lives.
    body = apply_one(runtime, bucket, b.put(f"{PREFIX}INDEX.HTML", b"the new page"))
    assert body["collision_count"] == 1, body
    body = apply_one(runtime, bucket, b.delete(f"{PREFIX}index.html"))
    assert body["handed_over"] == 1, body
    assert one_file_ci(smb, folder)[1] == b"the new page"
    # Its own later change applies normally; reconcile finds nothing to fix.
    body = apply_one(runtime, bucket, b.put(f"{PREFIX}INDEX.HTML", b"the newer page"))
    assert body["copied"] == 1, body
    assert one_file_ci(smb, folder)[1] == b"the newer page"
    r = reconcile(runtime)
    assert r["copied_count"] == 0 and r["removed_count"] == 0 and r["collision_count"] == 0, r


def test_reconcile_settles_two_live_keys_of_one_file_and_records_the_other(fn, s3, bucket, folder, smb):
    bootstrap, runtime = fn
    b = Bucket(s3, bucket)
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}docs/Guide.txt", Body=b"upper first")
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}docs/guide.txt", Body=b"lower second")
    r = reconcile(runtime)
    # S3's order (UTF-8 bytes): "G" < "g", so Guide.txt owns the file.
    assert share_files(smb, folder) == {"docs/Guide.txt": b"upper first"}
    assert r["copied"] == [f"{PREFIX}docs/Guide.txt"], r
    r = reconcile(runtime)
    assert r["copied_count"] == 0 and r["removed_count"] == 0 and r["unchanged"] == 1, r
    second = r
    # The owner's deletion hands the file to the key reconcile recorded.
    body = apply_one(runtime, bucket, b.delete(f"{PREFIX}docs/Guide.txt"))
    assert smb.get(f"{folder}\\docs\\guide.txt") == b"lower second"
    assert body["handed_over"] == 1, body
    assert second.get("collision_count") == 1 and second["collisions"][0]["key"] == f"{PREFIX}docs/guide.txt", second


@pytest.fixture
def versioned(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def test_versioned_bucket_undelete_and_permanent_delete_apply_the_current_version(fn, s3, versioned, folder, smb):
    """Item 4: a delete event in a versioned bucket does not mean the key is gone."""
    bootstrap, runtime = fn
    bucket, key = versioned, f"{PREFIX}page.html"
    b = Bucket(s3, bucket)
    apply_one(runtime, bucket, b.put(key, b"version one"))
    v2 = s3.put_object(Bucket=bucket, Key=key, Body=b"version two!")
    e2 = {"kind": "put", "key": key, "etag": v2["ETag"].strip('"'), "size": 12, "seq": b._seq()}
    assert apply_one(runtime, bucket, e2)["copied"] == 1
    assert smb.get(f"{folder}\\page.html") == b"version two!"
    # Deleting an old version (as a lifecycle rule expiring it does) leaves the current one.
    versions = s3.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    v1 = next(v["VersionId"] for v in versions if v["VersionId"] != v2["VersionId"])
    s3.delete_object(Bucket=bucket, Key=key, VersionId=v1)
    body = apply_one(runtime, bucket, {"kind": "delete", "key": key, "seq": b._seq()})
    assert smb.get(f"{folder}\\page.html") == b"version two!"
    assert body["unchanged"] == 1 and body["copied"] == 0 and body["restored"] == 0, body
    v1 = s3.put_object(Bucket=bucket, Key=key, Body=b"version one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key=key, Body=b"version two!")
    e2 = {"kind": "put", "key": key, "etag": v2["ETag"].strip('"'), "size": 12, "seq": b._seq()}
    assert apply_one(runtime, bucket, e2)["copied"] == 1
    # Permanently deleting the current version makes version one current again.
    s3.delete_object(Bucket=bucket, Key=key, VersionId=v2["VersionId"])
    body = apply_one(runtime, bucket, {"kind": "delete", "key": key, "seq": b._seq()})
    assert smb.get(f"{folder}\\page.html") == b"version one"
    assert body["restored"] == 1 and body["deleted"] == 0, body
    # A delete marker removes the file; removing the marker (an undelete) brings it back.
    marker = s3.delete_object(Bucket=bucket, Key=key)
    assert marker.get("DeleteMarker") is True
    body = apply_one(runtime, bucket, {"kind": "delete", "key": key, "seq": b._seq()})
    assert body["deleted"] == 1, body
    assert smb.get(f"{folder}\\page.html") is None
    s3.delete_object(Bucket=bucket, Key=key, VersionId=marker["VersionId"])
    body = apply_one(runtime, bucket, {"kind": "delete", "key": key, "seq": b._seq()})
    assert smb.get(f"{folder}\\page.html") == b"version one"
    assert body["restored"] == 1, body
    # The undeleted key owns its file again: a key differing only in case is a collision.
    body = apply_one(runtime, bucket, b.put(f"{PREFIX}PAGE.HTML", b"another key"))
    assert body["collision_count"] == 1 and body["copied"] == 0, body
    assert smb.get(f"{folder}\\page.html") == b"version one"


def test_a_same_size_change_by_hand_is_repaired(fn, s3, bucket, folder, smb):
    """Item 6: the state records the file's last write time; a same-size edit changes it."""
    bootstrap, runtime = fn
    b = Bucket(s3, bucket)
    apply_one(runtime, bucket, b.put(f"{PREFIX}same.txt", b"aaaa"))
    smb.put(folder, "same.txt", b"bbbb")
    r = reconcile(runtime)
    assert r["copied"] == [f"{PREFIX}same.txt"], r
    assert smb.get(f"{folder}\\same.txt") == b"aaaa"


def test_reconcile_sweeps_stale_temporaries(start, s3, bucket, folder, table, admin_parameter, runtime, smb):
    """Item 5: a temporary file of a killed copy is removed once older than TEMP_MAX_AGE_SECONDS."""
    start(sync_env(bucket, folder, table, admin_parameter, TEMP_MAX_AGE_SECONDS="1"))
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}a.txt", Body=b"a")
    smb.run(f'mkdir "{folder}"')
    smb.put(folder, ".a.txt.fargate-smb-tmp-0a1b2c3d", b"half a file")
    time.sleep(2.5)  # older than the 1 s threshold; the threshold itself is the unit under test
    r = reconcile(runtime)
    assert share_files(smb, folder) == {"a.txt": b"a"}
    assert r["temporaries_removed"] == 1, r


def test_a_reconcile_cut_short_resumes_without_copying_again(start, s3, bucket, folder, table, admin_parameter,
                                                             runtime, smb):
    """Item 7: a run with no time left stops after some progress and keeps a cursor; the next
    runs continue from it, and every file is copied exactly once."""
    start(sync_env(bucket, folder, table, admin_parameter, PARALLELISM="2"))
    expected = {}
    # Three files in the first folder: more than PARALLELISM, so the first run stops inside it.
    for name in ["r1.txt", "r2.txt", "r3.txt"] + [f"{d}/{i}.txt" for d in ("a", "b", "b/c", "d") for i in range(3)]:
        s3.put_object(Bucket=bucket, Key=f"{PREFIX}{name}", Body=name.encode())
        expected[name] = name.encode()
    runs, copied, incomplete = 0, 0, 0
    while True:
        runs += 1
        assert runs < 40, "reconcile never completed"
        # The first run starts the pass; the later ones are what the continue schedule sends.
        if runs == 1:
            r = reconcile(runtime, deadline_s=0.5)
        else:
            status, body = runtime.invoke({"reconcile": "continue"}, timeout=300, deadline_s=0.5)
            assert status == "response", body
            r = body["reconcile"]
        copied += r["copied_count"]
        assert r["failed"] == [], r
        if r["complete"]:
            break
        incomplete += 1
        assert r["stopped_after"] is not None or r["copied_count"] > 0, r
    assert incomplete >= 2, (runs, copied)
    assert copied == len(expected), (runs, copied)
    assert share_files(smb, folder) == expected
    # Nothing pending: "continue" does nothing; a full pass finds nothing to fix.
    status, body = runtime.invoke({"reconcile": "continue"}, timeout=60)
    assert status == "response" and body == {"reconcile": {"pending": False}}, body
    r = reconcile(runtime)
    assert r["complete"] and r["copied_count"] == 0 and r["resumed_after"] is None, r


def web_content_create(moto, bucket: str, folder: str, admin_parameter: str) -> None:
    """Custom::WebContent's Create of the folder from the prefix, by its real bootstrap: the
    content, its manifest and the health probe, as a deployed stack has them before any event."""
    from lambda_harness import CloudFormation, ResponseUrl, RuntimeApi

    wc_runtime, responses = RuntimeApi(), ResponseUrl()
    web = Bootstrap(binary("web-content"), wc_runtime, {"AWS_ENDPOINT_URL": moto})
    try:
        cfn = CloudFormation(wc_runtime, responses, "Custom::WebContent", "WebContent")
        answer = cfn.create({"ShareUnc": SHARE, "Folder": folder, "Bucket": bucket, "Prefix": "site",
                             "AdminUsername": "EXAMPLE\\Administrator", "AdminPasswordParameter": admin_parameter})
        assert answer["Status"] == "SUCCESS", answer
    finally:
        web.stop()
        wc_runtime.close()
        responses.close()


def test_the_first_reconcile_after_web_content_trusts_its_manifest(fn, moto, s3, bucket, folder, admin_parameter, smb):
    """Item 7: Custom::WebContent's manifest witnesses what is in place, so the first reconcile
    (no sync state yet) copies nothing it copied; a file changed by hand since is still found.
    WebContent's health probe has no object and is not taken for a stray."""
    bootstrap, runtime = fn
    objects = {f"{PREFIX}{n}": n.encode() * 3 for n in ["a.txt", "b.txt", "docs/c.txt", "docs/deep/d.txt"]}
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    web_content_create(moto, bucket, folder, admin_parameter)
    smb.put(f"{folder}\\docs", "c.txt", b"XXXXXXXXXXXXXXX")  # same size, by hand
    r = reconcile(runtime)
    assert r["copied"] == [f"{PREFIX}docs/c.txt"] and r["removed_count"] == 0, r
    assert r["unchanged"] == 3, r
    assert share_files(smb, folder) == {PROBE: PROBE_BODY, **{k[len(PREFIX):]: v for k, v in objects.items()}}


def test_the_health_probe_is_neither_synced_over_nor_removed(fn, moto, s3, bucket, folder, admin_parameter, smb):
    """The probe WebContent writes at the top of the folder (the load balancer's health check path)
    is fargate-smb's own: an object of its name, in any case (NTFS: one file), is rejected by its
    event and by reconcile, so is its delete, and reconcile never removes the probe as a file with
    no object. Below the top the name is an ordinary key, synced and removed as any other."""
    bootstrap, runtime = fn
    b = Bucket(s3, bucket)
    b.put(f"{PREFIX}index.html", b"i")
    web_content_create(moto, bucket, folder, admin_parameter)
    probe = f"{folder}\\{PROBE}"
    assert smb.get(probe) == PROBE_BODY

    evil = [f"{PREFIX}fargate-smb-health.txt", f"{PREFIX}FARGATE-SMB-HEALTH.TXT"]
    puts = [b.put(k, b"from the bucket") for k in evil]
    deep = f"{PREFIX}sub/fargate-smb-health.txt"
    b.put(deep, b"an ordinary file below the top")
    deliver(runtime, bucket, b.events)
    lines = [json.loads(x) for x in bootstrap.stdout_lines() if '"reserved-by-fargate-smb"' in x]
    assert {x.get("key") for x in lines} >= set(evil), lines
    body = apply_one(runtime, bucket, puts[1])
    assert body["rejected"][0]["key"] == evil[1] and "health probe" in body["rejected"][0]["reason"], body
    assert smb.get(probe) == PROBE_BODY, "an object was synced over the probe"
    assert smb.get(f"{folder}\\sub\\{PROBE}") == b"an ordinary file below the top"

    r = reconcile(runtime)
    assert r["removed"] == [] and r["copied"] == [] and r["failed"] == [], r
    assert sorted(x["key"] for x in r["rejected"]) == sorted(evil), r
    assert all("health probe" in x["reason"] for x in r["rejected"]), r
    assert smb.get(probe) == PROBE_BODY

    # Their deletes are rejected too; reconcile with no object of that name keeps the probe.
    deliver(runtime, bucket, [b.delete(k) for k in evil])
    r = reconcile(runtime)
    assert r["removed"] == [] and r["removed_count"] == 0 and r["failed"] == [], r
    assert smb.get(probe) == PROBE_BODY, "the probe was removed"
    deliver(runtime, bucket, [b.delete(deep)])
    assert share_files(smb, folder) == {"index.html": b"i", PROBE: PROBE_BODY}


def test_an_event_that_loses_its_done_write_applies_the_winner_again(start, moto, s3, bucket, folder, table,
                                                                      admin_parameter, smb):
    """Item 6: an older event passes its re-check, a newer event is applied in full, and only then
    is the older copy renamed over it. Its "done" write loses, and the winner's content must be
    put back, not just logged."""
    import threading

    from lambda_harness import RuntimeApi

    key = f"{PREFIX}race.txt"
    b = Bucket(s3, bucket)
    older = b.put(key, b"older content")
    proxy = HoldProxy(moto, hold=lambda method, path, headers: headers.get("X-Amz-Target", "").endswith(".GetItem"))
    held_runtime, direct_runtime = RuntimeApi(), RuntimeApi()
    held = Bootstrap(binary("sync-content"), held_runtime,
                     {**sync_env(bucket, folder, table, admin_parameter), "AWS_ENDPOINT_URL": proxy.url})
    direct = Bootstrap(binary("sync-content"), direct_runtime,
                       {**sync_env(bucket, folder, table, admin_parameter), "AWS_ENDPOINT_URL": moto})
    try:
        result: dict = {}
        proxy.armed = True
        worker = threading.Thread(target=lambda: result.update(r=apply_one(held_runtime, bucket, older)))
        worker.start()
        # The older event has downloaded its object and re-checked its claim (still its own).
        assert proxy.listed.wait(60), "the older event never re-checked its claim"
        newer = b.put(key, b"the newer content")
        assert apply_one(direct_runtime, bucket, newer)["copied"] == 1
        assert smb.get(f"{folder}\\race.txt") == b"the newer content"
        proxy.release.set()
        worker.join(120)
        assert not worker.is_alive()
        assert held.output().count("applying the winner's state again") == 1, held.output()[-3000:]
        assert smb.get(f"{folder}\\race.txt") == b"the newer content"
    finally:
        held.stop()
        direct.stop()
        held_runtime.close()
        direct_runtime.close()
        proxy.close()


def test_a_contender_survives_its_own_late_delete_event(fn, s3, bucket, folder, smb):
    """A contender's events out of order: put (1), delete (2) and put again (3) happen in S3 in
    that order, and arrive 1, 3, 2. The late delete must not drop it: when the owner is deleted,
    it is handed the file, with its latest content."""
    bootstrap, runtime = fn
    b = Bucket(s3, bucket)
    apply_one(runtime, bucket, b.put(f"{PREFIX}Logo.svg", b"the owner"))
    e1 = b.put(f"{PREFIX}LOGO.SVG", b"contender v1")
    e2 = b.delete(f"{PREFIX}LOGO.SVG")
    e3 = b.put(f"{PREFIX}LOGO.SVG", b"contender v3")
    for e in (e1, e3, e2):
        body = apply_one(runtime, bucket, e)
        assert body["failed"] == [], body
    assert one_file_ci(smb, folder)[1] == b"the owner"
    body = apply_one(runtime, bucket, b.delete(f"{PREFIX}Logo.svg"))
    assert one_file_ci(smb, folder)[1] == b"contender v3"
    assert body["handed_over"] == 1, body


def test_names_ntfs_tells_apart_are_two_files(fn, s3, bucket, folder, smb):
    """Item 3: NTFS upcases one unit to one unit, so ß is not SS and a ligature is not its
    letters: these keys are distinct files, not collisions; σ and Σ are one name."""
    bootstrap, runtime = fn
    b = Bucket(s3, bucket)
    for key in ["straße.html", "STRASSE.html", "ﬁle.txt", "FILE.txt"]:
        body = apply_one(runtime, bucket, b.put(f"{PREFIX}{key}", key.encode()))
        assert body["copied"] == 1 and body["collision_count"] == 0, (key, body)
    body = apply_one(runtime, bucket, b.put(f"{PREFIX}σ.txt", b"sigma"))
    assert body["copied"] == 1, body
    body = apply_one(runtime, bucket, b.put(f"{PREFIX}Σ.txt", b"capital sigma"))
    assert body["collision_count"] == 1, body
    files = share_files(smb, folder)
    assert files == {
        "straße.html": "straße.html".encode(), "STRASSE.html": b"STRASSE.html",
        "ﬁle.txt": "ﬁle.txt".encode(), "FILE.txt": b"FILE.txt", "σ.txt": b"sigma"}, files
    r = reconcile(runtime)
    assert r["copied_count"] == 0 and r["removed_count"] == 0, r

"""SMB connections that drop halfway: the real bootstraps reach the Samba share through
tools/fault-proxy, which resets a connection after a given number of bytes. A WebContent copy,
a sync batch and a rotation proof must each either finish after reconnecting or fail cleanly —
never a partial file under its final name, never a manifest or state entry for a file that is
not there. Witnesses: smbclient straight to the share (not through the proxy), boto3 (the
bucket, the state table, the secret), and the proxy's own count of the faults it fired."""

import json
import os
import subprocess
import uuid

import pytest

from fault_proxy import Proxy
from test_rotate_password_secret import ENVIRONMENT, Rotation, ecs, failing, no_leak, rot, step  # noqa: F401 (fixtures)
from test_rotate_password import Fn
from test_sync_content import (PREFIX, Bucket, admin_parameter, bucket, dynamodb, folder, moto, s3, share_files,  # noqa: F401
                               smb, sqs_batch, start, sync_env, table)
from test_web_content import Smb, manifest_of, manifest_path, props, upload

KIB = 1024


@pytest.fixture
def proxies():
    started: list[Proxy] = []

    def make(*faults: str, connections: int = 1) -> Proxy:
        p = Proxy(*faults, connections=connections)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def no_partial_file(smb: Smb, folder: str, want: dict[str, bytes]) -> dict[str, bytes]:
    """Every file under its final name is whole (the source's bytes); the temporary files a
    dropped connection may leave are the only others. Returns the final-named files."""
    tree = smb.tree(folder)
    finals = {k: v for k, v in tree.items() if ".fargate-smb-tmp-" not in k and k != "fargate-smb-health.txt"}
    for name, data in finals.items():
        assert name in want, f"{name} is on the share but not in the source"
        assert data == want[name], f"{name} is under its final name with {len(data)} of {len(want[name])} bytes"
    return finals


# ---------------------------------------------------------------- WebContent


@pytest.fixture
def web(launch, runtime, responses):
    """CloudFormation's side of Custom::WebContent, with the bootstrap (for its log) beside it."""
    from lambda_harness import CloudFormation
    cfn = CloudFormation(runtime, responses, "Custom::WebContent", "WebContent")
    cfn.bootstrap = launch("web-content")
    return cfn


@pytest.fixture
def shared_s3(moto_url):
    import boto3
    import botocore.config
    return boto3.client("s3", endpoint_url=moto_url, aws_access_key_id="testing", aws_secret_access_key="testing",
                        region_name="us-east-1", config=botocore.config.Config(s3={"addressing_style": "path"}))


@pytest.fixture
def shared_admin_parameter(aws, smb):  # noqa: F811
    """The admin password in the shared moto's SSM (WebContent and rotation use that moto; the
    sync tests' fixtures start one of their own)."""
    name = f"/fargate-smb-test/fault-admin-{uuid.uuid4().hex[:8]}"
    aws.ssm.put_parameter(Name=name, Value=smb.admin_password, Type="SecureString")
    return name


def site(files: int, size: int) -> dict[str, bytes]:
    return {f"site/d{i % 4}/f{i:03}.bin": os.urandom(size) for i in range(files)}


def site_bucket(s3, files: int, size: int) -> tuple[str, dict[str, bytes]]:
    """A new bucket holding a site under `site/`: its name, and the files the copy must produce."""
    name = f"wc-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    objects = site(files, size)
    upload(s3, name, objects)
    return name, {k.removeprefix("site/"): v for k, v in objects.items()}


def reconnect_attempts(web) -> list[int]:
    return [json.loads(line)["attempt"] for line in web.bootstrap.stdout_lines() if "reconnecting to copy the rest" in line]


def test_a_webcontent_copy_survives_a_connection_reset_halfway(web, shared_s3, smb, folder, shared_admin_parameter, proxies):  # noqa: F811
    name, want = site_bucket(shared_s3, 40, 64 * KIB)
    proxy = proxies("reset up bytes 1048576")
    created = web.create(props(name, folder, shared_admin_parameter, Port=str(proxy.port), Sessions="1", Parallelism="8"))
    assert proxy.stats()["faults_fired"] == 1, "the reset never happened: the test proves nothing"
    assert created["Status"] == "SUCCESS", created["Reason"]
    assert reconnect_attempts(web) == [1]
    # Finished after reconnecting: the whole site, whole, and the manifest names exactly it; the
    # temporary files the dropped connection left were removed over the new one.
    assert no_partial_file(smb, folder, want) == want
    assert sorted(manifest_of(smb, folder)["files"]) == sorted(want)
    assert not [k for k in smb.tree(folder) if ".fargate-smb-tmp-" in k]


@pytest.mark.parametrize("files,size,parallelism", [(40, 64 * KIB, 8), (16, 1536 * KIB, 4)], ids=["compounded", "streamed"])
def test_a_webcontent_copy_survives_a_stalled_connection(web, shared_s3, smb, folder, shared_admin_parameter, proxies,  # noqa: F811
                                                         files, size, parallelism):
    """A stall, as a file server failover can leave a connection: the bytes are taken and nothing
    comes back, no reset ever arrives. The requests in flight wait out their timeout (20 s); the
    first that does marks the connection lost, so every later request fails at once instead of
    each waiting its own 20 s (one file after another, that would be minutes), and the copy
    goes on over a new connection. Small files are one compounded
    request each; files over the write size are streamed in several writes."""
    name, want = site_bucket(shared_s3, files, size)
    proxy = proxies("stall up bytes 1048576")
    created = web.create(props(name, folder, shared_admin_parameter, Port=str(proxy.port), Sessions="1",
                               Parallelism=str(parallelism)))
    assert proxy.stats()["faults_fired"] == 1, "the stall never happened: the test proves nothing"
    assert created["Status"] == "SUCCESS", created["Reason"]
    assert reconnect_attempts(web) == [1]
    lines = web.bootstrap.stdout_lines()
    # Only what was in flight waited out the timeout; the rest was refused without being sent.
    waited = [line for line in lines if "did not answer" in line]
    refused = [line for line in lines if "an earlier request found the connection lost" in line]
    assert 1 <= len(waited) <= parallelism and refused, (len(waited), len(refused))
    assert no_partial_file(smb, folder, want) == want
    assert sorted(manifest_of(smb, folder)["files"]) == sorted(want)
    assert not [k for k in smb.tree(folder) if ".fargate-smb-tmp-" in k]


def test_a_webcontent_copy_whose_connections_all_drop_fails_cleanly(web, shared_s3, smb, folder, shared_admin_parameter, proxies):  # noqa: F811
    name, want = site_bucket(shared_s3, 24, 64 * KIB)
    # Every connection is reset after 400 KiB: each attempt gets part of the way.
    proxy = proxies("reset up bytes 409600", connections=1000)
    created = web.create(props(name, folder, shared_admin_parameter, Port=str(proxy.port), Sessions="1"))
    assert created["Status"] == "FAILED", created
    assert "connection" in created["Reason"] and "127.0.0.1" in created["Reason"], created["Reason"]
    # Three attempts, each cut short by its own reset.
    assert reconnect_attempts(web) == [1, 2]
    assert proxy.stats()["faults_fired"] == 3, proxy.stats()
    finals = no_partial_file(smb, folder, want)
    # No manifest names a file that is not there (there may be none yet).
    listed = manifest_of(smb, folder)["files"] if smb.exists(manifest_path(folder)) else {}
    assert set(listed) <= set(finals), sorted(set(listed) - set(finals))
    # Once the network is back, the deploy tried again finishes the job (and sweeps nothing it
    # should keep: every file whole, the manifest exactly the site).
    again = web.create(props(name, folder, shared_admin_parameter, Sessions="1"))
    assert again["Status"] == "SUCCESS", again["Reason"]
    assert no_partial_file(smb, folder, want) == want
    assert sorted(manifest_of(smb, folder)["files"]) == sorted(want)


# ---------------------------------------------------------------- sync


def test_a_sync_batch_cut_by_a_connection_reset_fails_only_what_it_did_not_apply(start, runtime, s3, bucket, folder, table,  # noqa: F811
                                                                               admin_parameter, smb, dynamodb, proxies):  # noqa: F811
    proxy = proxies("reset up bytes 600000")
    start(sync_env(bucket, folder, table, admin_parameter, SMB_PORT=str(proxy.port)))
    b = Bucket(s3, bucket)
    events = [b.put(f"{PREFIX}p{i:02}.bin", os.urandom(64 * KIB)) for i in range(20)]
    payload, ids = sqs_batch(bucket, events)
    status, body = runtime.invoke(payload, timeout=300)
    assert status == "response", body
    assert proxy.stats()["faults_fired"] == 1, "the reset never happened"
    failed = {f["itemIdentifier"] for f in body["batchItemFailures"]}
    by_id = dict(zip(ids, events))
    want = {k.removeprefix(PREFIX): v for k, v in b.listing().items()}
    on_share = no_partial_file(smb, folder, want)
    # What the function reported applied is on the share, whole; its state says so.
    applied = {by_id[i]["key"].removeprefix(PREFIX) for i in ids if i not in failed}
    assert applied <= set(on_share), sorted(applied - set(on_share))
    # The state marks done only what is in place (a claim of a failed one stays unfinished,
    # and its redelivery finishes it).
    rows = dynamodb.scan(TableName=table)["Items"]
    done = {r["key"]["S"].removeprefix(PREFIX) for r in rows if r.get("phase", {}).get("S") == "done" and "key" in r}
    assert done <= set(on_share), sorted(done - set(on_share))
    assert applied <= done, sorted(applied - done)
    # SQS redelivers the failures: then everything is in place.
    retry, retry_ids = sqs_batch(bucket, [by_id[i] for i in ids if i in failed])
    status, body = runtime.invoke(retry, timeout=300)
    assert status == "response" and body["batchItemFailures"] == [], body
    assert share_files(smb, folder) == want


# ---------------------------------------------------------------- rotation proof


def test_a_rotation_proof_cut_by_a_connection_reset_is_retried(launch, runtime, rot, proxies):  # noqa: F811
    fn = Fn(launch, runtime)
    # The first SMB connection is reset during its logon (600 bytes in); the proof's next
    # attempt connects again.
    proxy = proxies("reset up bytes 600")
    token = str(uuid.uuid4())
    env = {"SMB_PORT": str(proxy.port), "PROOF_ATTEMPTS": "3"}
    for name in ("createSecret", "setSecret"):
        step(fn, rot, name, token, **env)
    proven = step(fn, rot, "testSecret", token, **env)
    assert proven["outcome"] == "proven", proven
    assert proxy.stats()["faults_fired"] == 1, "the reset never happened"
    step(fn, rot, "finishSecret", token, **env)
    assert rot.current_version() == token and rot.current_logs_on()
    no_leak(fn, rot)


def test_a_rotation_proof_whose_connections_all_drop_moves_nothing(launch, runtime, rot, proxies):  # noqa: F811
    fn = Fn(launch, runtime)
    proxy = proxies("reset up bytes 600", connections=1000)
    token = str(uuid.uuid4())
    env = {"SMB_PORT": str(proxy.port), "PROOF_ATTEMPTS": "2"}
    before = rot.value()
    for name in ("createSecret", "setSecret"):
        step(fn, rot, name, token, **env)
    message = failing(fn, rot, "testSecret", token, **env)
    assert "did not log on" in message and "2 attempt(s)" in message, message
    assert proxy.stats()["faults_fired"] >= 2
    message = failing(fn, rot, "finishSecret", token, **env)
    assert "AWSCURRENT was not moved" in message, message
    assert rot.value() == before and rot.current_logs_on()
    no_leak(fn, rot)

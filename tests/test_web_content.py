"""Custom::WebContent end to end: the real bootstrap copies from moto's S3 into the Samba share,
as the domain admin whose password it reads from moto's SSM. Witnesses: smbclient (downloads the
folder and lists it, independently of our SMB code) and boto3 (what the bucket holds)."""

import json
import os
import subprocess
import uuid
from pathlib import Path

import boto3
import botocore.config
import pytest

from conftest import samba_env
from lambda_harness import ROOT, STACK_ID, CloudFormation, domain_user

RESOURCE = "Custom::WebContent"
SHARE = "\\\\127.0.0.1\\share"
# Where versions before kept the manifest: in the (IIS-served) content folder itself.
LEGACY_MANIFEST = ".fargate-smb-content.json"
OWNER = f"{STACK_ID}/WebContent"
# The health probe WebContent writes at the top of the folder it fills once the copy succeeded:
# the load balancer's health check asks IIS for /content/fargate-smb-health.txt, so a task is
# healthy only while it really serves the share.
PROBE = "fargate-smb-health.txt"
PROBE_BODY = b"ok\n"


def folder_key(folder: str) -> str:
    """FNV-1a 128 of the folder, upcased char by char as NTFS does (derived independently of the
    Rust code)."""
    segments = [s for s in folder.replace("/", "\\").split("\\") if s]
    folded = "".join(c.upper() if len(c.upper()) == 1 else c for c in "\\".join(segments))
    h = 0x6C62272E07BB014262B821756295C58D
    for b in folded.encode():
        h = ((h ^ b) * 0x0000000001000000000000000000013B) % (1 << 128)
    return f"{h:032x}"


def manifest_path(folder: str) -> str:
    """The manifest's head of `folder`, relative to the share root: `.fargate-smb\\content\\<key>.json`."""
    return f".fargate-smb\\content\\{folder_key(folder)}.json"


def shards_folder(folder: str) -> str:
    """Where the records of `folder` live, one shard per folder of the content: `.fargate-smb\\content\\<key>`."""
    return f".fargate-smb\\content\\{folder_key(folder)}"


def shard_path(folder: str, within: str) -> str:
    return f"{shards_folder(folder)}\\{folder_key(within)}.json"


class Smb:
    """smbclient as the domain admin, on //127.0.0.1/share."""

    def __init__(self, tmp_path: Path):
        env = samba_env()
        self.admin_password = open(env["FARGATE_SMB_ADMIN_PASSWORD_FILE"]).read()
        self.tmp = tmp_path
        self.auth = tmp_path / "admin.auth"
        self.auth.write_text(f"username = Administrator\npassword = {self.admin_password}\ndomain = EXAMPLE\n")
        self.auth.chmod(0o600)

    def run(self, command: str, directory: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        args = ["smbclient", "//127.0.0.1/share", "-A", str(self.auth), "-m", "SMB3", "--client-protection=encrypt"]
        if directory:
            args += ["-D", directory]
        out = subprocess.run(args + ["-c", command], capture_output=True, text=True, timeout=120)
        if check:
            assert out.returncode == 0, out.stdout + out.stderr
        return out

    def tree(self, folder: str) -> dict[str, bytes]:
        """Every file under `folder`, downloaded by smbclient: relative path (with /) -> bytes."""
        local = self.tmp / f"get-{uuid.uuid4().hex[:8]}"
        local.mkdir()
        self.run(f'prompt OFF; recurse ON; lcd "{local}"; mget *', directory=folder)
        return {p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*") if p.is_file()}

    def put(self, folder: str, name: str, data: bytes) -> None:
        src = self.tmp / f"put-{uuid.uuid4().hex[:8]}"
        src.write_bytes(data)
        self.run(f'put "{src}" "{name}"', directory=folder)

    def mkdir(self, path: str) -> None:
        self.run(f'mkdir "{path}"')

    def exists(self, path: str) -> bool:
        out = self.run(f'ls "{path}"', check=False)
        return out.returncode == 0 and "NT_STATUS_NO_SUCH_FILE" not in out.stdout + out.stderr

    def get(self, path: str) -> bytes | None:
        """One file (relative to the share root), or None if it is not there."""
        local = self.tmp / f"one-{uuid.uuid4().hex[:8]}"
        out = self.run(f'get "{path}" "{local}"', check=False)
        if out.returncode != 0 or not local.exists():
            said = out.stdout + out.stderr
            assert any(f"NT_STATUS_{s}" in said for s in ("OBJECT_NAME_NOT_FOUND", "OBJECT_PATH_NOT_FOUND", "NO_SUCH_FILE")), said
            return None
        return local.read_bytes()


@pytest.fixture
def smb(tmp_path):
    return Smb(tmp_path)


@pytest.fixture(scope="module")
def s3(moto_url):
    return boto3.client(
        "s3", endpoint_url=moto_url, aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1",
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture
def bucket(s3):
    name = f"wc-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def admin_parameter(aws, smb):
    name = f"/fargate-smb-test/share-admin-{uuid.uuid4().hex[:8]}"
    aws.ssm.put_parameter(Name=name, Value=smb.admin_password, Type="SecureString")
    return name


@pytest.fixture
def fn(launch, runtime, responses):
    bootstrap = launch("web-content")
    return bootstrap, CloudFormation(runtime, responses, RESOURCE, "WebContent")


@pytest.fixture
def folder():
    return f"wct-{uuid.uuid4().hex[:8]}"


def upload(s3, bucket: str, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def props(bucket: str, folder: str, admin_parameter: str, **extra) -> dict:
    base = {
        "ShareUnc": SHARE,
        "Folder": folder,
        "Bucket": bucket,
        "Prefix": "site",
        "AdminUsername": "EXAMPLE\\Administrator",
        "AdminPasswordParameter": admin_parameter,
    }
    base.update(extra)
    return base


def content(tree: dict[str, bytes]) -> dict[str, bytes]:
    """The folder's files, which are only the copied ones: the manifest is not among them."""
    assert LEGACY_MANIFEST not in tree, "the manifest is in the served folder"
    return tree


def served(tree: dict[str, bytes]) -> dict[str, bytes]:
    """The folder as a successful Create or Update leaves it: the health probe at its top holding
    exactly `ok\\n`, beside the copied files (returned without it)."""
    assert tree.get(PROBE) == PROBE_BODY, f"the health probe is missing or wrong: {tree.get(PROBE)!r}"
    return content({k: v for k, v in tree.items() if k != PROBE})


SITE = {
    "site/index.html": b"<html><body>hello</body></html>\n",
    "site/css/site.css": b"body { color: #333 }\n",
    "site/img/deep/nested/logo.bin": bytes(range(256)) * 9,
    "site/empty.txt": b"",
    "site/img/": b"",  # a folder marker, as the S3 console makes them
}


def expected(objects: dict[str, bytes], prefix: str = "site/") -> dict[str, bytes]:
    return {k.removeprefix(prefix): v for k, v in objects.items() if not k.endswith("/")}


def test_copy_is_incremental_and_content_version_forces_a_full_copy(fn, s3, smb, bucket, folder, admin_parameter):
    bootstrap, cfn = fn
    big = os.urandom(5 * 1024 * 1024 + 17)  # several 1 MiB SMB writes, streamed
    objects = {**SITE, "site/downloads/big.bin": big, "other/not-copied.txt": b"outside the prefix"}
    upload(s3, bucket, objects)
    p = props(bucket, folder, admin_parameter, ContentVersion="1")

    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    assert created["PhysicalResourceId"] == f"{SHARE}\\{folder}"
    data = created["Data"]
    want = expected({k: v for k, v in objects.items() if k.startswith("site/")})
    assert (data["Copied"], data["Skipped"], data["Removed"], data["Rejected"]) == (str(len(want)), "0", "0", "0")
    assert data["Bytes"] == str(sum(len(v) for v in want.values()))
    assert data["ManifestPath"] == f"{SHARE}\\{manifest_path(folder)}"
    assert data["Path"] == f"{SHARE}\\{folder}"
    assert data["HealthProbePath"] == f"{SHARE}\\{folder}\\{PROBE}"
    tree = smb.tree(folder)
    assert served(tree) == want, sorted(tree)  # byte for byte, nested folders included
    assert not [k for k in tree if "fargate-smb-tmp" in k], "temporary files were left behind"
    manifest = manifest_of(smb, folder)
    assert manifest["files"]["downloads/big.bin"]["path"] == "downloads\\big.bin"
    assert manifest["files"]["downloads/big.bin"]["etag"] == s3.head_object(Bucket=bucket, Key="site/downloads/big.bin")["ETag"]

    # Nothing changed: nothing is copied.
    same = cfn.update(created["PhysicalResourceId"], p, p)
    assert same["Status"] == "SUCCESS", same
    assert (same["Data"]["Copied"], same["Data"]["Skipped"], same["Data"]["Bytes"]) == ("0", str(len(want)), "0")

    # One object changes: only it is copied.
    s3.put_object(Bucket=bucket, Key="site/css/site.css", Body=b"body { color: red }\n")
    changed = cfn.update(created["PhysicalResourceId"], p, p)
    assert changed["Status"] == "SUCCESS", changed
    assert (changed["Data"]["Copied"], changed["Data"]["Skipped"]) == ("1", str(len(want) - 1))
    assert changed["Data"]["Bytes"] == str(len(b"body { color: red }\n"))
    assert smb.tree(folder)["css/site.css"] == b"body { color: red }\n"

    # A new ContentVersion copies everything again.
    p2 = dict(p, ContentVersion="2")
    forced = cfn.update(created["PhysicalResourceId"], p2, p)
    assert forced["Status"] == "SUCCESS", forced
    assert (forced["Data"]["Copied"], forced["Data"]["Skipped"]) == (str(len(want)), "0")
    assert manifest_of(smb, folder)["content_version"] == "2"
    # ...once: a repeated delivery of that Update skips again.
    again = cfn.update(created["PhysicalResourceId"], p2, p)
    assert again["Data"]["Copied"] == "0", again

    output = bootstrap.output()
    assert smb.admin_password not in output
    assert "copy finished" in output and "copy planned" in output


def test_delete_extraneous_removes_only_what_it_wrote(fn, s3, smb, bucket, folder, admin_parameter):
    _, cfn = fn
    objects = {"site/a.txt": b"a", "site/b.txt": b"b", "site/sub/c.txt": b"c", "site/sub/keep.txt": b"k"}
    upload(s3, bucket, objects)
    p = props(bucket, folder, admin_parameter)
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    # Files someone else put there, beside and among ours.
    smb.put(folder, "foreign.txt", b"not ours")
    smb.put(f"{folder}\\sub", "foreign2.txt", b"not ours either")
    s3.delete_object(Bucket=bucket, Key="site/b.txt")
    s3.delete_object(Bucket=bucket, Key="site/sub/c.txt")

    # Without DeleteExtraneous the files stay (and the manifest keeps them as ours).
    kept = cfn.update(created["PhysicalResourceId"], p, p)
    assert kept["Status"] == "SUCCESS" and kept["Data"]["Removed"] == "0", kept
    assert {"b.txt", "sub/c.txt"} <= set(smb.tree(folder))

    p2 = dict(p, DeleteExtraneous="true")
    pruned = cfn.update(created["PhysicalResourceId"], p2, p)
    assert pruned["Status"] == "SUCCESS", pruned
    assert pruned["Data"]["Removed"] == "2"
    assert served(smb.tree(folder)) == {
        "a.txt": b"a", "sub/keep.txt": b"k", "foreign.txt": b"not ours", "sub/foreign2.txt": b"not ours either",
    }
    manifest = manifest_of(smb, folder)
    assert sorted(manifest["files"]) == ["a.txt", "sub/keep.txt"]


def test_unsafe_keys_are_rejected_by_name_and_the_rest_is_copied(fn, s3, smb, bucket, folder, admin_parameter):
    _, cfn = fn
    bad = ["site/../x", "site/a/CON.txt", "site/a:b", "site/dir/trail.", "site/ctl\x01.txt", "site/nul.txt"]
    good = {"site/good.txt": b"good", "site/a/fine.txt": b"fine", "site/dir/ok.txt": b"ok"}
    upload(s3, bucket, {**{k: b"evil" for k in bad}, **good})
    p = props(bucket, folder, admin_parameter)

    failed = cfn.create(p)
    assert failed["Status"] == "FAILED", failed
    reason = failed["Reason"]
    for key, rule in [("site/../x", "relative folder reference"), ("site/a/CON.txt", "reserved Windows device name CON"),
                      ("site/a:b", "alternate data stream"), ("site/dir/trail.", "trailing dot or space"),
                      ("site/ctl\\u{1}.txt", "control character U+0001"), ("site/nul.txt", "device name NUL")]:
        assert f'"{key}": ' in reason and rule in reason, (key, reason)
    assert "FailOnRejectedKeys" in reason and "6 key(s)" in reason, reason
    # The good ones were copied all the same; nothing escaped the folder. The request failed, so
    # no health probe: a task must not pass its health check on a folder whose Create failed.
    assert smb.tree(folder) == expected(good)
    assert not smb.exists("x")

    # Told to only count them, the same content succeeds.
    ok = cfn.create(dict(p, FailOnRejectedKeys="false"))
    assert ok["Status"] == "SUCCESS", ok
    assert (ok["Data"]["Rejected"], ok["Data"]["Copied"], ok["Data"]["Skipped"]) == ("6", "0", "3")

    # A Create that fails is never deleted by CloudFormation: with RemoveOnDelete it cleans up itself.
    other = folder + "-rm"
    failed = cfn.create(dict(p, Folder=other, RemoveOnDelete="true"))
    assert failed["Status"] == "FAILED" and failed["PhysicalResourceId"].startswith("create-failed:"), failed
    assert smb.tree(other) == {}


def test_delete_leaves_content_unless_remove_on_delete(fn, s3, smb, bucket, folder, admin_parameter):
    _, cfn = fn
    upload(s3, bucket, {"site/index.html": b"i", "site/js/app.js": b"j", "site/js/lib/x.js": b"x"})
    p = props(bucket, folder, admin_parameter)
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    deleted = cfn.delete(created["PhysicalResourceId"], p)
    assert deleted["Status"] == "SUCCESS", deleted
    assert served(smb.tree(folder)) == {"index.html": b"i", "js/app.js": b"j", "js/lib/x.js": b"x"}, "the probe stays with the content"

    smb.put(folder, "mine.txt", b"someone else's")
    smb.put(f"{folder}\\js", "theirs.js", b"also someone else's")
    p2 = dict(p, RemoveOnDelete="true")
    for _ in range(2):  # a repeated Delete finds nothing left to do
        deleted = cfn.delete(created["PhysicalResourceId"], p2)
        assert deleted["Status"] == "SUCCESS", deleted
        assert smb.tree(folder) == {"mine.txt": b"someone else's", "js/theirs.js": b"also someone else's"}
        assert smb.get(manifest_path(folder)) is None, "the manifest went with the files"
    assert not smb.exists(f"{folder}\\js\\lib"), "the folder emptied of our files is removed"


def test_the_health_probe_is_written_after_the_copy_reserved_and_removed_with_the_content(
        fn, s3, smb, bucket, folder, admin_parameter):
    """fargate-smb-health.txt (exactly `ok\\n`) at the top of the folder once the copy succeeded: the
    load balancer's health check path. No object may take its name there, in any case (NTFS: one
    file), and an unchanged probe is not rewritten; below the top the name is an ordinary file.
    It stays with the content on Delete, and goes with it under RemoveOnDelete."""
    bootstrap, cfn = fn
    site = {"site/index.html": b"i", "site/sub/fargate-smb-health.txt": b"an ordinary file below the top"}
    reserved = {"site/fargate-smb-health.txt": b"from the bucket", "site/FARGATE-SMB-HEALTH.TXT": b"SHOUTING"}
    upload(s3, bucket, {**site, **reserved})
    p = props(bucket, folder, admin_parameter)

    # Rejected (failing the request by default), not copied; a failed request writes no probe.
    failed = cfn.create(p)
    assert failed["Status"] == "FAILED", failed
    for key in reserved:
        assert f'"{key}": "{key.removeprefix("site/")}" is reserved' in failed["Reason"], failed["Reason"]
    assert "health probe" in failed["Reason"] and "2 key(s)" in failed["Reason"], failed["Reason"]
    assert smb.tree(folder) == expected(site)

    p = dict(p, FailOnRejectedKeys="false")
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    assert (created["Data"]["Rejected"], created["Data"]["HealthProbePath"]) == ("2", f"{SHARE}\\{folder}\\{PROBE}"), created
    tree = smb.tree(folder)
    assert served(tree) == expected(site), sorted(tree)
    assert smb.get(f"{folder}\\{PROBE.upper()}") == PROBE_BODY, "one file whatever the case"
    assert sorted(manifest_of(smb, folder)["files"]) == ["index.html", "sub/fargate-smb-health.txt"]
    lines = [json.loads(x) for x in bootstrap.stdout_lines() if '"key rejected"' in x]
    assert {x["key"] for x in lines} >= set(reserved) and all(x["rule"] == "reserved-by-fargate-smb" for x in lines), lines

    # An Update finds it in place and leaves it: the very file (same inode, same last write).
    probe_id = file_ids(folder)[PROBE]
    same = cfn.update(created["PhysicalResourceId"], p, p)
    assert same["Status"] == "SUCCESS", same
    assert file_ids(folder)[PROBE] == probe_id, "an unchanged probe was rewritten"
    assert "health probe already in place" in bootstrap.output()

    # Changed or removed behind its back, the next Update puts it back, whole.
    smb.put(folder, PROBE, b"tampered with")
    again = cfn.update(created["PhysicalResourceId"], p, p)
    assert again["Status"] == "SUCCESS", again
    assert smb.get(f"{folder}\\{PROBE}") == PROBE_BODY
    smb.run(f'del "{folder}\\{PROBE}"')
    assert cfn.update(created["PhysicalResourceId"], p, p)["Status"] == "SUCCESS"
    assert served(smb.tree(folder)) == expected(site)
    assert not [k for k in smb.tree(folder) if "fargate-smb-tmp" in k], "a temporary probe was left behind"

    # Delete without RemoveOnDelete keeps the content, so the probe too; with it, both go.
    assert cfn.delete(created["PhysicalResourceId"], p)["Status"] == "SUCCESS"
    assert served(smb.tree(folder)) == expected(site)
    assert cfn.delete(created["PhysicalResourceId"], dict(p, RemoveOnDelete="true"))["Status"] == "SUCCESS"
    assert smb.tree(folder) == {}
    assert "health probe removed" in bootstrap.output()


def test_health_probe_false_writes_none_and_the_upgrade_update_writes_it(fn, s3, smb, bucket, folder, admin_parameter):
    """`HealthProbe: false` copies the site and writes no probe. The upgrade from a version
    without the probe is an Update whose only change is `HealthProbe: true` (the template gives
    it explicitly so that CloudFormation sends one): that Update writes it, in place."""
    _, cfn = fn
    site = {"site/index.html": b"i"}
    upload(s3, bucket, site)
    old = dict(props(bucket, folder, admin_parameter), HealthProbe="false")
    created = cfn.create(old)
    assert created["Status"] == "SUCCESS", created
    assert "HealthProbePath" not in created["Data"], created
    assert smb.tree(folder) == expected(site), "HealthProbe false wrote a probe"

    new = dict(old, HealthProbe="true")
    updated = cfn.update(created["PhysicalResourceId"], new, old)
    assert updated["Status"] == "SUCCESS", updated
    assert updated["PhysicalResourceId"] == created["PhysicalResourceId"], "a property change replaced the resource"
    assert updated["Data"]["HealthProbePath"] == f"{SHARE}\\{folder}\\{PROBE}", updated
    assert smb.get(f"{folder}\\{PROBE}") == PROBE_BODY
    assert served(smb.tree(folder)) == expected(site)


def test_a_folder_in_the_probes_place_fails_the_request_and_is_left_alone(fn, s3, smb, bucket, folder, admin_parameter):
    """Something that is not the probe holds its name (a folder made by hand): the request fails
    saying what to fix rather than reporting a health check path that cannot pass, and the clean
    up of that failed Create (RemoveOnDelete) removes what it copied but not that folder."""
    _, cfn = fn
    upload(s3, bucket, {"site/index.html": b"i"})
    smb.mkdir(folder)
    smb.mkdir(f"{folder}\\{PROBE}")
    smb.put(f"{folder}\\{PROBE}", "theirs.txt", b"someone's")
    failed = cfn.create(props(bucket, folder, admin_parameter, RemoveOnDelete="true"))
    assert failed["Status"] == "FAILED", failed
    assert "could not write the health probe" in failed["Reason"] and "such as a folder" in failed["Reason"], failed
    assert smb.tree(folder) == {f"{PROBE}/theirs.txt": b"someone's"}, "no temporary probe left, the folder kept"


def test_bad_properties_and_missing_things_fail_naming_the_fix(fn, aws, s3, bucket, folder, admin_parameter):
    _, cfn = fn
    upload(s3, bucket, {"site/index.html": b"i"})
    p = props(bucket, folder, admin_parameter)
    cases = [
        ({k: v for k, v in p.items() if k != "Bucket"}, "Bucket"),
        (dict(p, Bucket="Not_A_Bucket"), "Bucket"),
        (dict(p, Folder="web/../.."), "Folder"),
        (dict(p, ShareUnc="127.0.0.1/share"), "ShareUnc"),
        (dict(p, Parallelism="0"), "Parallelism"),
        (dict(p, AdminPasswordParameter=""), "AdminPasswordParameter"),
        (dict(p, AdminUsername="Administrator"), "AdminUsername"),
        (dict(p, Paralelism="2"), "Paralelism"),
    ]
    for bad, prop in cases:
        failed = cfn.create(bad)
        assert failed["Status"] == "FAILED", (prop, failed)
        assert prop in failed["Reason"], (prop, failed["Reason"])

    missing_bucket = cfn.create(dict(p, Bucket=f"no-such-{uuid.uuid4().hex[:8]}"))
    assert "does not exist" in missing_bucket["Reason"] and "fix Bucket" in missing_bucket["Reason"], missing_bucket
    missing_param = cfn.create(dict(p, AdminPasswordParameter="/fargate-smb-test/none"))
    assert "/fargate-smb-test/none (AdminPasswordParameter) does not exist" in missing_param["Reason"], missing_param
    wrong = f"/fargate-smb-test/wrong-{uuid.uuid4().hex[:6]}"
    aws.ssm.put_parameter(Name=wrong, Value="Not-The-Password-1", Type="SecureString")
    refused = cfn.create(dict(p, AdminPasswordParameter=wrong))
    assert "refused the logon of EXAMPLE\\Administrator" in refused["Reason"], refused
    unreachable = cfn.create(dict(p, Port="1"))
    assert "127.0.0.1:1 does not answer" in unreachable["Reason"], unreachable
    no_share = cfn.create(dict(p, ShareUnc="\\\\127.0.0.1\\nosuchshare"))
    assert "the share nosuchshare does not exist" in no_share["Reason"], no_share


def test_admin_credential_from_a_secrets_manager_json_secret(fn, aws, s3, smb, bucket, folder):
    _, cfn = fn
    upload(s3, bucket, {"site/index.html": b"from the secret"})
    secret = aws.secretsmanager.create_secret(
        Name=f"fargate-smb-test/share-admin-{uuid.uuid4().hex[:6]}",
        SecretString=json.dumps({"username": "EXAMPLE\\Administrator", "password": smb.admin_password}),
    )["ARN"]
    p = props(bucket, folder, "unused", AdminSecretId=secret)
    del p["AdminPasswordParameter"], p["AdminUsername"]
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    assert served(smb.tree(folder)) == {"index.html": b"from the secret"}


def test_the_sample_events_work_as_shipped(fn, s3, smb, bucket, folder, admin_parameter, responses):
    """events/web-content/{create,update,delete}.json with only names made local."""
    _, cfn = fn
    upload(s3, bucket, {"site/index.html": b"sample", "site/css/a.css": b"a"})
    for name in ("create", "update", "delete"):
        text = (ROOT / "events" / "web-content" / f"{name}.json").read_text()
        text = text.replace("fargate-smb-web-content", bucket).replace("/fargate-smb/admin/password", admin_parameter)
        event = json.loads(text)
        for key in ("ResourceProperties", "OldResourceProperties"):
            if key in event:
                event[key]["Folder"] = folder
        if "PhysicalResourceId" in event:
            event["PhysicalResourceId"] = f"{SHARE}\\{folder}"
        event["ResponseURL"] = responses.url(event["RequestId"])
        answer = cfn.send(event)
        assert answer["Status"] == "SUCCESS", (name, answer)
        if name == "create":
            assert served(smb.tree(folder)) == {"index.html": b"sample", "css/a.css": b"a"}
        if name == "update":
            assert answer["Data"]["Copied"] == "2", answer  # ContentVersion 1 -> 2
    assert smb.tree(folder) == {}, "RemoveOnDelete removed the copied files, the probe and the manifest"


@pytest.mark.parametrize("sessions", ["1", "3"])
def test_many_files_in_parallel_with_progress_lines(fn, s3, smb, bucket, folder, admin_parameter, sessions):
    bootstrap, cfn = fn
    objects = {f"site/d{i % 7}/sub{i % 3}/f{i}.txt": f"file {i}\n".encode() * (i % 50 + 1) for i in range(150)}
    upload(s3, bucket, objects)
    created = cfn.create(props(bucket, folder, admin_parameter, Parallelism="16", Sessions=sessions))
    assert created["Status"] == "SUCCESS", created
    assert created["Data"]["Copied"] == "150"
    assert served(smb.tree(folder)) == expected(objects)
    progress = [json.loads(line) for line in bootstrap.stdout_lines() if '"copy progress"' in line]
    assert any(p["done"] == 100 and p["total"] == 150 for p in progress), progress
    finished = [json.loads(line) for line in bootstrap.stdout_lines() if '"copy finished"' in line]
    assert finished[-1]["sessions"] == int(sessions), finished
    assert len(manifest_of(smb, folder)["files"]) == 150


def manifest_of(smb, folder: str) -> dict:
    """The head, with the records of every shard merged into "files" (as format 1 held them)."""
    data = smb.get(manifest_path(folder))
    assert data is not None, f"no manifest at {manifest_path(folder)}"
    head = json.loads(data)
    assert head["format"] == 1 and head["sharded"] == 1 and "files" not in head, head
    files = {}
    shards = smb.tree(shards_folder(folder)) if smb.exists(shards_folder(folder)) else {}
    for name, body in shards.items():
        if not name.endswith(".json"):
            continue  # a shard moved aside as unreadable
        shard = json.loads(body)
        if shard.get("generation") != head.get("generation"):
            continue  # left by an earlier manifest of the folder: not this head's
        assert name == f"{folder_key(shard['folder'])}.json", (name, shard["folder"])
        for key, record in shard["files"].items():
            assert record["path"].rpartition("\\")[0].upper() == shard["folder"].upper(), (record, shard["folder"])
            assert key not in files, f"{key} is in two shards"
            files[key] = record
    return {**head, "files": files}


@pytest.mark.parametrize("respell", ["folder-case", "server-name"])
def test_a_replacement_by_respelling_keeps_the_content(fn, s3, smb, bucket, folder, admin_parameter, respell):
    """With RemoveOnDelete, Folder web -> WEB (or the server by another name) is a new physical id
    that shares the old id's manifest. CloudFormation's sequence: Update (answered with the new
    id), then Delete of the OLD id with the OLD properties: the content must stay."""
    bootstrap, cfn = fn
    upload(s3, bucket, SITE)
    old = props(bucket, folder, admin_parameter, RemoveOnDelete="true")
    new = dict(old, Folder=folder.upper()) if respell == "folder-case" else dict(old, ShareUnc="\\\\localhost\\share")
    created = cfn.create(old)
    assert created["Status"] == "SUCCESS", created
    old_id = created["PhysicalResourceId"]
    assert manifest_of(smb, folder)["ownership"] == {"id": old_id}

    replaced = cfn.update(old_id, new, old)
    assert replaced["Status"] == "SUCCESS", replaced
    new_id = replaced["PhysicalResourceId"]
    assert new_id != old_id
    assert replaced["Data"]["Skipped"] == str(len(expected(SITE))), "the replacement copies incrementally"
    assert manifest_of(smb, folder)["ownership"] == {"id": new_id, "previous": old_id}

    cleanup = cfn.delete(old_id, old)
    assert cleanup["Status"] == "SUCCESS", cleanup
    assert served(smb.tree(folder)) == expected(SITE), "the replaced id's Delete emptied the folder (or took the probe)"
    assert manifest_of(smb, folder)["ownership"] == {"id": new_id}
    assert "left in place" in bootstrap.output()

    # The stack's delete of the new id removes it, the probe with it.
    assert cfn.delete(new_id, new)["Status"] == "SUCCESS"
    assert smb.tree(folder) == {}


def test_a_rolled_back_replacement_keeps_the_content_for_the_old_id(fn, s3, smb, bucket, folder, admin_parameter):
    _, cfn = fn
    upload(s3, bucket, SITE)
    old = props(bucket, folder, admin_parameter, RemoveOnDelete="true")
    new = dict(old, Folder=folder.upper())
    old_id = cfn.create(old)["PhysicalResourceId"]
    new_id = cfn.update(old_id, new, old)["PhysicalResourceId"]
    assert cfn.delete(new_id, new)["Status"] == "SUCCESS"  # the rollback's cleanup
    assert served(smb.tree(folder)) == expected(SITE)
    assert manifest_of(smb, folder)["ownership"] == {"id": old_id}
    assert cfn.delete(old_id, old)["Status"] == "SUCCESS"
    assert smb.tree(folder) == {}


def test_a_failed_replacement_create_never_removes_the_old_content(fn, s3, smb, bucket, folder, admin_parameter):
    """A Create that fails cleans up its own partial copy (RemoveOnDelete), but not content that
    another id of the resource owns: here a Create for a new id over the old id's folder."""
    _, cfn = fn
    upload(s3, bucket, SITE)
    old = props(bucket, folder, admin_parameter, RemoveOnDelete="true")
    assert cfn.create(old)["Status"] == "SUCCESS"
    s3.put_object(Bucket=bucket, Key="site/bad/../x", Body=b"rejected")
    failed = cfn.create(dict(old, Folder=folder.upper()))
    assert failed["Status"] == "FAILED", failed
    assert served(smb.tree(folder)) == expected(SITE), "the failed Create removed the old id's content or probe"


def test_a_delete_with_another_versions_properties_removes_the_content(fn, s3, smb, bucket, folder, admin_parameter):
    bootstrap, cfn = fn
    upload(s3, bucket, {"site/index.html": b"i"})
    p = props(bucket, folder, admin_parameter, RemoveOnDelete="true")
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    other_version = {k: v for k, v in p.items() if k not in ("ShareUnc", "Folder", "Bucket")}
    other_version.update(CacheControl={"MaxAge": 60}, Parallelism="lots")
    deleted = cfn.delete(created["PhysicalResourceId"], other_version)
    assert deleted["Status"] == "SUCCESS", deleted
    assert smb.tree(folder) == {}
    assert "cannot read all the properties" in bootstrap.output()


def test_a_replacement_onto_another_folder_leaves_nothing_behind(fn, s3, smb, bucket, folder, admin_parameter):
    _, cfn = fn
    upload(s3, bucket, SITE)
    old = props(bucket, folder, admin_parameter, RemoveOnDelete="true")
    new = dict(old, Folder=folder + "-site")
    old_id = cfn.create(old)["PhysicalResourceId"]
    new_id = cfn.update(old_id, new, old)["PhysicalResourceId"]
    assert manifest_of(smb, new["Folder"])["ownership"] == {"id": new_id}, "new content has no previous owner"
    assert cfn.delete(old_id, old)["Status"] == "SUCCESS"
    assert smb.tree(folder) == {}
    assert served(smb.tree(new["Folder"])) == expected(SITE), "the old id's Delete reached the new folder"
    assert cfn.delete(new_id, new)["Status"] == "SUCCESS"
    assert smb.tree(new["Folder"]) == {}, "orphaned by the stack's delete"


def test_a_failed_replacement_leaves_the_content_to_the_old_id(fn, s3, smb, bucket, folder, admin_parameter):
    """The replacement's copy fails (a rejected key) after the engine wrote its manifest: the
    content must still be the old id's, whose stack delete then removes it."""
    _, cfn = fn
    upload(s3, bucket, SITE)
    old = props(bucket, folder, admin_parameter, RemoveOnDelete="true")
    old_id = cfn.create(old)["PhysicalResourceId"]
    s3.put_object(Bucket=bucket, Key="site/bad/../x", Body=b"rejected")
    failed = cfn.update(old_id, dict(old, Folder=folder.upper()), old)
    assert failed["Status"] == "FAILED", failed
    assert manifest_of(smb, folder)["ownership"] == {"id": old_id}
    assert cfn.delete(old_id, old)["Status"] == "SUCCESS"
    assert smb.tree(folder) == {}


def test_another_stacks_delete_leaves_the_content_it_no_longer_owns(fn, launch, runtime, responses, s3, smb, bucket, folder, admin_parameter):
    """Two stacks aimed at one folder have the same physical id: the latest Create takes the
    content over, and the other stack's Delete (RemoveOnDelete) must not empty it."""
    _, cfn = fn
    upload(s3, bucket, SITE)
    p = props(bucket, folder, admin_parameter, RemoveOnDelete="true")
    first = cfn.create(p)
    other = CloudFormation(runtime, responses, RESOURCE, "WebContent")
    other_stack = "arn:aws:cloudformation:us-east-1:123456789012:stack/other/00000000-0000-0000-0000-000000000002"
    event = other.event("Create", p)
    event["StackId"] = other_stack
    assert other.send(event)["Status"] == "SUCCESS"
    assert cfn.delete(first["PhysicalResourceId"], p)["Status"] == "SUCCESS"
    assert served(smb.tree(folder)) == expected(SITE), "another stack's content was removed"
    event = other.event("Delete", p, first["PhysicalResourceId"])
    event["StackId"] = other_stack
    assert other.send(event)["Status"] == "SUCCESS"
    assert smb.tree(folder) == {}


def test_a_failed_replacement_onto_another_folder_removes_its_partial_copy(fn, s3, smb, bucket, folder, admin_parameter):
    """CloudFormation never deletes the new id of a replacement whose Create failed: with
    RemoveOnDelete, what it copied into the new folder goes with the failure."""
    _, cfn = fn
    upload(s3, bucket, SITE)
    old = props(bucket, folder, admin_parameter, RemoveOnDelete="true")
    old_id = cfn.create(old)["PhysicalResourceId"]
    s3.put_object(Bucket=bucket, Key="site/bad/../x", Body=b"rejected")
    new = dict(old, Folder=folder + "-next")
    failed = cfn.update(old_id, new, old)
    assert failed["Status"] == "FAILED", failed
    assert smb.tree(new["Folder"]) == {}, "the failed replacement left its copy behind"
    assert served(smb.tree(folder)) == expected(SITE), "the old id's content is untouched"


def test_the_manifest_lives_beside_the_acl_records_not_in_the_served_folder(fn, s3, smb, bucket, folder, admin_parameter):
    """IIS serves the content folder (and .json): the bookkeeping (bucket, prefix, every path and
    ETag, the owning stack) must not be in it. It goes to the share root's .fargate-smb, one
    manifest per folder, whatever case the folder is spelled in."""
    _, cfn = fn
    upload(s3, bucket, SITE)
    created = cfn.create(props(bucket, folder, admin_parameter))
    assert created["Status"] == "SUCCESS", created
    assert created["Data"]["ManifestPath"] == f"{SHARE}\\{manifest_path(folder)}"
    tree = smb.tree(folder)
    assert served(tree) == expected(SITE), sorted(tree)
    for name, body in tree.items():
        assert bucket.encode() not in body and b'"files"' not in body, f"{name} holds the bookkeeping"
    manifest = manifest_of(smb, folder)
    assert (manifest["bucket"], manifest["prefix"], manifest["folder"]) == (bucket, "site/", folder)
    assert sorted(manifest["files"]) == sorted(expected(SITE))
    assert manifest["ownership"] == {"id": created["PhysicalResourceId"]} and manifest["owner"] == OWNER
    temp = manifest_path(folder).replace("content\\", "content\\.") + ".fargate-smb-tmp-*"
    assert not smb.exists(temp), "a temporary manifest was left"

    # Another folder of the share has a manifest of its own; the first one is untouched.
    other = folder + "-b"
    upload(s3, bucket, {"site2/x.txt": b"x"})
    second = cfn.create(props(bucket, other, admin_parameter, Prefix="site2"))
    assert second["Status"] == "SUCCESS", second
    assert manifest_path(other) != manifest_path(folder) and manifest_path(folder.upper()) == manifest_path(folder)
    assert sorted(manifest_of(smb, other)["files"]) == ["x.txt"]
    assert manifest_of(smb, folder) == manifest
    assert served(smb.tree(other)) == {"x.txt": b"x"}


def legacy_deploy(s3, smb, bucket: str, folder: str, objects: dict[str, bytes], listed: list[str], **fields) -> dict:
    """A folder as the previous version left it: the files copied, and its manifest (listing the
    keys `listed`) written in the folder itself, as that version wrote it."""
    smb.mkdir(folder)
    for key, body in objects.items():
        rel = key.removeprefix("site/").replace("/", "\\")
        parent = rel.rpartition("\\")[0]
        if parent and not smb.exists(f"{folder}\\{parent}"):
            smb.mkdir(f"{folder}\\{parent}")
        smb.put(folder, rel, body)
    files = {}
    for key in listed:
        rel = key.removeprefix("site/")
        etag = s3.head_object(Bucket=bucket, Key=key)["ETag"]
        files[rel] = {"path": rel.replace("/", "\\"), "size": len(objects[key]), "etag": etag}
    manifest = {"format": 1, "content_version": None, "bucket": bucket, "prefix": "site/", "files": files,
                "ownership": {"id": f"{SHARE}\\{folder}"}, "owner": OWNER, **fields}
    smb.put(folder, LEGACY_MANIFEST, json.dumps(manifest, indent=2).encode())
    return manifest


def test_an_old_location_manifest_is_moved_on_update_without_copying_again(fn, s3, smb, bucket, folder, admin_parameter):
    bootstrap, cfn = fn
    objects = {"site/index.html": b"<p>old version</p>", "site/css/a.css": b"a {}", "site/js/app.js": b"app"}
    upload(s3, bucket, objects)
    old = legacy_deploy(s3, smb, bucket, folder, objects, listed=sorted(objects))
    smb.put(folder, "foreign.txt", b"not ours")
    physical_id = f"{SHARE}\\{folder}"
    p = props(bucket, folder, admin_parameter, RemoveOnDelete="true")

    updated = cfn.update(physical_id, p, p)
    assert updated["Status"] == "SUCCESS", updated
    data = updated["Data"]
    assert (data["Copied"], data["Skipped"], data["Bytes"]) == ("0", "3", "0"), "the move re-copied content"
    assert data["ManifestPath"] == f"{SHARE}\\{manifest_path(folder)}"
    assert not smb.exists(f"{folder}\\{LEGACY_MANIFEST}"), "the old manifest is still served"
    moved = manifest_of(smb, folder)
    assert moved["files"] == old["files"]
    assert (moved["ownership"], moved["owner"], moved["bucket"]) == (old["ownership"], OWNER, bucket)
    assert served(smb.tree(folder)) == {**expected(objects), "foreign.txt": b"not ours"}
    assert "the manifest was moved out of the content folder" in bootstrap.output()

    # A repeated delivery of that Update finds the new manifest and nothing to do.
    again = cfn.update(physical_id, p, p)
    assert again["Status"] == "SUCCESS" and again["Data"]["Copied"] == "0", again

    # The Delete after the move removes exactly what the manifest lists.
    deleted = cfn.delete(physical_id, p)
    assert deleted["Status"] == "SUCCESS", deleted
    assert smb.tree(folder) == {"foreign.txt": b"not ours"}
    assert smb.get(manifest_path(folder)) is None


def test_a_delete_of_a_folder_the_previous_version_deployed_removes_exactly_its_files(fn, s3, smb, bucket, folder, admin_parameter):
    """A stack deployed with the previous version and deleted without an update in between: its
    manifest is still in the content folder, and Delete must find it (and its ownership)."""
    _, cfn = fn
    objects = {"site/index.html": b"i", "site/css/a.css": b"a", "site/css/b.css": b"b"}
    upload(s3, bucket, objects)
    legacy_deploy(s3, smb, bucket, folder, objects, listed=["site/index.html", "site/css/a.css"])
    physical_id = f"{SHARE}\\{folder}"
    p = props(bucket, folder, admin_parameter, RemoveOnDelete="true")

    # Another stack's Delete of the same physical id: the manifest's owner is not it.
    other = CloudFormation(cfn.runtime, cfn.responses, RESOURCE, "WebContent")
    event = other.event("Delete", p, physical_id)
    event["StackId"] = "arn:aws:cloudformation:us-east-1:123456789012:stack/other/00000000-0000-0000-0000-000000000002"
    assert other.send(event)["Status"] == "SUCCESS"
    assert set(smb.tree(folder)) == {"index.html", "css/a.css", "css/b.css", LEGACY_MANIFEST}

    deleted = cfn.delete(physical_id, p)
    assert deleted["Status"] == "SUCCESS", deleted
    assert smb.tree(folder) == {"css/b.css": b"b"}, "only the listed files (and the old manifest) go"
    assert smb.get(manifest_path(folder)) is None, "Delete wrote a manifest"


def test_a_folder_emptied_behind_the_manifests_back_is_copied_again(fn, s3, smb, bucket, folder, admin_parameter):
    """The manifest lives outside the folder, so it outlives it: an operator's deltree, or a stack
    deleted with RemoveOnDelete false and deployed again. Unchanged is decided by the manifest AND
    the folder: files that are gone, or whose size is not the recorded one, are copied again."""
    bootstrap, cfn = fn
    upload(s3, bucket, SITE)
    p = props(bucket, folder, admin_parameter)
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    want = expected(SITE)

    smb.run(f'deltree "{folder}"')
    assert not smb.exists(folder)
    p2 = dict(p, Parallelism="4")  # any property change makes CloudFormation send an Update
    updated = cfn.update(created["PhysicalResourceId"], p2, p)
    assert updated["Status"] == "SUCCESS", updated
    assert (updated["Data"]["Copied"], updated["Data"]["Skipped"]) == (str(len(want)), "0"), updated["Data"]
    assert served(smb.tree(folder)) == want, "the probe went with the folder and must come back"
    assert "not in the folder as recorded" in bootstrap.output()

    # Part of it: a subfolder removed, one file deleted, one edited by hand to another size.
    smb.run(f'deltree "{folder}\\img"')
    smb.run(f'del "{folder}\\css\\site.css"')
    smb.put(folder, "index.html", b"edited by hand, and longer than the original was")
    again = cfn.update(created["PhysicalResourceId"], p, p2)
    assert again["Status"] == "SUCCESS", again
    assert (again["Data"]["Copied"], again["Data"]["Skipped"]) == ("3", str(len(want) - 3)), again["Data"]
    assert served(smb.tree(folder)) == want
    same = cfn.update(created["PhysicalResourceId"], p2, p)
    assert (same["Data"]["Copied"], same["Data"]["Skipped"]) == ("0", str(len(want))), same["Data"]


def test_a_manifest_stamped_with_another_folder_is_not_used(fn, s3, smb, bucket, folder, admin_parameter):
    """The manifest records the folder it was written for. One found under another folder's name
    (copied there by hand, restored from another share) is not this folder's list: pruning by it
    would delete files this resource never wrote."""
    bootstrap, cfn = fn
    upload(s3, bucket, SITE)
    first = cfn.create(props(bucket, folder, admin_parameter))
    assert first["Status"] == "SUCCESS", first
    other = folder + "-x"
    upload(s3, bucket, {"other/page.html": b"other"})
    p = props(bucket, other, admin_parameter, Prefix="other", DeleteExtraneous="true")
    second = cfn.create(p)
    assert second["Status"] == "SUCCESS", second
    # A file of someone else's in the other folder, the same size as one the first manifest lists.
    theirs = b"b" * len(SITE["site/css/site.css"])
    smb.mkdir(f"{other}\\css")
    smb.put(f"{other}\\css", "site.css", theirs)
    smb.put(".fargate-smb\\content", manifest_path(other).rpartition("\\")[2], smb.get(manifest_path(folder)))

    updated = cfn.update(second["PhysicalResourceId"], p, p)
    assert updated["Status"] == "SUCCESS", updated
    assert updated["Data"]["Removed"] == "0", updated["Data"]
    assert served(smb.tree(other)) == {"page.html": b"other", "css/site.css": theirs}, "pruned by another folder's list"
    assert manifest_of(smb, other)["folder"] == other
    assert sorted(manifest_of(smb, other)["files"]) == ["page.html"]
    assert "records another folder" in bootstrap.output()


@pytest.mark.parametrize("body", ["another-folders-manifest", "not-a-manifest"])
def test_an_inner_resource_leaves_the_outer_resources_file_of_the_old_manifest_name(
        fn, runtime, responses, s3, smb, bucket, folder, admin_parameter, body):
    """WebContent at F copies the key sub/.fargate-smb-content.json (allowed below the top); a
    second WebContent at F\\sub must not take that file for the manifest an earlier version of
    itself left there: it neither adopts it nor removes it."""
    bootstrap, outer = fn
    inner = CloudFormation(runtime, responses, RESOURCE, "InnerContent")
    if body == "not-a-manifest":
        old_name_file = json.dumps({"settings": {"theme": "dark"}}).encode()
    else:
        old_name_file = json.dumps({
            "format": 1, "bucket": bucket, "prefix": "site/", "files": {"x.txt": {"path": "x.txt", "size": 1, "etag": "e"}},
            "ownership": {"id": f"{SHARE}\\{folder}"}, "owner": OWNER,
        }).encode()
    upload(s3, bucket, {"site/index.html": b"outer", "site/sub/.fargate-smb-content.json": old_name_file,
                        "inner/page.html": b"inner"})
    p_outer = props(bucket, folder, admin_parameter)
    created = outer.create(p_outer)
    assert created["Status"] == "SUCCESS" and created["Data"]["Copied"] == "2", created

    p_inner = props(bucket, f"{folder}\\sub", admin_parameter, Prefix="inner", RemoveOnDelete="true")
    made = inner.create(p_inner)
    assert made["Status"] == "SUCCESS", made
    assert made["Data"]["Copied"] == "1", made["Data"]
    assert smb.get(f"{folder}\\sub\\{LEGACY_MANIFEST}") == old_name_file, "the outer resource's file was removed"
    mine = manifest_of(smb, f"{folder}\\sub")
    assert sorted(mine["files"]) == ["page.html"] and mine["owner"] == f"{STACK_ID}/InnerContent", mine
    assert "not this resource's manifest" in bootstrap.output()

    # Each resource has its probe at the top of its own folder.
    assert smb.get(f"{folder}\\sub\\{PROBE}") == PROBE_BODY and smb.get(f"{folder}\\{PROBE}") == PROBE_BODY

    # The inner resource's Delete removes its own file only; the outer resource finds all of its own.
    assert inner.delete(made["PhysicalResourceId"], p_inner)["Status"] == "SUCCESS"
    assert smb.get(f"{folder}\\sub\\{LEGACY_MANIFEST}") == old_name_file
    assert not smb.exists(f"{folder}\\sub\\page.html")
    assert smb.get(f"{folder}\\sub\\{PROBE}") is None and smb.get(f"{folder}\\{PROBE}") == PROBE_BODY
    again = outer.update(created["PhysicalResourceId"], p_outer, p_outer)
    assert (again["Data"]["Copied"], again["Data"]["Skipped"]) == ("0", "2"), again["Data"]


READ, FULL = 0x001200A9, 0x001F01FF
SYSTEM, ADMINISTRATORS = "S-1-5-18", "S-1-5-32-544"


def cacls(smb, path: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["smbcacls", "//127.0.0.1/share", path, "-A", str(smb.auth), "-s", samba_env()["FARGATE_SMB_SMB_CONF"],
                          *args], capture_output=True, text=True, timeout=60)
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def dacl(smb, path: str) -> tuple[int, list[tuple[str, int, int]]]:
    """(control flags, [(sid, ace flags, mask)]) as smbcacls reads them."""
    out = cacls(smb, path, "--numeric").stdout
    control = int(out.split("CONTROL:")[1].splitlines()[0], 16)
    aces = []
    for line in out.splitlines():
        if line.startswith("ACL:"):
            sid, rest = line[4:].rsplit(":", 1)
            _, flags, mask = rest.split("/")
            aces.append((sid, int(flags, 16), int(mask, 16)))
    return control, aces


def user_sid(name: str) -> str:
    out = subprocess.run(["samba-tool", "user", "show", name, "--attributes=objectSid", "-s", samba_env()["FARGATE_SMB_SMB_CONF"]],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return next(line.split(":", 1)[1].strip() for line in out.stdout.splitlines() if line.startswith("objectSid:"))


def expose_bookkeeping(smb, sid: str, below: list[str]) -> None:
    """.fargate-smb as a share root that grants `sid` read (this folder, subfolders and files)
    leaves it: unprotected, inheriting from the root, and `sid`'s read inherited by it and by
    everything already in it (`below`: (path) folders, then files)."""
    cacls(smb, ".fargate-smb", "--inherit", "allow", check=False)  # fails when already inheriting
    assert not dacl(smb, ".fargate-smb")[0] & 0x1000
    cacls(smb, ".fargate-smb", "--add", f"ACL:{sid}:ALLOWED/0x13/{READ:#x}")
    for path in below:
        flags = "0x10" if path.endswith(".json") else "0x13"
        cacls(smb, path, "--add", f"ACL:{sid}:ALLOWED/{flags}/{READ:#x}")


def smbclient_as(tmp_path, user: str, password: str, command: str) -> str:
    auth = tmp_path / f"{user}.auth"
    auth.write_text(f"username = {user}\npassword = {password}\ndomain = EXAMPLE\n")
    auth.chmod(0o600)
    out = subprocess.run(["smbclient", "//127.0.0.1/share", "-A", str(auth), "-m", "SMB3", "--client-protection=encrypt",
                          "-c", command], capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


def owner(smb, path: str) -> str:
    out = cacls(smb, path, "--numeric").stdout
    return next(line.split(":", 1)[1] for line in out.splitlines() if line.startswith("OWNER:"))


def assert_private(smb, path: str, below: list[str], account: str) -> None:
    """Protected (inherits nothing from the root), full control for SYSTEM, Administrators and
    `account` (the function's, as the owner of a file it made shows it: Samba, like Windows, makes
    an administrator's files BUILTIN\\Administrators'), to this folder, subfolders and files; and
    what is below carries exactly that, inherited."""
    control, aces = dacl(smb, path)
    assert control & 0x1000, f"{path}: DACL not protected (SE_DACL_PROTECTED) in {control:#x}"
    assert {sid for sid, _, _ in aces} == {SYSTEM, ADMINISTRATORS, account}, aces
    assert all(flags == 0x3 and mask == FULL for _, flags, mask in aces), aces
    for child in below:
        flags = 0x10 if child.endswith(".json") else 0x13
        control, child_aces = dacl(smb, child)
        assert not control & 0x1000, child
        assert sorted(child_aces) == sorted((sid, flags, mask) for sid, _, mask in aces), (child, child_aces)


def test_the_bookkeeping_folder_is_private_whatever_the_share_root_grants(fn, s3, smb, bucket, folder, admin_parameter, tmp_path):
    """A Windows/FSx volume root lets Users or Authenticated Users read (or more) whatever is made
    below it. The manifests must not be readable (or writable) by the web app's account: a
    forged manifest makes pruning delete what it lists. Whoever made .fargate-smb, WebContent
    makes it private (protected, no inherited ACEs) before it reads or writes a manifest, and
    resets what is already inside it to inherit exactly that."""
    _, cfn = fn
    upload(s3, bucket, SITE)
    user, password = domain_user()
    sid = user_sid(user)
    first = cfn.create(props(bucket, folder, admin_parameter))
    assert first["Status"] == "SUCCESS", first
    mine = manifest_path(folder)
    expose_bookkeeping(smb, sid, [".fargate-smb\\content", mine])
    listed = smbclient_as(tmp_path, user, password, 'ls ".fargate-smb\\content\\*"')
    assert mine.rpartition("\\")[2] in listed, listed  # the setup works: the account can read them

    again = cfn.update(first["PhysicalResourceId"], props(bucket, folder, admin_parameter, Parallelism="3"),
                       props(bucket, folder, admin_parameter))
    assert again["Status"] == "SUCCESS", again
    assert_private(smb, ".fargate-smb", [".fargate-smb\\content", mine], account=owner(smb, mine))
    denied = smbclient_as(tmp_path, user, password, 'ls ".fargate-smb\\content\\*"')
    assert "NT_STATUS_ACCESS_DENIED" in denied, denied
    denied = smbclient_as(tmp_path, user, password, f'get "{mine}" "{tmp_path / "stolen.json"}"')
    assert "NT_STATUS_ACCESS_DENIED" in denied and not (tmp_path / "stolen.json").exists(), denied
    # The admin account keeps its access; a manifest written now inherits the private DACL.
    other = folder + "-p"
    made = cfn.create(props(bucket, other, admin_parameter))
    assert made["Status"] == "SUCCESS", made
    assert_private(smb, ".fargate-smb", [manifest_path(other)], account=owner(smb, mine))
    assert manifest_of(smb, other)["folder"] == other


def test_a_same_size_edit_by_hand_is_copied_again(fn, s3, smb, bucket, folder, admin_parameter):
    """The manifest records each file's last-write time as the copy left it: a file changed on the
    share to another content of the same size (by hand, with smbclient) is not "unchanged"."""
    bootstrap, cfn = fn
    upload(s3, bucket, SITE)
    p = props(bucket, folder, admin_parameter)
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    recorded = manifest_of(smb, folder)["files"]["css/site.css"]
    assert recorded["modified"] > 0, recorded
    original = SITE["site/css/site.css"]
    edited = bytes(b ^ 0x20 if chr(b).isalpha() else b for b in original)
    assert len(edited) == len(original) and edited != original
    smb.put(f"{folder}\\css", "site.css", edited)

    again = cfn.update(created["PhysicalResourceId"], p, p)
    assert again["Status"] == "SUCCESS", again
    assert (again["Data"]["Copied"], again["Data"]["Skipped"]) == ("1", str(len(expected(SITE)) - 1)), again["Data"]
    assert smb.tree(folder)["css/site.css"] == original
    assert manifest_of(smb, folder)["files"]["css/site.css"]["modified"] != recorded["modified"]
    # Left alone now, it stays unchanged.
    same = cfn.update(created["PhysicalResourceId"], p, p)
    assert same["Data"]["Copied"] == "0", same["Data"]


def test_temporary_files_a_killed_invocation_left_are_swept(fn, s3, smb, bucket, folder, admin_parameter):
    """A temporary file older than the function can live (FARGATE_SMB_TEMP_MAX_AGE_SECONDS, by
    default Lambda's longest timeout plus clock skew) is a leftover and goes; a fresh one may be a
    running invocation's and stays; a file that only looks like one (no leading dot) stays."""
    bootstrap, cfn = fn
    upload(s3, bucket, SITE)
    p = props(bucket, folder, admin_parameter)
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    old = [f"{folder}\\css\\.site.css.fargate-smb-tmp-0011aabb", f"{folder}\\.index.html.fargate-smb-tmp-deadbeef"]
    for path in old:
        parent, _, name = path.rpartition("\\")
        smb.put(parent, name, b"half a file")
        smb.run(f'utimes "{path}" -1 -1 2020:01:01-00:00:00 -1')
    fresh = f"{folder}\\css\\.site.css.fargate-smb-tmp-cafef00d"
    smb.put(f"{folder}\\css", ".site.css.fargate-smb-tmp-cafef00d", b"being written")
    lookalike = f"{folder}\\notes.fargate-smb-tmp-0011aabb"
    smb.put(folder, "notes.fargate-smb-tmp-0011aabb", b"someone's file")
    smb.run(f'utimes "{lookalike}" -1 -1 2020:01:01-00:00:00 -1')
    # The shards' folder is swept too (a writer killed between writing a shard and its rename).
    shard_temp = f"{shards_folder(folder)}\\.x.json.fargate-smb-tmp-00112233"
    smb.put(shards_folder(folder), ".x.json.fargate-smb-tmp-00112233", b"{")
    smb.run(f'utimes "{shard_temp}" -1 -1 2020:01:01-00:00:00 -1')

    again = cfn.update(created["PhysicalResourceId"], p, p)
    assert again["Status"] == "SUCCESS", again
    assert again["Data"]["Copied"] == "0", again["Data"]
    for path in old + [shard_temp]:
        assert smb.get(path) is None, f"{path} was not swept"
    assert smb.get(fresh) == b"being written", "a temporary file younger than the function's timeout was removed"
    assert smb.get(lookalike) == b"someone's file"
    assert bootstrap.output().count("removed a temporary file a killed invocation left") == 2


def test_a_single_file_manifest_is_converted_to_shards_without_copying_again(fn, s3, smb, bucket, folder, admin_parameter):
    """A manifest the previous version wrote at the share root (format 1: one file with every
    record) is read as it is, converted to a head and one shard per folder, and nothing is copied
    again; ownership and owner carry over exactly."""
    bootstrap, cfn = fn
    objects = {"site/index.html": b"i", "site/css/a.css": b"a", "site/css/b.css": b"bb", "site/js/x/app.js": b"app"}
    upload(s3, bucket, objects)
    smb.mkdir(folder)
    files = {}
    for key, body in objects.items():
        rel = key.removeprefix("site/")
        parts = rel.split("/")
        for i in range(1, len(parts)):
            sub = "\\".join([folder, *parts[:i]])
            if not smb.exists(sub):
                smb.mkdir(sub)
        smb.put("\\".join([folder, *parts[:-1]]), parts[-1], body)
        files[rel] = {"path": rel.replace("/", "\\"), "size": len(body), "etag": s3.head_object(Bucket=bucket, Key=key)["ETag"]}
    physical_id = f"{SHARE}\\{folder}"
    single = {"format": 1, "content_version": None, "bucket": bucket, "prefix": "site/", "files": files,
              "ownership": {"id": physical_id}, "owner": OWNER, "folder": folder}
    if not smb.exists(".fargate-smb\\content"):
        smb.mkdir(".fargate-smb\\content")
    smb.put(".fargate-smb\\content", manifest_path(folder).rpartition("\\")[2], json.dumps(single).encode())
    p = props(bucket, folder, admin_parameter, RemoveOnDelete="true")

    updated = cfn.update(physical_id, p, p)
    assert updated["Status"] == "SUCCESS", updated
    assert (updated["Data"]["Copied"], updated["Data"]["Skipped"]) == ("0", "4"), updated["Data"]
    converted = manifest_of(smb, folder)
    assert {k: {f: r[f] for f in ("path", "size", "etag")} for k, r in converted["files"].items()} == files
    assert (converted["ownership"], converted["owner"], converted["bucket"]) == ({"id": physical_id}, OWNER, bucket)
    assert sorted(smb.tree(shards_folder(folder))) == sorted(f"{folder_key(w)}.json" for w in ("", "css", "js\\x"))
    assert "converted to one shard per folder" in bootstrap.output()
    # The Delete removes exactly the listed files, the shards and the head.
    smb.put(folder, "foreign.txt", b"not ours")
    assert cfn.delete(physical_id, p)["Status"] == "SUCCESS"
    assert smb.tree(folder) == {"foreign.txt": b"not ours"}
    assert smb.get(manifest_path(folder)) is None and not smb.exists(shards_folder(folder))


def file_ids(folder: str) -> dict[str, tuple[int, int]]:
    """Each file directly in `folder` (relative to the share root) -> (inode, last write in ns),
    read from the local Samba's disk: a file rewritten (a new file renamed over it) has another
    inode; access times, which reading changes, are left out."""
    conf = Path(samba_env()["FARGATE_SMB_SMB_CONF"]).read_text()
    root = conf.split("[share]", 1)[1].split("path =", 1)[1].splitlines()[0].strip()
    on_disk = Path(root, *folder.split("\\"))
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in on_disk.iterdir() if p.is_file()}


def test_a_checkpoint_rewrites_only_the_shards_that_changed(fn, s3, smb, bucket, folder, admin_parameter):
    """Records of files in other folders are not rewritten when one file changes: the other
    shards stay the very files they were (same inode and last-write time on the share's disk)."""
    bootstrap, cfn = fn
    objects = {f"site/d{i % 5}/f{i}.txt": f"{i}".encode() for i in range(50)}
    upload(s3, bucket, objects)
    p = props(bucket, folder, admin_parameter)
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    before = file_ids(shards_folder(folder))
    s3.put_object(Bucket=bucket, Key="site/d3/f3.txt", Body=b"changed")
    changed = cfn.update(created["PhysicalResourceId"], p, p)
    assert changed["Data"]["Copied"] == "1", changed["Data"]
    after = file_ids(shards_folder(folder))
    assert sorted(after) == sorted(before)
    rewritten = sorted(name for name in before if before[name] != after[name])
    assert rewritten == [f"{folder_key('d3')}.json"], rewritten
    saved = [json.loads(line) for line in bootstrap.stdout_lines() if '"manifest saved"' in line][-1]
    assert saved["shards"] == 1, saved


def test_two_invocations_copying_into_one_folder_lose_no_record(fn, s3, smb, bucket, folder, admin_parameter, moto_url, responses):
    """CloudFormation retries an event while the first invocation may still run. The first one
    listed the bucket before an object was added, and is held (a proxy in front of moto keeps its
    download of one object waiting) while the retry lists the bucket after, copies the new object
    and finishes. Let go, the first one finishes last; it must not drop the record of the file the
    retry copied: it saves its own changes onto the shards as they are."""
    import threading

    from lambda_harness import Bootstrap, RuntimeApi, binary
    from test_sync_content import HoldProxy

    _, cfn = fn
    objects = {f"site/p{i:03}.html": f"page {i}".encode() for i in range(60)}
    upload(s3, bucket, objects)
    proxy = HoldProxy(moto_url, hold=lambda method, path, headers: method == "GET" and path.split("?")[0].endswith("/site/p030.html"))
    held_runtime = RuntimeApi()
    held = Bootstrap(binary("web-content"), held_runtime, {"AWS_ENDPOINT_URL": proxy.url})
    slow_cfn = CloudFormation(held_runtime, responses, RESOURCE, "WebContent")
    results = {}
    try:
        proxy.armed = True
        first = threading.Thread(target=lambda: results.__setitem__(
            "slow", slow_cfn.create(props(bucket, folder, admin_parameter, Parallelism="1", Sessions="1"), timeout=300)))
        first.start()
        # Its download of p030 waits at the proxy: it listed the bucket before the object below.
        assert proxy.listed.wait(120), results
        s3.put_object(Bucket=bucket, Key="site/late.html", Body=b"added during the first copy")
        results["fast"] = cfn.create(props(bucket, folder, admin_parameter, Parallelism="8"), timeout=300)
        assert "slow" not in results, results
        proxy.release.set()
        first.join(timeout=300)
    finally:
        proxy.close()
        held.stop()
    assert results["slow"]["Status"] == "SUCCESS" and results["fast"]["Status"] == "SUCCESS", results
    files = manifest_of(smb, folder)["files"]
    assert "late.html" in files, "the record of the file the other invocation copied was lost"
    assert sorted(files) == sorted(["late.html", *(k.removeprefix("site/") for k in objects)])
    assert smb.tree(folder)["late.html"] == b"added during the first copy"


def test_a_fresh_manifest_does_not_take_over_the_shards_an_earlier_one_left(fn, s3, smb, bucket, folder, admin_parameter):
    """An earlier manifest's head is gone (a Delete cut short, removed by hand) but its shards
    remain. A new Create starts afresh: the old records must not come back into its manifest, or
    its DeleteExtraneous would later remove files it never wrote."""
    _, cfn = fn
    upload(s3, bucket, {"site/a.txt": b"a", "site/sub/old.txt": b"old", "other/new.txt": b"new"})
    first = cfn.create(props(bucket, folder, admin_parameter))
    assert first["Status"] == "SUCCESS", first
    assert smb.exists(shards_folder(folder))
    smb.run(f'rm "{manifest_path(folder)}"')

    p = props(bucket, folder, admin_parameter, Prefix="other", DeleteExtraneous="true")
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    assert sorted(manifest_of(smb, folder)["files"]) == ["new.txt"], "records of the earlier manifest were taken over"
    again = cfn.update(created["PhysicalResourceId"], p, p)
    assert again["Status"] == "SUCCESS", again
    assert again["Data"]["Removed"] == "0", again["Data"]
    assert served(smb.tree(folder)) == {"a.txt": b"a", "sub/old.txt": b"old", "new.txt": b"new"}


def test_an_unreadable_shard_is_moved_aside_and_the_save_goes_on(fn, s3, smb, bucket, folder, admin_parameter):
    """A shard that does not parse (damaged, written by hand) is ignored when read; a save that
    must rewrite it moves it aside and starts it afresh rather than failing every update."""
    bootstrap, cfn = fn
    upload(s3, bucket, {"site/index.html": b"i", "site/css/a.css": b"a", "site/css/b.css": b"b"})
    p = props(bucket, folder, admin_parameter)
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    smb.put(shards_folder(folder), f"{folder_key('css')}.json", b"{ not json")
    s3.put_object(Bucket=bucket, Key="site/css/a.css", Body=b"changed")

    again = cfn.update(created["PhysicalResourceId"], p, p)
    assert again["Status"] == "SUCCESS", again
    assert smb.tree(folder)["css/a.css"] == b"changed"
    assert sorted(manifest_of(smb, folder)["files"]) == ["css/a.css", "css/b.css", "index.html"]
    aside = [n for n in smb.tree(shards_folder(folder)) if n.startswith(f"{folder_key('css')}.json.corrupt-")]
    assert len(aside) == 1, sorted(smb.tree(shards_folder(folder)))
    assert smb.get(f"{shards_folder(folder)}\\{aside[0]}") == b"{ not json"
    assert "a shard of the manifest is unreadable: moved aside" in bootstrap.output()

"""Custom::ShareAcl end to end: the real bootstrap sets NTFS permissions on a folder of the Samba
share as the domain admin (password from moto's SSM). Witnesses: smbcacls (the DACL as stored)
and smbclient logons as two ordinary domain accounts (the DACL as enforced)."""

import json
import os
import subprocess
import uuid

import pytest

from conftest import samba_env
from lambda_harness import ROOT, CloudFormation, domain_user

RESOURCE = "Custom::ShareAcl"
SHARE = "\\\\127.0.0.1\\share"
MODIFY, READ, FULL = 0x001301BF, 0x001200A9, 0x001F01FF


class Domain:
    """The Samba share and domain, driven by Samba's own tools."""

    def __init__(self, tmp_path):
        env = samba_env()
        self.conf = env["FARGATE_SMB_SMB_CONF"]
        self.ca = env["FARGATE_SMB_CA"]
        self.admin_password_file = env["FARGATE_SMB_ADMIN_PASSWORD_FILE"]
        self.admin_password = open(self.admin_password_file).read()
        self.tmp = tmp_path
        self.admin_auth = self.auth_file("Administrator", self.admin_password)

    def auth_file(self, user: str, password: str) -> str:
        p = self.tmp / f"{user}.auth"
        p.write_text(f"username = {user}\npassword = {password}\ndomain = EXAMPLE\n")
        p.chmod(0o600)
        return str(p)

    def user(self) -> tuple[str, str, str]:
        """An enabled domain user with a known password; returns (name, auth file, SID)."""
        name, password = domain_user()
        return name, self.auth_file(name, password), self.sid(name)

    def sid(self, name: str) -> str:
        out = subprocess.run(["samba-tool", "user", "show", name, "--attributes=objectSid", "-s", self.conf],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return next(line.split(":", 1)[1].strip() for line in out.stdout.splitlines() if line.startswith("objectSid:"))

    def smbclient(self, command: str, auth: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(["smbclient", "//127.0.0.1/share", "-A", auth or self.admin_auth, "-m", "SMB3",
                              "--client-protection=encrypt", "-c", command], capture_output=True, text=True, timeout=60)
        if check:
            assert out.returncode == 0, out.stdout + out.stderr
        return out

    def acl(self, path: str) -> tuple[int, set[str]]:
        """(control flags, the ACL lines) as smbcacls reads them."""
        out = subprocess.run(["smbcacls", "//127.0.0.1/share", path, "--numeric", "-A", self.admin_auth, "-s", self.conf],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        control = int(out.stdout.split("CONTROL:")[1].splitlines()[0].split(",")[0], 16) if "CONTROL:0x" in out.stdout else None
        return control, {line for line in out.stdout.splitlines() if line.startswith("ACL:")}

    def cacls(self, path: str, *args: str) -> None:
        out = subprocess.run(["smbcacls", "//127.0.0.1/share", path, "-A", self.admin_auth, "-s", self.conf, *args],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr

    def cacls_may_fail(self, path: str, *args: str) -> None:
        subprocess.run(["smbcacls", "//127.0.0.1/share", path, "-A", self.admin_auth, "-s", self.conf, *args],
                       capture_output=True, text=True, timeout=60)

    def owner(self, path: str) -> str:
        out = subprocess.run(["smbcacls", "//127.0.0.1/share", path, "--numeric", "-A", self.admin_auth, "-s", self.conf],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        return next(line.split(":", 1)[1] for line in out.stdout.splitlines() if line.startswith("OWNER:"))

    def exists(self, path: str) -> bool:
        out = self.smbclient(f'ls "{path}"', check=False)
        return out.returncode == 0 and "NT_STATUS_OBJECT_NAME_NOT_FOUND" not in out.stdout + out.stderr


def can_write(domain: Domain, auth: str, folder: str, tmp_path) -> bool:
    local = tmp_path / f"w-{uuid.uuid4().hex[:6]}.txt"
    local.write_text("written by a granted account\n")
    out = domain.smbclient(f'put "{local}" "{folder}\\{local.name}"', auth=auth, check=False)
    text = out.stdout + out.stderr
    if out.returncode == 0 and "NT_STATUS" not in text:
        return True
    assert "NT_STATUS_ACCESS_DENIED" in text, text
    return False


def ace_line(sid: str, mask: int, flags: int = 0x3) -> str:
    """An explicit allow ACE as `smbcacls --numeric` prints it (type 0, flags 0x3 = OI|CI)."""
    return f"ACL:{sid}:0/0x{flags:x}/0x{mask:08x}"


@pytest.fixture
def domain(tmp_path):
    return Domain(tmp_path)


@pytest.fixture
def admin_parameter(aws, domain):
    name = f"/fargate-smb-test/acl-admin-{uuid.uuid4().hex[:8]}"
    aws.ssm.put_parameter(Name=name, Value=domain.admin_password, Type="SecureString")
    return name


@pytest.fixture
def fn(launch, runtime, responses):
    bootstrap = launch("share-acl")
    return bootstrap, CloudFormation(runtime, responses, RESOURCE, f"Acl{uuid.uuid4().hex[:6]}")


def props(folder: str, admin_parameter: str, grants: list, **extra) -> dict:
    return {"ShareUnc": SHARE, "Folder": folder, "Grants": grants, "AdminUsername": "EXAMPLE\\Administrator",
            "AdminPasswordParameter": admin_parameter, **extra}


def test_merge_is_enforced_and_delete_removes_exactly_what_it_added(fn, domain, admin_parameter, tmp_path):
    bootstrap, cfn = fn
    granted, granted_auth, granted_sid = domain.user()
    other, other_auth, other_sid = domain.user()
    folder = f"acl-{uuid.uuid4().hex[:8]}\\web"
    # Someone else's explicit ACE is already there, for the very principal we will grant Read.
    domain.smbclient(f'mkdir "{folder.split(chr(92))[0]}"; mkdir "{folder}"')
    domain.cacls(folder, "--add", f"ACL:{granted_sid}:ALLOWED/OI|CI/READ")
    before_control, before = domain.acl(folder)
    assert not can_write(domain, granted_auth, folder, tmp_path)

    p = props(folder, admin_parameter, [{"Principal": granted_sid, "Rights": "Modify"},
                                        {"Principal": granted_sid, "Rights": "Read"}])
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    physical = created["PhysicalResourceId"]
    assert physical == f"{SHARE}\\{folder}"
    assert created["Data"]["Mode"] == "Merge"
    _, after = domain.acl(folder)
    assert after == before | {ace_line(granted_sid, MODIFY)}, after ^ before
    # Enforced: the granted account writes, the other is refused.
    assert can_write(domain, granted_auth, folder, tmp_path)
    assert not can_write(domain, other_auth, folder, tmp_path)

    # Repeated Create (CloudFormation may retry): same result, the original stays recorded.
    assert cfn.create(p)["Status"] == "SUCCESS"
    assert domain.acl(folder)[1] == after

    # Update in place: grant the other account too, drop the Modify grant.
    p2 = props(folder, admin_parameter, [{"Principal": other_sid, "Rights": "Full", "Inheritance": "OI|CI"},
                                         {"Principal": granted_sid, "Rights": "Read"}])
    updated = cfn.update(physical, p2, p)
    assert updated["Status"] == "SUCCESS", updated
    _, after2 = domain.acl(folder)
    assert after2 == before | {ace_line(other_sid, FULL)}, after2 ^ before
    assert can_write(domain, other_auth, folder, tmp_path)
    assert not can_write(domain, granted_auth, folder, tmp_path)

    files_before_delete = domain.smbclient(f'ls "{folder}\\*"').stdout.count(".txt")
    assert files_before_delete == 2
    deleted = cfn.delete(physical, p2)
    assert deleted["Status"] == "SUCCESS", deleted
    control, restored = domain.acl(folder)
    # Exactly what was there: the pre-existing Read for the same principal survives.
    assert restored == before and control == before_control, restored ^ before
    assert domain.smbclient(f'ls "{folder}\\*"').stdout.count(".txt") == files_before_delete, "content untouched"
    assert cfn.delete(physical, p2)["Status"] == "SUCCESS"  # idempotent
    assert domain.acl(folder)[1] == before
    output = bootstrap.output()
    assert domain.admin_password not in output


def test_replace_is_protected_and_delete_restores_the_recorded_dacl(fn, domain, admin_parameter, tmp_path):
    _, cfn = fn
    granted, granted_auth, granted_sid = domain.user()
    folder = f"acl-{uuid.uuid4().hex[:8]}"  # missing: created by the resource
    assert not domain.exists(folder)
    p = props(folder, admin_parameter, [{"Principal": granted_sid, "Rights": "Modify"},
                                        {"Principal": "Administrators", "Rights": "Full"},
                                        {"Principal": "SYSTEM", "Rights": "Full"}], Mode="Replace")
    # What the folder gets from its parent when created: recorded by the resource before it changes it.
    domain.smbclient(f'mkdir "{folder}-probe"')
    _, inherited = domain.acl(f"{folder}-probe")
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    control, aces = domain.acl(folder)
    assert control & 0x1000, f"DACL protected (SE_DACL_PROTECTED) in {control:#x}"
    assert aces == {ace_line(granted_sid, MODIFY), ace_line("S-1-5-32-544", FULL), ace_line("S-1-5-18", FULL)}, aces
    assert can_write(domain, granted_auth, folder, tmp_path)
    deleted = cfn.delete(created["PhysicalResourceId"], p)
    assert deleted["Status"] == "SUCCESS", deleted
    control, restored = domain.acl(folder)
    assert not control & 0x1000
    assert restored == inherited, restored ^ inherited
    assert not can_write(domain, granted_auth, folder, tmp_path)
    assert domain.exists(folder), "Delete never removes the folder"


def test_bad_properties_fail_naming_the_property_and_change_nothing(fn, domain, admin_parameter):
    _, cfn = fn
    folder = f"acl-{uuid.uuid4().hex[:8]}"
    cases = [
        ({"Mode": "Overwrite"}, "Mode"),
        ({"Grants": [{"Principal": "EXAMPLE\\bob", "Rights": "Read"}]}, "Grants[].Principal"),
        ({"Grants": [{"Principal": "S-1-5-11", "Rights": "Write"}]}, "Grants[].Rights"),
        ({"Grants": []}, "Grants"),
        ({"ShareUnc": "127.0.0.1/share"}, "ShareUnc"),
        ({"AdminPasswordParameter": "/fargate-smb-test/none-such"}, "AdminPasswordParameter"),
    ]
    for extra, prop in cases:
        p = {**props(folder, admin_parameter, [{"Principal": "S-1-5-11", "Rights": "Read"}]), **extra}
        answer = cfn.create(p)
        assert answer["Status"] == "FAILED", (extra, answer)
        assert prop in answer["Reason"], (prop, answer["Reason"])
    assert not domain.exists(folder), "nothing was created"


def test_wrong_admin_password_is_reported_as_a_logon_failure(fn, aws, domain):
    _, cfn = fn
    name = f"/fargate-smb-test/acl-wrong-{uuid.uuid4().hex[:6]}"
    aws.ssm.put_parameter(Name=name, Value="Not-The-Password-1", Type="SecureString")
    answer = cfn.create(props(f"acl-{uuid.uuid4().hex[:8]}", name, [{"Principal": "S-1-5-11", "Rights": "Read"}]))
    assert answer["Status"] == "FAILED"
    assert "wrong user name or password" in answer["Reason"], answer["Reason"]
    assert "Not-The-Password-1" not in json.dumps(answer)


def test_the_sample_events_work_as_shipped(fn, domain, admin_parameter, responses):
    """events/share-acl/{create,update,delete}.json with the principal, folder and parameter made local."""
    _, cfn = fn
    _, _, sid = domain.user()
    folder = f"acl-{uuid.uuid4().hex[:8]}"
    for name in ("create", "update", "delete"):
        text = (ROOT / "events" / "share-acl" / f"{name}.json").read_text()
        text = text.replace("S-1-5-21-1111111111-2222222222-3333333333-1105", sid)
        text = text.replace("/fargate-smb/admin/password", admin_parameter)
        event = json.loads(text)
        for key in ("ResourceProperties", "OldResourceProperties"):
            if key in event:
                event[key]["Folder"] = folder
        if "PhysicalResourceId" in event:
            event["PhysicalResourceId"] = f"{SHARE}\\{folder}"
        event["LogicalResourceId"] = cfn.logical_id
        event["ResponseURL"] = responses.url(event["RequestId"] + folder)
        event["RequestId"] = event["RequestId"] + folder
        answer = cfn.send(event)
        assert answer["Status"] == "SUCCESS", (name, answer)
        _, aces = domain.acl(folder)
        if name == "create":
            assert ace_line(sid, MODIFY) in aces and ace_line("S-1-5-11", READ, 0) in aces, aces
        if name == "update":
            assert ace_line(sid, READ) in aces and ace_line(sid, MODIFY) not in aces, aces
        if name == "delete":
            assert not any(sid in a for a in aces), aces


def record_owner(domain: Domain, tmp_path) -> list[dict]:
    """The ownership of every ACL record on the share (smbclient as the witness)."""
    local = tmp_path / "records"
    local.mkdir(exist_ok=True)
    out = domain.smbclient('ls ".fargate-smb\\acl\\*.json"', check=False)
    records = []
    for line in out.stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.endswith(".json"):
            domain.smbclient(f'get ".fargate-smb\\acl\\{name}" "{local / name}"')
            records.append(json.loads((local / name).read_text()))
    return records


@pytest.mark.parametrize("respell", ["folder-case", "server-name"])
def test_a_replacement_by_respelling_keeps_the_grant(fn, domain, admin_parameter, tmp_path, respell):
    """Folder web -> WEB, or the server 127.0.0.1 -> localhost: a new physical id for CloudFormation,
    the same folder for the file server. CloudFormation's sequence: Update (answered with the new
    id), then Delete of the OLD id with the OLD properties. The grant must stay, enforced."""
    bootstrap, cfn = fn
    granted, granted_auth, granted_sid = domain.user()
    folder = f"acl-{uuid.uuid4().hex[:8]}"
    grants = [{"Principal": granted_sid, "Rights": "Modify"}]
    old = props(folder, admin_parameter, grants)
    new = dict(old, Folder=folder.upper()) if respell == "folder-case" else dict(old, ShareUnc="\\\\localhost\\share")

    created = cfn.create(old)
    assert created["Status"] == "SUCCESS", created
    old_id = created["PhysicalResourceId"]
    _, granted_acl = domain.acl(folder)
    assert ace_line(granted_sid, MODIFY) in granted_acl

    replaced = cfn.update(old_id, new, old)
    assert replaced["Status"] == "SUCCESS", replaced
    new_id = replaced["PhysicalResourceId"]
    assert new_id != old_id
    mine = [r for r in record_owner(domain, tmp_path) if r["owner"].endswith("/" + cfn.logical_id)]
    assert len(mine) == 1 and mine[0]["ownership"] == {"id": new_id, "previous": old_id}, mine

    cleanup = cfn.delete(old_id, old)
    assert cleanup["Status"] == "SUCCESS", cleanup
    assert domain.acl(folder)[1] == granted_acl, "the replaced id's Delete stripped the grant"
    assert can_write(domain, granted_auth, folder, tmp_path)
    assert "left in place" in bootstrap.output()

    # The stack's delete of the new id undoes the grant.
    assert cfn.delete(new_id, new)["Status"] == "SUCCESS"
    assert ace_line(granted_sid, MODIFY) not in domain.acl(folder)[1]
    assert not can_write(domain, granted_auth, folder, tmp_path)


def test_a_rolled_back_replacement_keeps_the_grant_for_the_old_id(fn, domain, admin_parameter, tmp_path):
    _, cfn = fn
    granted, granted_auth, granted_sid = domain.user()
    folder = f"acl-{uuid.uuid4().hex[:8]}"
    old = props(folder, admin_parameter, [{"Principal": granted_sid, "Rights": "Modify"}])
    new = dict(old, Folder=folder.upper())
    old_id = cfn.create(old)["PhysicalResourceId"]
    new_id = cfn.update(old_id, new, old)["PhysicalResourceId"]
    # Rollback: CloudFormation deletes the new id and keeps the old.
    assert cfn.delete(new_id, new)["Status"] == "SUCCESS"
    assert can_write(domain, granted_auth, folder, tmp_path)
    assert cfn.delete(old_id, old)["Status"] == "SUCCESS"
    assert not can_write(domain, granted_auth, folder, tmp_path)


def test_a_delete_with_another_versions_properties_undoes_the_grant(fn, domain, admin_parameter, tmp_path):
    """Unknown properties, Grants of a shape this version does not know, ShareUnc/Folder missing
    (recovered from the id): the Delete still finds its record and undoes exactly its change."""
    bootstrap, cfn = fn
    granted, granted_auth, granted_sid = domain.user()
    folder = f"acl-{uuid.uuid4().hex[:8]}"
    p = props(folder, admin_parameter, [{"Principal": granted_sid, "Rights": "Modify"}])
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    assert can_write(domain, granted_auth, folder, tmp_path)
    other_version = {"AdminUsername": p["AdminUsername"], "AdminPasswordParameter": admin_parameter,
                     "Grants": {"v2": [{"Sid": granted_sid}]}, "AuditAces": [], "Owner": "S-1-5-32-544"}
    deleted = cfn.delete(created["PhysicalResourceId"], other_version)
    assert deleted["Status"] == "SUCCESS", deleted
    assert not can_write(domain, granted_auth, folder, tmp_path)
    assert "cannot read all the properties" in bootstrap.output()
    # No admin credential can be derived: the Delete fails and says how to finish without it.
    stuck = cfn.delete(created["PhysicalResourceId"], {})
    assert stuck["Status"] == "FAILED" and "--retain-resources" in stuck["Reason"], stuck


def test_a_replacement_onto_another_folder_leaves_nothing_behind(fn, domain, admin_parameter, tmp_path):
    _, cfn = fn
    granted, granted_auth, granted_sid = domain.user()
    folder = f"acl-{uuid.uuid4().hex[:8]}"
    old = props(folder, admin_parameter, [{"Principal": granted_sid, "Rights": "Modify"}])
    new = dict(old, Folder=folder + "-api")
    old_id = cfn.create(old)["PhysicalResourceId"]
    new_id = cfn.update(old_id, new, old)["PhysicalResourceId"]
    assert cfn.delete(old_id, old)["Status"] == "SUCCESS"
    assert not can_write(domain, granted_auth, folder, tmp_path)
    assert can_write(domain, granted_auth, new["Folder"], tmp_path)
    assert cfn.delete(new_id, new)["Status"] == "SUCCESS"
    assert not can_write(domain, granted_auth, new["Folder"], tmp_path), "the grant was orphaned"


def test_a_delete_for_an_id_cloudformation_made_up_undoes_the_grant(fn, domain, admin_parameter, tmp_path):
    _, cfn = fn
    granted, granted_auth, granted_sid = domain.user()
    folder = f"acl-{uuid.uuid4().hex[:8]}"
    p = props(folder, admin_parameter, [{"Principal": granted_sid, "Rights": "Modify"}])
    assert cfn.create(p)["Status"] == "SUCCESS"
    assert cfn.delete("fargate-smb-demo-WebFolderAcl-9Z8Y7X", p)["Status"] == "SUCCESS"
    assert not can_write(domain, granted_auth, folder, tmp_path)


def test_the_records_folder_is_private_whatever_the_share_root_grants(fn, domain, admin_parameter, tmp_path):
    """A record holds the DACL that Delete restores: an account that could write one would choose
    the folder's permissions. A Windows/FSx volume root lets Users or Authenticated Users read (or
    more) whatever is made below it; ShareAcl makes .fargate-smb private (protected, full control
    for SYSTEM, Administrators and its own account only) and resets what is inside to inherit
    exactly that — other resources' records included, which stay readable to the admin."""
    _, cfn = fn
    reader, reader_auth, reader_sid = domain.user()
    granted, _, granted_sid = domain.user()
    folder = f"acl-{uuid.uuid4().hex[:8]}"
    p = props(folder, admin_parameter, [{"Principal": granted_sid, "Rights": "Read"}])
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    record = created["Data"]["RecordPath"]
    # .fargate-smb as a root that grants `reader` read (this folder, subfolders and files) leaves it.
    domain.cacls_may_fail(".fargate-smb", "--inherit", "allow")  # fails when already inheriting
    for path, flags in [(".fargate-smb", 0x13), (".fargate-smb\\acl", 0x13), (record, 0x10)]:
        domain.cacls(path, "--add", f"ACL:{reader_sid}:ALLOWED/{flags:#x}/{READ:#x}")
    assert record.rpartition("\\")[2] in domain.smbclient('ls ".fargate-smb\\acl\\*"', auth=reader_auth).stdout

    updated = cfn.update(created["PhysicalResourceId"], dict(p, Grants=[{"Principal": granted_sid, "Rights": "Modify"}]), p)
    assert updated["Status"] == "SUCCESS", updated
    control, aces = domain.acl(".fargate-smb")
    assert control & 0x1000, f"not protected: {control:#x}"
    account = domain.owner(record)  # the function's account as Samba records it (admins: BUILTIN\Administrators)
    assert aces == {ace_line(sid, FULL) for sid in ("S-1-5-18", "S-1-5-32-544", account)}, aces
    for path, flags in [(".fargate-smb\\acl", 0x13), (record, 0x10)]:
        control, below = domain.acl(path)
        assert not control & 0x1000 and below == {ace_line(sid, FULL, flags) for sid in ("S-1-5-18", "S-1-5-32-544", account)}, (path, below)
    denied = domain.smbclient('ls ".fargate-smb\\acl\\*"', auth=reader_auth, check=False)
    assert "NT_STATUS_ACCESS_DENIED" in denied.stdout + denied.stderr, denied.stdout + denied.stderr
    # Delete still reads its record and undoes the grant.
    assert cfn.delete(created["PhysicalResourceId"], p)["Status"] == "SUCCESS"
    assert not any(granted_sid in a for a in domain.acl(folder)[1])
    assert not domain.exists(record)

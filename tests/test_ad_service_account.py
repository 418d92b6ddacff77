"""Custom::AdServiceAccount end to end: the real bootstrap against the Samba AD DC (LDAPS) and
moto (SSM for the passwords). Witnesses: smbclient (the account logs on over SMB 3 with the
password from SSM) and ldapsearch (what the directory holds)."""

import base64
import json
import os
import secrets
import string
import struct
import subprocess
import uuid

import pytest

from conftest import samba_env
from lambda_harness import STACK_ID, CloudFormation

RESOURCE = "Custom::AdServiceAccount"


def strong_password() -> str:
    alphabet = string.ascii_letters + string.digits + "-_.+="
    while True:
        p = "".join(secrets.choice(alphabet) for _ in range(24))
        if any(c.isupper() for c in p) and any(c.islower() for c in p) and any(c.isdigit() for c in p):
            return p


def sid_text(raw: bytes) -> str:
    revision, count = raw[0], raw[1]
    authority = int.from_bytes(raw[2:8], "big")
    subs = struct.unpack("<" + "I" * count, raw[8 : 8 + 4 * count])
    return f"S-{revision}-{authority}" + "".join(f"-{s}" for s in subs)


class Samba:
    def __init__(self, tmp_path):
        env = samba_env()
        self.ca = env["FARGATE_SMB_CA"]
        self.conf = env["FARGATE_SMB_SMB_CONF"]
        self.ou = env["FARGATE_SMB_OU"]
        self.admin_password_file = env["FARGATE_SMB_ADMIN_PASSWORD_FILE"]
        self.admin_password = open(self.admin_password_file).read()
        self.tmp = tmp_path

    def ldap(self, filter_: str, *attrs: str) -> list[dict]:
        out = subprocess.run(
            ["ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-H", "ldaps://127.0.0.1", "-D", "Administrator@example.test",
             "-y", self.admin_password_file, "-b", "DC=example,DC=test", filter_, *attrs],
            capture_output=True, text=True, timeout=30, env={**os.environ, "LDAPTLS_CACERT": self.ca},
        )
        assert out.returncode == 0, out.stderr
        entries, current = [], None
        for line in out.stdout.splitlines():
            if line.startswith("dn: "):
                current = {"dn": line[4:]}
                entries.append(current)
            elif current is not None and ": " in line:
                key, value = line.split(": ", 1)
                if key.endswith(":"):
                    key, value = key[:-1], base64.b64decode(value)
                current.setdefault(key, []).append(value)
        return entries

    def user(self, name: str) -> dict | None:
        found = self.ldap(f"(&(objectClass=user)(sAMAccountName={name}))", "objectSid", "description", "memberOf", "userAccountControl", "pwdLastSet")
        return found[0] if found else None

    def group(self, name: str) -> dict | None:
        found = self.ldap(f"(&(objectClass=group)(sAMAccountName={name}))", "objectSid", "member", "description")
        return found[0] if found else None

    def smb_logon(self, name: str, password: str) -> subprocess.CompletedProcess:
        auth = self.tmp / f"{name}-{uuid.uuid4().hex[:6]}.auth"
        auth.write_text(f"username = {name}\npassword = {password}\ndomain = EXAMPLE\n")
        auth.chmod(0o600)
        try:
            return subprocess.run(["smbclient", "//127.0.0.1/share", "-A", str(auth), "-m", "SMB3", "--client-protection=encrypt", "-c", "ls"],
                                  capture_output=True, text=True, timeout=30)
        finally:
            auth.unlink()

    def create_foreign(self, name: str) -> None:
        out = subprocess.run(["samba-tool", "user", "create", name, "--random-password", "--userou=OU=fargate-smb", "-s", self.conf],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr


@pytest.fixture
def samba(tmp_path):
    return Samba(tmp_path)


@pytest.fixture
def admin_parameter(aws, samba):
    name = f"/fargate-smb-test/admin-{uuid.uuid4().hex[:8]}"
    aws.ssm.put_parameter(Name=name, Value=samba.admin_password, Type="SecureString")
    return name


@pytest.fixture
def service_password(aws):
    """A password parameter as Custom::SsmParameters would leave it."""
    name = f"/fargate-smb-test/{uuid.uuid4().hex[:8]}/password"
    value = strong_password()
    aws.ssm.put_parameter(Name=name, Value=value, Type="SecureString")
    return name, value


@pytest.fixture
def fn(launch, runtime, responses):
    bootstrap = launch("ad-service-account")
    return bootstrap, CloudFormation(runtime, responses, RESOURCE, "ServiceAccount")


def account() -> str:
    return "t" + uuid.uuid4().hex[:9]


def props(samba, admin_parameter, password_parameter, name, **extra) -> dict:
    base = {
        "Domain": "example.test",
        "AccountName": name,
        "OrganizationalUnit": samba.ou,
        "PasswordParameter": password_parameter,
        "Server": "ldaps://127.0.0.1",
        "CaBundle": open(samba.ca).read(),
        "AdminUsername": "Administrator@example.test",
        "AdminPasswordParameter": admin_parameter,
    }
    base.update(extra)
    return base


def test_lifecycle_create_logon_rotate_regroup_delete(fn, aws, samba, admin_parameter, service_password):
    bootstrap, cfn = fn
    param, password = service_password
    name, group, group2 = account(), "g" + uuid.uuid4().hex[:9], "h" + uuid.uuid4().hex[:9]
    p = props(samba, admin_parameter, param, name, Group=group, CreateGroup="true", PasswordParameterVersion="1")

    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    assert created["PhysicalResourceId"] == f"example.test/{name}"
    data = created["Data"]
    user = samba.user(name)
    assert user is not None
    assert data["Sid"] == sid_text(user["objectSid"][0])
    assert data["Username"] == f"EXAMPLE\\{name}"
    assert data["DistinguishedName"] == f"CN={name},{samba.ou}"
    assert f"[fargate-smb:{STACK_ID}/ServiceAccount]" in user["description"][0]
    g = samba.group(group)
    assert g is not None and data["GroupSid"] == sid_text(g["objectSid"][0]) == data["PrincipalSid"]
    assert f"CN={name},{samba.ou}" in g["member"]
    # The account logs on over encrypted SMB 3 with the password from SSM.
    assert samba.smb_logon(name, password).returncode == 0
    # userAccountControl: enabled (no 0x2), password never expires (0x10000).
    uac = int(user["userAccountControl"][0])
    assert uac & 0x2 == 0 and uac & 0x10000

    # The password changes in SSM; a new PasswordParameterVersion resets it in AD.
    new_password = strong_password()
    aws.ssm.put_parameter(Name=param, Value=new_password, Type="SecureString", Overwrite=True)
    p2 = dict(p, PasswordParameterVersion="2")
    updated = cfn.update(created["PhysicalResourceId"], p2, p)
    assert updated["Status"] == "SUCCESS", updated
    assert updated["Data"]["Sid"] == data["Sid"]
    assert samba.smb_logon(name, new_password).returncode == 0
    refused = samba.smb_logon(name, password)
    assert refused.returncode != 0 and "LOGON_FAILURE" in refused.stdout + refused.stderr

    # A group change applies in place; the old group, made by this resource, goes.
    p3 = dict(p2, Group=group2)
    regrouped = cfn.update(created["PhysicalResourceId"], p3, p2)
    assert regrouped["Status"] == "SUCCESS", regrouped
    assert regrouped["PhysicalResourceId"] == created["PhysicalResourceId"]
    assert f"CN={name},{samba.ou}" in samba.group(group2)["member"]
    assert samba.group(group) is None

    for _ in range(2):
        deleted = cfn.delete(created["PhysicalResourceId"], p3)
        assert deleted["Status"] == "SUCCESS", deleted
        assert samba.user(name) is None and samba.group(group2) is None

    output = bootstrap.output()
    for secret in (password, new_password, samba.admin_password):
        assert secret not in output
        assert secret not in json.dumps([created, updated, regrouped])


def test_alternating_pair_with_starttls(fn, samba, admin_parameter, service_password):
    _, cfn = fn
    param, password = service_password
    name, group = account()[:8], "g" + uuid.uuid4().hex[:9]
    p = props(samba, admin_parameter, param, name, Alternating="true", Group=group, CreateGroup=True,
              Server="ldap://127.0.0.1", StartTls="true")
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    data = created["Data"]
    assert data["SamAccountNames"] == f"{name}-a,{name}-b"
    assert data["Username"] == f"EXAMPLE\\{name}-a"
    assert len(data["Sids"].split(",")) == 2
    members = samba.group(group)["member"]
    assert f"CN={name}-a,{samba.ou}" in members and f"CN={name}-b,{samba.ou}" in members
    assert samba.smb_logon(f"{name}-a", password).returncode == 0
    # The inactive account has a password nobody knows yet.
    assert samba.smb_logon(f"{name}-b", password).returncode != 0
    assert cfn.delete(created["PhysicalResourceId"], p)["Status"] == "SUCCESS"
    assert samba.user(f"{name}-a") is None and samba.user(f"{name}-b") is None


def test_repeated_create_adopts_its_own_account(fn, samba, admin_parameter, service_password):
    _, cfn = fn
    param, password = service_password
    name = account()
    p = props(samba, admin_parameter, param, name)
    first = cfn.create(p)
    second = cfn.create(p)
    assert first["Status"] == second["Status"] == "SUCCESS", second
    assert first["Data"]["Sid"] == second["Data"]["Sid"]
    assert samba.smb_logon(name, password).returncode == 0
    cfn.delete(first["PhysicalResourceId"], p)


def test_a_foreign_account_is_refused_unless_adoption_is_asked(fn, samba, admin_parameter, service_password):
    _, cfn = fn
    param, password = service_password
    name = account()
    samba.create_foreign(name)
    before = samba.user(name)
    p = props(samba, admin_parameter, param, name)
    failed = cfn.create(p)
    assert failed["Status"] == "FAILED"
    assert f"the account {name} already exists and was not created by this resource" in failed["Reason"]
    assert "AdoptExisting" in failed["Reason"]
    after = samba.user(name)
    assert after["pwdLastSet"] == before["pwdLastSet"] and after.get("description") == before.get("description")
    # CloudFormation's rollback Delete leaves the foreign account alone.
    assert cfn.delete(failed["PhysicalResourceId"], p)["Status"] == "SUCCESS"
    assert cfn.delete(f"example.test/{name}", p)["Status"] == "SUCCESS"
    assert samba.user(name) is not None
    adopted = cfn.create(dict(p, AdoptExisting="true"))
    assert adopted["Status"] == "SUCCESS", adopted
    assert samba.smb_logon(name, password).returncode == 0


def test_wrong_admin_password_fails_clearly_and_creates_nothing(fn, aws, samba, service_password):
    _, cfn = fn
    param, _ = service_password
    bad = f"/fargate-smb-test/admin-bad-{uuid.uuid4().hex[:6]}"
    aws.ssm.put_parameter(Name=bad, Value="Not-The-Admin-Password-1", Type="SecureString")
    name = account()
    failed = cfn.create(props(samba, bad, param, name))
    assert failed["Status"] == "FAILED"
    assert "refused the credentials of Administrator@example.test: wrong password" in failed["Reason"], failed["Reason"]
    assert samba.user(name) is None


def test_unreachable_dc_fails_clearly(fn, samba, admin_parameter, service_password):
    _, cfn = fn
    param, _ = service_password
    failed = cfn.create(props(samba, admin_parameter, param, account(), Server="ldaps://127.0.0.1:1", TimeoutSeconds="3"))
    assert failed["Status"] == "FAILED"
    assert "cannot reach the domain controller at ldaps://127.0.0.1:1" in failed["Reason"], failed["Reason"]


def test_a_password_the_policy_rejects_leaves_no_account(fn, aws, samba, admin_parameter):
    _, cfn = fn
    param = f"/fargate-smb-test/{uuid.uuid4().hex[:8]}/password"
    aws.ssm.put_parameter(Name=param, Value="abc", Type="SecureString")
    name = account()
    failed = cfn.create(props(samba, admin_parameter, param, name))
    assert failed["Status"] == "FAILED"
    assert f"password policy rejected the password for {name}" in failed["Reason"], failed["Reason"]
    assert samba.user(name) is None


def test_the_certificate_is_verified(fn, samba, admin_parameter, service_password, tmp_path):
    _, cfn = fn
    param, _ = service_password
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=impostor",
                    "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem")], check=True, capture_output=True)
    name = account()
    failed = cfn.create(props(samba, admin_parameter, param, name, CaBundle=(tmp_path / "c.pem").read_text()))
    assert failed["Status"] == "FAILED"
    assert "TLS connection to ldaps://127.0.0.1 failed" in failed["Reason"] and "CaBundle" in failed["Reason"], failed["Reason"]
    assert samba.user(name) is None


def test_missing_group_and_missing_password_parameter(fn, samba, admin_parameter, service_password):
    _, cfn = fn
    param, _ = service_password
    failed = cfn.create(props(samba, admin_parameter, param, account(), Group="no-such-group"))
    assert failed["Status"] == "FAILED" and "the group no-such-group does not exist" in failed["Reason"]
    failed = cfn.create(props(samba, admin_parameter, "/fargate-smb-test/none/password", account()))
    assert failed["Status"] == "FAILED"
    assert "the SSM parameter /fargate-smb-test/none/password (PasswordParameter) does not exist" in failed["Reason"]


def test_on_delete_disable_keeps_a_disabled_account(fn, samba, admin_parameter, service_password):
    _, cfn = fn
    param, password = service_password
    name = account()
    p = props(samba, admin_parameter, param, name, OnDelete="disable")
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    assert cfn.delete(created["PhysicalResourceId"], p)["Status"] == "SUCCESS"
    user = samba.user(name)
    assert user is not None and int(user["userAccountControl"][0]) & 0x2
    assert samba.smb_logon(name, password).returncode != 0


def test_the_sample_events_work_as_shipped(fn, aws, samba, admin_parameter, service_password, responses):
    """events/ad-service-account/{create,update-password,delete}.json with only names made local."""
    from lambda_harness import ROOT

    _, cfn = fn
    param, password = service_password
    base = account()[:8]
    group = "g" + uuid.uuid4().hex[:9]
    ca = open(samba.ca).read()
    for name in ("create", "update-password", "delete"):
        event = json.loads((ROOT / "events" / "ad-service-account" / f"{name}.json").read_text())
        text = json.dumps(event).replace("svc-web", base).replace("web-share-access", group)
        text = text.replace("/fargate-smb/web/password", param).replace("/fargate-smb/admin/password", admin_parameter)
        event = json.loads(text)
        event["ResourceProperties"]["CaBundle"] = ca
        event["ResourceProperties"].pop("UsernameParameter")
        if "OldResourceProperties" in event:
            event["OldResourceProperties"]["CaBundle"] = ca
            event["OldResourceProperties"].pop("UsernameParameter")
        event["ResponseURL"] = responses.url(event["RequestId"])
        answer = cfn.send(event)
        assert answer["Status"] == "SUCCESS", (name, answer)
        if name == "create":
            assert samba.smb_logon(f"{base}-a", password).returncode == 0
    assert samba.user(f"{base}-a") is None and samba.group(group) is None


def test_admin_credential_from_secrets_manager(fn, aws, samba, service_password):
    """A JSON secret {"username", "password"} as Secrets Manager rotation writes it."""
    _, cfn = fn
    param, password = service_password
    secret = aws.secretsmanager.create_secret(
        Name=f"fargate-smb-test/admin-{uuid.uuid4().hex[:6]}",
        SecretString=json.dumps({"username": "Administrator@example.test", "password": samba.admin_password}),
    )["ARN"]
    name = account()
    p = props(samba, "unused", param, name, AdminSecretId=secret)
    del p["AdminPasswordParameter"], p["AdminUsername"]
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    assert samba.smb_logon(name, password).returncode == 0
    assert cfn.delete(created["PhysicalResourceId"], p)["Status"] == "SUCCESS"
    missing = cfn.create(dict(p, AdminSecretId="arn:aws:secretsmanager:us-east-1:123456789012:secret:nope-AbCdEf"))
    assert missing["Status"] == "FAILED" and "could not be read: it does not exist" in missing["Reason"], missing["Reason"]


def owner_id(description: str) -> str:
    """The physical id recorded on an object: [fargate-smb-id:<id>] or [fargate-smb-id:<id><<previous>]."""
    start = description.index("[fargate-smb-id:") + len("[fargate-smb-id:")
    return description[start:description.index("]", start)]


@pytest.mark.parametrize("respell", ["case", "alternating-case"])
def test_a_replacement_by_respelling_keeps_the_accounts(fn, samba, admin_parameter, service_password, respell):
    """AccountName svc-web -> SVC-WEB is a new physical id for CloudFormation and the same accounts
    for AD. CloudFormation's sequence: Update (answered with the new id: a Create for it), then
    the cleanup's Delete for the OLD id with the OLD properties. The accounts, the group and the
    logon must survive; the stack's own delete later removes them."""
    bootstrap, cfn = fn
    param, password = service_password
    name, group = account()[:8], "g" + uuid.uuid4().hex[:9]
    extra = {"Alternating": "true"} if respell == "alternating-case" else {}
    old = props(samba, admin_parameter, param, name, Group=group, CreateGroup="true", **extra)
    new = dict(old, AccountName=name.upper())
    names = [f"{name}-a", f"{name}-b"] if extra else [name]

    created = cfn.create(old)
    assert created["Status"] == "SUCCESS", created
    old_id = created["PhysicalResourceId"]
    sids = {n: samba.user(n)["objectSid"][0] for n in names}
    assert all(owner_id(samba.user(n)["description"][0]) == old_id for n in names)

    replaced = cfn.update(old_id, new, old)
    assert replaced["Status"] == "SUCCESS", replaced
    new_id = replaced["PhysicalResourceId"]
    assert new_id != old_id and new_id.lower() == old_id.lower()
    # The new id owns the accounts now; the old one is remembered until CloudFormation deletes one.
    for n in names:
        assert owner_id(samba.user(n)["description"][0]) == f"{new_id}<{old_id}"

    cleanup = cfn.delete(old_id, old)
    assert cleanup["Status"] == "SUCCESS", cleanup
    for n in names:
        user = samba.user(n)
        assert user is not None, f"{n} was deleted by the replaced id's Delete"
        assert user["objectSid"][0] == sids[n]
        assert int(user["userAccountControl"][0]) & 0x2 == 0, "disabled"
        assert owner_id(user["description"][0]) == new_id
    assert f"CN={names[0]},{samba.ou}" in samba.group(group)["member"]
    assert samba.smb_logon(names[0], password).returncode == 0
    assert "owned by the resource that replaced this one" in bootstrap.output()

    # A repeat of the cleanup changes nothing; the stack's delete of the new id removes all.
    assert cfn.delete(old_id, old)["Status"] == "SUCCESS"
    assert samba.user(names[0]) is not None
    assert cfn.delete(new_id, new)["Status"] == "SUCCESS"
    assert all(samba.user(n) is None for n in names) and samba.group(group) is None


def test_a_rolled_back_replacement_hands_the_accounts_back(fn, samba, admin_parameter, service_password):
    """The same replacement, rolled back: CloudFormation deletes the NEW id and keeps the old."""
    _, cfn = fn
    param, password = service_password
    name = account()
    old = props(samba, admin_parameter, param, name)
    new = dict(old, AccountName=name.upper())
    old_id = cfn.create(old)["PhysicalResourceId"]
    new_id = cfn.update(old_id, new, old)["PhysicalResourceId"]
    assert new_id != old_id
    rollback = cfn.delete(new_id, new)
    assert rollback["Status"] == "SUCCESS", rollback
    user = samba.user(name)
    assert user is not None and owner_id(user["description"][0]) == old_id
    assert samba.smb_logon(name, password).returncode == 0
    assert cfn.delete(old_id, old)["Status"] == "SUCCESS"
    assert samba.user(name) is None


def test_a_delete_with_another_versions_properties_removes_the_account(fn, samba, admin_parameter, service_password):
    """A Delete must not fail on properties this version cannot read: an unknown property (a newer
    template) and a required one missing (AccountName, PasswordParameter: recovered from the id)."""
    bootstrap, cfn = fn
    param, _ = service_password
    name = account()[:8]
    p = props(samba, admin_parameter, param, name, Alternating="true")
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    foreign = {k: v for k, v in p.items() if k not in ("AccountName", "PasswordParameter")}
    foreign["RotationWindow"] = {"Hours": 4}
    deleted = cfn.delete(created["PhysicalResourceId"], foreign)
    assert deleted["Status"] == "SUCCESS", deleted
    assert samba.user(f"{name}-a") is None and samba.user(f"{name}-b") is None
    assert "cannot read all the properties" in bootstrap.output()
    # Without a way to reach the directory the Delete fails, saying how to finish the stack's delete.
    stuck = cfn.delete(created["PhysicalResourceId"], {"Bogus": 1, "Server": ["x"]})
    assert stuck["Status"] == "FAILED", stuck
    assert "--retain-resources ServiceAccount" in stuck["Reason"], stuck


def test_a_replacement_whose_cleanup_never_came_is_settled_by_the_next_update(fn, samba, admin_parameter, service_password):
    """The cleanup Delete of the replaced id can fail (the DC unreachable at that moment);
    CloudFormation then finishes the update anyway. The next in-place Update must forget the
    stale previous id, or the stack's delete would take its Delete for a rollback and orphan the
    accounts."""
    _, cfn = fn
    param, _ = service_password
    name = account()
    old = props(samba, admin_parameter, param, name)
    new = dict(old, AccountName=name.upper())
    old_id = cfn.create(old)["PhysicalResourceId"]
    new_id = cfn.update(old_id, new, old)["PhysicalResourceId"]
    assert owner_id(samba.user(name)["description"][0]) == f"{new_id}<{old_id}"
    # (no cleanup Delete for old_id)
    newer = dict(new, Description="web tier")
    assert cfn.update(new_id, newer, new)["Status"] == "SUCCESS"
    assert owner_id(samba.user(name)["description"][0]) == new_id
    assert cfn.delete(new_id, newer)["Status"] == "SUCCESS"
    assert samba.user(name) is None, "orphaned"


def test_an_unreadable_on_delete_disables_rather_than_deletes(fn, samba, admin_parameter, service_password):
    _, cfn = fn
    param, _ = service_password
    name = account()
    p = props(samba, admin_parameter, param, name, OnDelete="disable")
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    deleted = cfn.delete(created["PhysicalResourceId"], dict(p, OnDelete="archive-and-disable"))
    assert deleted["Status"] == "SUCCESS", deleted
    user = samba.user(name)
    assert user is not None and int(user["userAccountControl"][0]) & 0x2, "deleted instead of disabled"
    subprocess.run(["samba-tool", "user", "delete", name, "-s", samba.conf], capture_output=True, timeout=60)


def test_a_replacement_onto_other_accounts_leaves_nothing_behind(fn, samba, admin_parameter, service_password):
    """svc-web -> svc-api is a replacement onto other accounts (the group is shared): after the
    cleanup's Delete of the old id and the stack's Delete of the new one, nothing is left."""
    _, cfn = fn
    param, _ = service_password
    old_name, new_name, group = account(), account(), "g" + uuid.uuid4().hex[:9]
    old = props(samba, admin_parameter, param, old_name, Group=group, CreateGroup="true")
    new = dict(old, AccountName=new_name)
    old_id = cfn.create(old)["PhysicalResourceId"]
    replaced = cfn.update(old_id, new, old)
    assert replaced["Status"] == "SUCCESS", replaced
    new_id = replaced["PhysicalResourceId"]
    assert owner_id(samba.user(new_name)["description"][0]) == new_id, "a new account has no previous owner"
    assert owner_id(samba.group(group)["description"][0]) == f"{new_id}<{old_id}", "the group is shared"
    assert cfn.delete(old_id, old)["Status"] == "SUCCESS"
    assert samba.user(old_name) is None and samba.user(new_name) is not None and samba.group(group) is not None
    assert cfn.delete(new_id, new)["Status"] == "SUCCESS"
    assert samba.user(new_name) is None, "orphaned by the stack's delete"
    assert samba.group(group) is None, "group orphaned by the stack's delete"


def test_a_failed_replacement_leaves_the_accounts_to_the_old_id(fn, aws, samba, admin_parameter, service_password):
    """A replacement's Create that fails answers create-failed:<request> (whose Delete does
    nothing): the group and the accounts must still belong to the old id, whose later Delete
    removes them. Here the failure comes after the group was reached: the domain refuses the
    password (too short) when the account's is reset."""
    _, cfn = fn
    param, password = service_password
    name, group = account(), "g" + uuid.uuid4().hex[:9]
    old = props(samba, admin_parameter, param, name, Group=group, CreateGroup="true")
    old_id = cfn.create(old)["PhysicalResourceId"]
    aws.ssm.put_parameter(Name=param, Value="Ab1", Type="SecureString", Overwrite=True)
    failed = cfn.update(old_id, dict(old, AccountName=name.upper()), old)
    assert failed["Status"] == "FAILED" and "password policy" in failed["Reason"], failed
    assert owner_id(samba.user(name)["description"][0]) == old_id
    assert owner_id(samba.group(group)["description"][0]) == old_id
    aws.ssm.put_parameter(Name=param, Value=password, Type="SecureString", Overwrite=True)
    assert cfn.delete(old_id, old)["Status"] == "SUCCESS"
    assert samba.user(name) is None and samba.group(group) is None


def test_a_delete_for_an_id_cloudformation_made_up_removes_what_the_create_made(fn, samba, admin_parameter, service_password):
    """A Create whose answer never reached CloudFormation (the PUT failed; it times out) is
    rolled back with a Delete for an id CloudFormation generates: it must still clean up."""
    _, cfn = fn
    param, _ = service_password
    name = account()
    p = props(samba, admin_parameter, param, name)
    assert cfn.create(p)["Status"] == "SUCCESS"
    made_up = "fargate-smb-demo-ServiceAccount-1Q2W3E4R5T6Y"
    assert cfn.delete(made_up, p)["Status"] == "SUCCESS"
    assert samba.user(name) is None, "the rollback left the account behind"


def test_a_delete_with_unreadable_alternating_or_group(fn, samba, admin_parameter, service_password):
    """Alternating of another shape: the accounts are the ones the physical id names. A Group of
    another shape cannot be guessed: the Delete fails, saying so, and removes nothing."""
    _, cfn = fn
    param, _ = service_password
    name, group = account()[:8], "g" + uuid.uuid4().hex[:9]
    p = props(samba, admin_parameter, param, name, Alternating="true", Group=group, CreateGroup="true")
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    refused = cfn.delete(created["PhysicalResourceId"], dict(p, Group={"Name": group}))
    assert refused["Status"] == "FAILED" and "cannot read Group" in refused["Reason"], refused
    assert samba.user(f"{name}-a") is not None
    deleted = cfn.delete(created["PhysicalResourceId"], dict(p, Alternating={"Enabled": True}))
    assert deleted["Status"] == "SUCCESS", deleted
    assert samba.user(f"{name}-a") is None and samba.user(f"{name}-b") is None and samba.group(group) is None


def test_a_damaged_ownership_marker_is_left_alone(fn, samba, admin_parameter, service_password, tmp_path):
    _, cfn = fn
    param, _ = service_password
    name = account()
    p = props(samba, admin_parameter, param, name)
    created = cfn.create(p)
    user = samba.user(name)
    cut = user["description"][0][:-3]  # the marker cut short, as a length-limited tool would
    ldif = tmp_path / "cut.ldif"
    ldif.write_text(f"dn: {user['dn']}\nchangetype: modify\nreplace: description\ndescription: {cut}\n")
    out = subprocess.run(["ldapmodify", "-H", "ldaps://127.0.0.1", "-D", "Administrator@example.test", "-y",
                          samba.admin_password_file, "-f", str(ldif)], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "LDAPTLS_CACERT": samba.ca})
    assert out.returncode == 0, out.stderr
    assert cfn.delete(created["PhysicalResourceId"], p)["Status"] == "SUCCESS"
    assert samba.user(name) is not None, "deleted although its owner could not be read"
    subprocess.run(["samba-tool", "user", "delete", name, "-s", samba.conf], capture_output=True, timeout=60)


def test_a_description_with_marker_text_or_too_long_is_refused(fn, samba, admin_parameter, service_password):
    _, cfn = fn
    param, _ = service_password
    for bad in ("web [fargate-smb-id:x]", "x" * 257):
        answer = cfn.create(props(samba, admin_parameter, param, account(), Description=bad))
        assert answer["Status"] == "FAILED" and "Description" in answer["Reason"], answer


def test_renamed_away_and_back_the_accounts_are_the_new_ids_alone(fn, samba, admin_parameter, service_password):
    """X (svc-web) -> Y (svc-api) -> Z (SVC-WEB), each a replacement with its cleanup: Z finds
    svc-web still marked with X, an id CloudFormation will never delete again. Z must own it
    alone, so the stack's delete of Z removes it instead of handing it back to X."""
    _, cfn = fn
    param, _ = service_password
    web, api = account(), account()
    x = props(samba, admin_parameter, param, web, OnDelete="disable")
    y, z = dict(x, AccountName=api), dict(x, AccountName=web.upper())
    x_id = cfn.create(x)["PhysicalResourceId"]
    y_id = cfn.update(x_id, y, x)["PhysicalResourceId"]
    assert cfn.delete(x_id, x)["Status"] == "SUCCESS"
    assert int(samba.user(web)["userAccountControl"][0]) & 0x2, "X's Delete disables svc-web"
    z_id = cfn.update(y_id, z, y)["PhysicalResourceId"]
    assert cfn.delete(y_id, y)["Status"] == "SUCCESS"
    assert owner_id(samba.user(web)["description"][0]) == z_id
    assert cfn.delete(z_id, z)["Status"] == "SUCCESS"
    user = samba.user(web)
    assert user is not None and int(user["userAccountControl"][0]) & 0x2, "left enabled after the stack's delete"
    for name in (web, api):
        subprocess.run(["samba-tool", "user", "delete", name, "-s", samba.conf], capture_output=True, timeout=60)


def test_a_rule_added_to_create_since_does_not_stop_the_delete(fn, samba, admin_parameter, service_password):
    """The stack was made by an earlier version that allowed a longer Description: its Delete
    must still remove the account (Delete checks only what reaching the directory needs)."""
    _, cfn = fn
    param, _ = service_password
    name = account()
    p = props(samba, admin_parameter, param, name)
    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    deleted = cfn.delete(created["PhysicalResourceId"], dict(p, Description="d" * 300, TimeoutSeconds="900"))
    assert deleted["Status"] == "SUCCESS", deleted
    assert samba.user(name) is None


# --- Secrets Manager as the credential store (issue 17) -------------------------------------------

SHARE = "\\\\127.0.0.1\\share"


def service_secret(aws, username: str, password: str, generation: str = "1") -> str:
    """The secret as the template's GenerateSecretString leaves it: {"username", "password",
    "share", "generation"}; returns its ARN."""
    value = {"username": username, "password": password, "share": SHARE, "generation": generation}
    return aws.secretsmanager.create_secret(Name=f"fargate-smb-test/service-{uuid.uuid4().hex[:8]}",
                                            SecretString=json.dumps(value))["ARN"]


def rotate_to(aws, arn: str, username: str, password: str) -> None:
    """What a finished rotation leaves: a new version put as AWSPENDING, then AWSCURRENT moved to
    it. moto still answers the OLD value to a GetSecretValue without VersionStage (a gap AWS does
    not have), so this also proves the resource asks for AWSCURRENT explicitly."""
    token = str(uuid.uuid4())
    value = {"username": username, "password": password, "share": SHARE, "generation": "1"}
    aws.secretsmanager.put_secret_value(SecretId=arn, ClientRequestToken=token, SecretString=json.dumps(value),
                                        VersionStages=["AWSPENDING"])
    stages = aws.secretsmanager.describe_secret(SecretId=arn)["VersionIdsToStages"]
    current = next(v for v, s in stages.items() if "AWSCURRENT" in s)
    aws.secretsmanager.update_secret_version_stage(SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=token,
                                                   RemoveFromVersionId=current)


def secret_props(samba, admin_parameter, secret_arn, name, **extra) -> dict:
    p = props(samba, admin_parameter, "unused", name, PasswordSecretId=secret_arn, **extra)
    del p["PasswordParameter"]
    return p


def test_secrets_manager_create_new_version_rotation_and_delete(fn, aws, samba, admin_parameter):
    bootstrap, cfn = fn
    name = account()[:8]
    a, b = f"{name}-a", f"{name}-b"
    first, second, rotated = strong_password(), strong_password(), strong_password()
    arn = service_secret(aws, f"EXAMPLE\\{a}", first)
    p = secret_props(samba, admin_parameter, arn, name, Alternating="true", PasswordSecretVersion="1")

    created = cfn.create(p)
    assert created["Status"] == "SUCCESS", created
    assert created["Data"]["SamAccountName"] == a and created["Data"]["Username"] == f"EXAMPLE\\{a}"
    assert samba.smb_logon(a, first).returncode == 0
    assert samba.smb_logon(b, first).returncode != 0, "the inactive account must not know the password"

    # CloudFormation writes a new AWSCURRENT value (PasswordVersion bumped): the new
    # PasswordSecretVersion resets the password.
    aws.secretsmanager.put_secret_value(SecretId=arn, SecretString=json.dumps(
        {"username": f"EXAMPLE\\{a}", "password": second, "share": SHARE, "generation": "2"}))
    p2 = dict(p, PasswordSecretVersion="2")
    updated = cfn.update(created["PhysicalResourceId"], p2, p)
    assert updated["Status"] == "SUCCESS", updated
    assert samba.smb_logon(a, second).returncode == 0
    refused = samba.smb_logon(a, first)
    assert refused.returncode != 0 and "LOGON_FAILURE" in refused.stdout + refused.stderr

    # A rotation made -b active. -b's password is left unknown in AD here, so a logon with the
    # secret's password proves the Update set it from the secret; -a must not be touched.
    rotate_to(aws, arn, f"EXAMPLE\\{b}", rotated)
    a_before = samba.user(a)["pwdLastSet"]
    after_rotation = cfn.update(created["PhysicalResourceId"], p2, p2)
    assert after_rotation["Status"] == "SUCCESS", after_rotation
    assert after_rotation["Data"]["SamAccountName"] == b, after_rotation["Data"]
    assert after_rotation["Data"]["Username"] == f"EXAMPLE\\{b}"
    assert after_rotation["Data"]["Sid"] == sid_text(samba.user(b)["objectSid"][0])
    assert samba.smb_logon(b, rotated).returncode == 0
    assert samba.user(a)["pwdLastSet"] == a_before and samba.smb_logon(a, second).returncode == 0

    # Delete never reads the secret: it works with the secret gone.
    aws.secretsmanager.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    deleted = cfn.delete(created["PhysicalResourceId"], p2)
    assert deleted["Status"] == "SUCCESS", deleted
    assert samba.user(a) is None and samba.user(b) is None

    answers = json.dumps([created, updated, after_rotation, deleted])
    for secret in (first, second, rotated, samba.admin_password):
        assert secret not in bootstrap.output() and secret not in answers
    assert not any("password" in k.lower() for k in after_rotation["Data"]), after_rotation["Data"]


def test_an_update_from_ssm_parameters_to_secrets_manager(fn, aws, samba, admin_parameter, service_password):
    """A stack moving from CredentialStore ssm-parameters to secrets-manager: the new secret
    (CloudFormation generates it: username back to -a, a new password) decides the active
    account, even though SSM said -b."""
    bootstrap, cfn = fn
    param, ssm_password = service_password
    name = account()[:8]
    a, b = f"{name}-a", f"{name}-b"
    username_parameter = f"/fargate-smb-test/{uuid.uuid4().hex[:8]}/username"
    aws.ssm.put_parameter(Name=username_parameter, Value=f"EXAMPLE\\{b}", Type="String")
    old = props(samba, admin_parameter, param, name, Alternating="true", UsernameParameter=username_parameter,
                PasswordParameterVersion="1")
    created = cfn.create(old)
    assert created["Status"] == "SUCCESS", created
    assert created["Data"]["SamAccountName"] == b and samba.smb_logon(b, ssm_password).returncode == 0

    new_password = strong_password()
    arn = service_secret(aws, f"EXAMPLE\\{a}", new_password)
    new = secret_props(samba, admin_parameter, arn, name, Alternating="true", PasswordSecretVersion="1")
    switched = cfn.update(created["PhysicalResourceId"], new, old)
    assert switched["Status"] == "SUCCESS", switched
    assert switched["Data"]["SamAccountName"] == a and switched["Data"]["Username"] == f"EXAMPLE\\{a}"
    assert samba.smb_logon(a, new_password).returncode == 0
    assert samba.smb_logon(b, new_password).returncode != 0
    assert cfn.delete(created["PhysicalResourceId"], new)["Status"] == "SUCCESS"
    assert samba.user(a) is None and samba.user(b) is None
    assert new_password not in bootstrap.output() and new_password not in json.dumps(switched)


def test_secrets_manager_errors_name_the_field_and_show_no_value(fn, aws, samba, admin_parameter, service_password):
    bootstrap, cfn = fn
    param, _ = service_password
    hidden = strong_password()
    name = account()[:8]
    good = service_secret(aws, f"EXAMPLE\\{name}-a", hidden)
    no_password = aws.secretsmanager.create_secret(
        Name=f"fargate-smb-test/bad-{uuid.uuid4().hex[:8]}",
        SecretString=json.dumps({"username": f"EXAMPLE\\{name}-a", "pasword": hidden}))["ARN"]
    binary = aws.secretsmanager.create_secret(Name=f"fargate-smb-test/bin-{uuid.uuid4().hex[:8]}",
                                              SecretBinary=hidden.encode())["ARN"]
    foreign = service_secret(aws, "EXAMPLE\\someone-else", hidden)
    other_domain = service_secret(aws, f"OTHER\\{name}-a", hidden)
    missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:fargate-smb-test/none-AbCdEf"
    base = secret_props(samba, admin_parameter, good, name, Alternating="true")
    cases = [
        (dict(base, PasswordSecretId=missing),
         [missing, "(PasswordSecretId) could not be read: it does not exist"]),
        (dict(base, PasswordSecretId=no_password),
         [no_password, "(PasswordSecretId)", 'the key "password" is missing', '"password": "..."']),
        (dict(base, PasswordSecretId=binary), [binary, "(PasswordSecretId) is binary"]),
        (dict(base, PasswordSecretId=foreign),
         [foreign, "(PasswordSecretId) names \"EXAMPLE\\\\someone-else\"", "none of this resource's accounts",
          f"{name}-a, {name}-b"]),
        (dict(base, PasswordSecretId=other_domain), [other_domain, "not in this resource's domain", "EXAMPLE\\<account>"]),
        (dict(base, PasswordParameter=param), ["PasswordParameter and PasswordSecretId are both set"]),
        (dict(base, UsernameParameter="/fargate-smb-test/username"), ["UsernameParameter is set with PasswordSecretId"]),
        (dict(base, PasswordParameterVersion="2"), ["PasswordParameterVersion is set with PasswordSecretId"]),
    ]
    for p, expected in cases:
        answer = cfn.create(p)
        assert answer["Status"] == "FAILED", (expected, answer)
        for text in expected:
            assert text in answer["Reason"], (text, answer["Reason"])
        assert hidden not in json.dumps(answer)
        assert samba.user(f"{name}-a") is None and samba.user(f"{name}-b") is None
    assert hidden not in bootstrap.output()

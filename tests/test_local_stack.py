"""The local stack itself: the Samba AD DC answers LDAPS with a certificate clients can verify,
logs on over SMB 3 with encryption, refuses a wrong password, and its share keeps NT ACLs."""

import os
import subprocess

import pytest

from conftest import samba_env


def run(argv, env=None, check=False):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}, check=check)


def test_ldaps_answers_with_a_verifiable_certificate(samba):
    out = run(["ldapsearch", "-LLL", "-H", "ldaps://127.0.0.1", "-x", "-b", "", "-s", "base", "defaultNamingContext"],
              {"LDAPTLS_CACERT": samba["ca"], "LDAPTLS_REQCERT": "demand"})
    assert out.returncode == 0, out.stderr
    assert "defaultNamingContext: DC=example,DC=test" in out.stdout


def test_admin_logs_on_over_encrypted_smb3_and_a_wrong_password_is_refused(samba, tmp_path):
    good = samba["authfile"]
    out = run(["smbclient", "//127.0.0.1/share", "-A", good, "-m", "SMB3", "--client-protection=encrypt", "-c", "ls"])
    assert out.returncode == 0, out.stderr
    bad = tmp_path / "bad"
    bad.write_text("username = Administrator\npassword = Not-The-Password-1\ndomain = EXAMPLE\n")
    bad.chmod(0o600)
    out = run(["smbclient", "//127.0.0.1/share", "-A", str(bad), "--client-protection=encrypt", "-c", "ls"])
    assert out.returncode != 0
    assert "NT_STATUS_LOGON_FAILURE" in out.stdout + out.stderr


def test_the_share_root_keeps_its_protected_nt_acl(samba):
    out = run(["smbcacls", "//127.0.0.1/share", "/", "-A", samba["authfile"], "-s", samba["conf"]])
    assert out.returncode == 0, out.stderr
    assert "CONTROL:SR|PD" in out.stdout  # PD: protected DACL
    assert "ACL:EXAMPLE\\Domain Admins:ALLOWED/OI|CI/0x000001ff" in out.stdout
    assert "ACL:NT AUTHORITY\\Authenticated Users:ALLOWED/0x0/READ" in out.stdout


def test_the_dc_listens_on_loopback_only():
    out = run(["ss", "-ltnH"])
    for line in out.stdout.splitlines():
        local = line.split()[3]
        if local.endswith((":445", ":636", ":389", ":88")):
            assert local.startswith(("127.", "[::1]", "[::ffff:127.")), line
    assert samba_env()["FARGATE_SMB_DC"] == "127.0.0.1"


@pytest.fixture
def samba(tmp_path):
    env = samba_env()
    password = open(env["FARGATE_SMB_ADMIN_PASSWORD_FILE"]).read()
    authfile = tmp_path / "admin.auth"
    authfile.write_text(f"username = Administrator\npassword = {password}\ndomain = EXAMPLE\n")
    authfile.chmod(0o600)
    return {"ca": env["FARGATE_SMB_CA"], "conf": env["FARGATE_SMB_SMB_CONF"], "authfile": str(authfile)}

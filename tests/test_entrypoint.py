"""The container entrypoint (container/, fargate-smb-mount), both builds: the Linux binary, and the
Windows .exe that ships, run under Wine. Preflight against the Samba share, each failure its own
error; the Windows actions as data; where the password goes (only to the one PowerShell, through
its environment) and where it does not (argv, logs, the main process); exit codes; signals.

PowerShell and appcmd do not exist here, on Linux or in Wine: `SMB_POWERSHELL` / `SMB_APPCMD`
point at `fake_tool` (container/examples), which records its argv and environment and answers as
those tools do. Everything else is real: the SMB session, the child processes, the environment."""

import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lambda_harness import ROOT, TARGET, binary, domain_user, samba_env

WINE = "/usr/lib/wine/wine64"
WINDOWS_TARGET = "x86_64-pc-windows-gnu"
WINDOWS_PROFILE = os.environ.get("FARGATE_SMB_WINDOWS_PROFILE", "release")


def windows_exe(name: str, example: bool = False) -> Path:
    path = TARGET / WINDOWS_TARGET / WINDOWS_PROFILE / ("examples" if example else "") / f"{name}.exe"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: build it first (scripts/test does)")
    return path


def win_path(path: Path) -> str:
    """Wine's Z: drive is the Unix root."""
    return "Z:" + str(path).replace("/", "\\")


class Build:
    """One build of the entrypoint and how to run it."""

    def __init__(self, kind: str, tmp_path: Path):
        self.kind = kind
        self.tmp = tmp_path
        self.log = tmp_path / "fake-tool.jsonl"
        if kind == "linux":
            self.argv = [str(binary("fargate-smb-mount"))]
            self.fake_tool = str(binary("fake_tool", example=True))
            self.log_arg = str(self.log)
            self.base_env = {"PATH": os.environ["PATH"]}
        else:
            prefix = subprocess.run([str(ROOT / "scripts" / "wine-prefix")], check=True, capture_output=True,
                                    text=True, timeout=300).stdout.strip()
            self.argv = [WINE, str(windows_exe("fargate-smb-mount"))]
            self.fake_tool = win_path(windows_exe("fake_tool", example=True))
            self.log_arg = win_path(self.log)
            self.base_env = {"PATH": os.environ["PATH"], "WINEPREFIX": prefix, "WINEDEBUG": "-all",
                             "WINEDLLOVERRIDES": "mscoree,mshtml=", "HOME": os.environ.get("HOME", "/root")}

    def main_exit(self, code: int) -> list[str]:
        return ["cmd", "/c", f"exit {code}"] if self.kind == "windows" else ["sh", "-c", f"exit {code}"]

    def main_dump_env(self) -> list[str]:
        return ["cmd", "/c", "set"] if self.kind == "windows" else ["env"]

    def run(self, args, env, timeout=120) -> subprocess.CompletedProcess:
        full = {**self.base_env, "SMB_POWERSHELL": self.fake_tool, "SMB_APPCMD": self.fake_tool,
                "FAKE_TOOL_LOG": self.log_arg, **env}
        return subprocess.run([*self.argv, *args], env=full, capture_output=True, text=True, timeout=timeout)

    def tool_calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


@pytest.fixture(params=["linux", "windows"])
def build(request, tmp_path) -> Build:
    return Build(request.param, tmp_path)


@pytest.fixture(scope="module")
def stack():
    env = samba_env()
    env["admin_password"] = open(env["FARGATE_SMB_ADMIN_PASSWORD_FILE"]).read().strip()
    return env


@pytest.fixture(scope="module")
def user():
    """A domain user: read access to the share root (Authenticated Users), no write."""
    return domain_user()


def share_env(user, share="\\\\127.0.0.1\\share", **extra) -> dict:
    name, password = user
    return {"SMB_SHARE": share, "SMB_USERNAME": f"EXAMPLE\\{name}", "SMB_PASSWORD": password,
            "SMB_DEADLINE_SECONDS": "1", "SMB_CONNECT_TIMEOUT_SECONDS": "3", **extra}


def admin_env(stack, **extra) -> dict:
    return {"SMB_SHARE": "\\\\127.0.0.1\\share", "SMB_USERNAME": "EXAMPLE\\Administrator",
            "SMB_PASSWORD": stack["admin_password"], "SMB_DEADLINE_SECONDS": "1", **extra}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def assert_no_secret(password: str, *texts: str):
    # A bare `password not in text` would have pytest print both on failure.
    for text in texts:
        leaked = password in text
        assert not leaked, "the password is in the output"


# ── doctor: the preflight, each failure its own error ─────────────────────────────────────────

def test_doctor_passes_with_a_good_credential(build, user):
    out = build.run(["doctor"], share_env(user))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok    name resolves" in out.stdout
    assert "ok    TCP port answers" in out.stdout
    assert "ok    SMB session and share" in out.stdout
    assert "every check passed" in out.stdout
    assert_no_secret(user[1], out.stdout, out.stderr)


def test_doctor_write_test_writes_and_removes_a_file(build, stack):
    out = build.run(["doctor"], admin_env(stack, SMB_WRITE_TEST="true"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok    write test" in out.stdout
    written = next(line for line in out.stdout.splitlines() if "write test" in line).split()[3]
    assert written.startswith(".fargate-smb-preflight-")
    # Witness: smbclient no longer finds the file.
    auth = build.tmp / "admin.auth"
    auth.write_text(f"username = Administrator\npassword = {stack['admin_password']}\ndomain = EXAMPLE\n")
    ls = subprocess.run(["smbclient", "//127.0.0.1/share", "-A", str(auth), "--client-protection=encrypt", "-c", "ls"],
                        capture_output=True, text=True, timeout=60)
    assert ls.returncode == 0, ls.stderr
    assert written not in ls.stdout


@pytest.mark.parametrize("case, code", [
    ("wrong_password", "logon_failure"),
    ("disabled_account", "account_disabled"),
    ("unknown_share", "share_not_found"),
    ("missing_folder", "folder_not_found"),
    ("closed_port", "port_unreachable"),
    ("unresolvable_name", "name_not_resolved"),
    ("no_write_access", "access_denied"),
])
def test_doctor_names_each_failure(build, user, case, code):
    env = share_env(user)
    if case == "wrong_password":
        env["SMB_PASSWORD"] = "Not-The-Password-1"
    elif case == "disabled_account":
        name, password = domain_user(enabled=False)
        env.update(SMB_USERNAME=f"EXAMPLE\\{name}", SMB_PASSWORD=password)
    elif case == "unknown_share":
        env["SMB_SHARE"] = "\\\\127.0.0.1\\no-such-share"
    elif case == "missing_folder":
        env["SMB_SHARE"] = "\\\\127.0.0.1\\share\\no-such-folder"
    elif case == "closed_port":
        env["SMB_PORT"] = str(closed_port())
    elif case == "unresolvable_name":
        env["SMB_SHARE"] = "\\\\no-such-host.invalid\\share"
    elif case == "no_write_access":
        env["SMB_WRITE_TEST"] = "true"
    out = build.run(["doctor"], env)
    assert out.returncode == 3, out.stdout + out.stderr
    failed = [line for line in out.stdout.splitlines() if line.strip().startswith("FAIL")]
    assert len(failed) == 1, out.stdout
    assert f"[{code}]" in failed[0], out.stdout
    assert "FAILED" in out.stdout
    assert_no_secret(env["SMB_PASSWORD"], out.stdout, out.stderr)


def test_doctor_reports_a_configuration_error_by_name(build):
    out = build.run(["doctor"], {"SMB_SHARE": "fs/share", "SMB_USERNAME": "EXAMPLE\\x", "SMB_PASSWORD": "x"})
    assert out.returncode == 2
    assert "SMB_SHARE" in out.stdout and "UNC" in out.stdout


# ── a start: preflight, mapping, virtual directory, main process ──────────────────────────────

def test_start_maps_adds_the_vdir_and_scrubs_the_main_process_environment(build, user):
    name, password = user
    env = share_env(user, SMB_IIS_VDIRS="/content=G:\\web", KEEP_ME="still-here", password="old-compat-value")
    out = build.run(["--", *build.main_dump_env()], env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert_no_secret(password, out.stdout, out.stderr)

    # The main process saw the container's environment without any credential variable.
    dumped = {line.split("=", 1)[0].upper() for line in out.stdout.splitlines() if "=" in line and not line.startswith("{")}
    assert "KEEP_ME" in dumped and "SMB_SHARE" in dumped
    for gone in ("SMB_PASSWORD", "SMB_USERNAME", "PASSWORD", "FARGATE_SMB_PASSWORD", "FARGATE_SMB_USERNAME"):
        assert gone not in dumped, (gone, out.stdout)

    calls = build.tool_calls()
    assert [c["argv"][1:3] for c in calls] == [["-NoLogo", "-NoProfile"], ["list", "config"], ["set", "config"],
                                               ["list", "vdir"], ["add", "vdir"]], calls
    mapping, filtering_query, filtering_add, query, add = calls
    # The password reached PowerShell through its environment only.
    assert mapping["env"]["FARGATE_SMB_PASSWORD"] == password
    assert mapping["env"]["FARGATE_SMB_USERNAME"] == f"EXAMPLE\\{name}"
    assert "SMB_PASSWORD" not in {k.upper() for k in mapping["env"]}
    assert "-EncodedCommand" in mapping["argv"]
    for call in calls:
        assert_no_secret(password, " ".join(call["argv"]))
    for call in (filtering_query, filtering_add, query, add):
        assert password not in call["env"].values()
        assert "FARGATE_SMB_PASSWORD" not in {k.upper() for k in call["env"]}
    # The share's bookkeeping folder is hidden before any directory points at the share.
    assert filtering_query["argv"][1:] == ["list", "config", "Default Web Site",
                                           "/section:system.webServer/security/requestFiltering"]
    assert filtering_add["argv"][1:] == ["set", "config", "Default Web Site",
                                         "/section:system.webServer/security/requestFiltering",
                                         "/+hiddenSegments.[segment='.fargate-smb']",
                                         "/+hiddenSegments.[segment='.fargate-smb-content.json']", "/commit:apphost"]
    assert query["argv"][1:] == ["list", "vdir", "Default Web Site/content", "/text:physicalPath"]
    assert add["argv"][1:] == ["add", "vdir", "/app.name:Default Web Site/", "/path:/content", "/physicalPath:G:\\web"]

    logs = json_lines(out.stdout)
    messages = [entry["message"] for entry in logs]
    for expected in ("starting", "preflight passed", "share mapped", "hidden segment", "virtual directory",
                     "main process started", "main process exited"):
        assert expected in messages, messages
    mapped = next(entry for entry in logs if entry["message"] == "share mapped")
    assert mapped["outcome"] == "Created" and mapped["drive"] == "G:"


def test_the_health_probe_is_never_served_from_a_cache(build, user):
    """SMB_IIS_NO_CACHE: after the directories exist, IIS's output cache and HTTP.sys's kernel
    cache are turned off for the probe's URL, in applicationHost.config, so a health check reads
    the file from the share each time; a failure to do so stops the task (exit 4) with its code."""
    probe = "/content/fargate-smb-health.txt"
    env = share_env(user, SMB_IIS_VDIRS="/content=G:\\web", SMB_IIS_NO_CACHE=probe)
    out = build.run(["--", *build.main_dump_env()], env)
    assert out.returncode == 0, out.stdout + out.stderr
    calls = build.tool_calls()
    assert [c["argv"][1:3] for c in calls][-3:] == [["list", "vdir"], ["add", "vdir"], ["set", "config"]], calls
    assert calls[-1]["argv"][1:] == ["set", "config", f"Default Web Site{probe}", "/section:system.webServer/caching",
                                     "/enabled:false", "/enableKernelCache:false", "/commit:apphost"]
    assert "no cache" in [e["message"] for e in json_lines(out.stdout)]
    plan = json.loads(build.run(["--plan", "--json"], env).stdout)
    assert [i["args"] for i in plan["uncached"]] == [calls[-1]["argv"][1:]]

    failed = build.run(["--", *build.main_dump_env()], dict(env, FAKE_TOOL_FAIL_SECTION="system.webServer/caching"))
    assert failed.returncode == 4, failed.stdout + failed.stderr
    last = json_lines(failed.stdout)[-1]
    assert (last["message"], last["code"]) == ("the task stops", "no_cache"), last
    assert "main process started" not in failed.stdout
    bad = build.run(["--plan"], dict(env, SMB_IIS_NO_CACHE="content/x.txt"))
    assert bad.returncode == 2 and "SMB_IIS_NO_CACHE" in bad.stdout + bad.stderr, bad.stdout + bad.stderr


def test_start_is_idempotent_when_the_mapping_and_vdir_exist(build, user):
    # appcmd's answer once the segment is there (IIS keeps the case it was added with).
    filtering = ('<system.webServer>\r\n  <security>\r\n    <requestFiltering>\r\n      <hiddenSegments>\r\n'
                 '        <add segment="web.config" />\r\n        <add segment=".fargate-smb" />\r\n'
                 '        <add segment=".fargate-smb-content.json" />\r\n'
                 '      </hiddenSegments>\r\n    </requestFiltering>\r\n  </security>\r\n</system.webServer>')
    env = share_env(user, SMB_IIS_VDIRS="/content=G:\\web", FAKE_TOOL_MAP_OUTCOME="kept", FAKE_TOOL_VDIR_PATH="g:\\WEB\\",
                    FAKE_TOOL_CONFIG=filtering)
    out = build.run(["--", *build.main_exit(0)], env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert [c["argv"][1:3] for c in build.tool_calls()] == [["-NoLogo", "-NoProfile"], ["list", "config"],
                                                            ["list", "vdir"]]
    logs = json_lines(out.stdout)
    assert next(e for e in logs if e["message"] == "share mapped")["outcome"] == "Kept"
    assert next(e for e in logs if e["message"] == "hidden segment")["decision"] == "keep"
    assert next(e for e in logs if e["message"] == "virtual directory")["decision"] == "Keep"


def test_start_repoints_a_vdir_that_points_elsewhere(build, user):
    env = share_env(user, SMB_IIS_VDIRS="/content=G:\\web", FAKE_TOOL_MAP_OUTCOME="replaced",
                    FAKE_TOOL_VDIR_PATH="C:\\inetpub\\wwwroot\\content")
    out = build.run(["--", *build.main_exit(0)], env)
    assert out.returncode == 0, out.stdout + out.stderr
    calls = build.tool_calls()
    assert calls[-1]["argv"][1:] == ["set", "vdir", "Default Web Site/content", "/physicalPath:G:\\web"]


@pytest.mark.parametrize("code", [0, 7, 255])
def test_exit_code_of_the_main_process_is_the_entrypoint_s(build, user, code):
    out = build.run(["--", *build.main_exit(code)], share_env(user))
    assert out.returncode == code, out.stdout + out.stderr


def test_failed_preflight_stops_the_task_before_mapping(build, user):
    env = share_env(user, SMB_PASSWORD="Not-The-Password-1", SMB_DEADLINE_SECONDS="3")
    out = build.run(["--", *build.main_exit(0)], env, timeout=60)
    assert out.returncode == 3, out.stdout + out.stderr
    assert build.tool_calls() == [], "nothing is mapped after a failed preflight"
    logs = json_lines(out.stdout)
    retries = [e for e in logs if e["message"] == "preflight failed; retrying"]
    assert retries and all(e["code"] == "logon_failure" for e in retries)
    final = logs[-1]
    assert final["level"] == "ERROR" and final["code"] == "logon_failure"
    assert "main process started" not in [e["message"] for e in logs]
    assert_no_secret("Not-The-Password-1", out.stdout, out.stderr)


def test_failed_mapping_stops_the_task(build, user):
    out = build.run(["--", *build.main_exit(0)], share_env(user, FAKE_TOOL_MAP_EXIT="1"))
    assert out.returncode == 4, out.stdout + out.stderr
    logs = json_lines(out.stdout)
    # PowerShell said nothing the entrypoint reads: the generic code, and its last lines.
    failed = next(e for e in logs if e["message"] == "share mapping failed")
    assert failed["level"] == "ERROR" and failed["code"] == "mapping_failed", failed
    assert logs[-1]["level"] == "ERROR"
    assert "main process started" not in [e["message"] for e in logs]


@pytest.mark.parametrize("form", ["report", "clixml"])
@pytest.mark.parametrize("win32, code, fix", [
    (1219, "credential_conflict", "Remove-SmbGlobalMapping"),
    # The test's user name names its domain (the environment's always does): 1312 is then not
    # the bare-name case (mount.rs, for_username, covers that one).
    (1312, "mapping_failed", "names its domain"),
    (1326, "logon_failure", "wrong user name or password"),
    (67, "share_not_found", "share name"),
    (1909, "account_locked_out", "unlock it"),
])
def test_a_failed_mapping_names_windows_error_and_its_fix(build, user, form, win32, code, fix):
    """New-SmbGlobalMapping's failure as powershell.exe reports it with redirected streams: the
    script's own plain-text report, or (for an error the script could not catch) CLIXML. Either
    way the log line carries the doctor's code and the message the fix, never the XML."""
    name, password = user
    env = share_env(user, FAKE_TOOL_MAP_FAIL=f"{form}:{win32}", FAKE_TOOL_MAP_FAIL_ECHO_PASSWORD="1")
    out = build.run(["--", *build.main_exit(0)], env)
    assert out.returncode == 4, out.stdout + out.stderr
    assert_no_secret(password, out.stdout, out.stderr)
    logs = json_lines(out.stdout)
    failed = next(e for e in logs if e["message"] == "share mapping failed")
    assert failed["level"] == "ERROR" and failed["code"] == code, failed
    assert failed["win32"] == win32 and failed["drive"] == "G:", failed
    assert fix in failed["fix"] and fix in failed["error"], failed
    assert f"Win32 error {win32}" in failed["error"], failed
    assert "CLIXML" not in out.stdout and "_x000D_" not in out.stdout
    # Windows' own message is there, with the password it echoed replaced.
    if form == "clixml":
        assert "New-SmbGlobalMapping : " in failed["error"], failed
    assert "(password ***)" in failed["error"], failed
    assert "main process started" not in [e["message"] for e in logs]


def test_an_unknown_windows_error_keeps_its_message(build, user):
    out = build.run(["--", *build.main_exit(0)], share_env(user, FAKE_TOOL_MAP_FAIL="report:1236"))
    assert out.returncode == 4, out.stdout + out.stderr
    failed = next(e for e in json_lines(out.stdout) if e["message"] == "share mapping failed")
    assert failed["code"] == "mapping_failed" and failed["win32"] == 1236, failed
    assert "The network connection was aborted by the local system." in failed["error"], failed


def test_a_main_process_that_does_not_exist(build, user):
    out = build.run(["--", "no-such-program-" + uuid.uuid4().hex[:6]], share_env(user))
    assert out.returncode == 5, out.stdout + out.stderr


def test_configuration_error_names_the_variable(build):
    out = build.run(["--", *build.main_exit(0)], {"SMB_SHARE": "\\\\fs\\share", "SMB_USERNAME": "EXAMPLE\\x"})
    assert out.returncode == 2
    logs = json_lines(out.stdout)
    assert logs[-1]["code"] == "config" and "SMB_PASSWORD" in logs[-1]["error"]


def test_compatibility_names(build, user):
    name, password = user
    env = {"fileshare": "\\\\127.0.0.1\\share", "username": f"EXAMPLE\\{name}", "password": password,
           "SMB_DEADLINE_SECONDS": "1"}
    if build.kind == "windows":
        # Windows' own USERNAME wins over `username` (Wine sets it at start): the reason the
        # namespaced names exist. The entrypoint says so instead of logging on as the wrong user.
        clash = build.run(["--", *build.main_exit(0)], env)
        assert clash.returncode == 2 and "SMB_USERNAME" in clash.stdout, clash.stdout
        env = {**env, "SMB_USERNAME": env.pop("username")}
    out = build.run(["--", *build.main_dump_env()], env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert_no_secret(password, out.stdout, out.stderr)
    assert build.tool_calls()[0]["env"]["FARGATE_SMB_USERNAME"] == f"EXAMPLE\\{name}"


def test_credential_from_ssm_never_enters_the_environment(build, user, aws, moto_url):
    name, password = user
    prefix = f"/fargate-smb-test/{uuid.uuid4().hex[:8]}"
    aws.ssm.put_parameter(Name=f"{prefix}/username", Value=f"EXAMPLE\\{name}", Type="String")
    aws.ssm.put_parameter(Name=f"{prefix}/password", Value=password, Type="SecureString")
    env = {"SMB_SHARE": "\\\\127.0.0.1\\share", "SMB_USERNAME_PARAMETER": f"{prefix}/username",
           "SMB_PASSWORD_PARAMETER": f"{prefix}/password", "SMB_DEADLINE_SECONDS": "1",
           "AWS_ENDPOINT_URL": moto_url, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing"}
    out = build.run(["doctor"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"password from SSM parameter {prefix}/password" in out.stdout
    out = build.run(["--", *build.main_dump_env()], env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert_no_secret(password, out.stdout, out.stderr)
    assert build.tool_calls()[0]["env"]["FARGATE_SMB_PASSWORD"] == password
    missing = build.run(["doctor"], {**env, "SMB_PASSWORD_PARAMETER": f"{prefix}/nope"})
    assert missing.returncode == 3 and f"{prefix}/nope does not exist" in missing.stdout


# ── what the children keep: the task role, values that contain the password ───────────────
#
# The main process's environment reaches the web application (ServiceMonitor copies it into the
# application pools): these look at it, and at every tool's, as the children saw them.

TASK_ROLE_VARS = ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                  "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")


def main_env(stdout: str) -> dict[str, str]:
    """What the main process (`env`, `cmd /c set`) printed, by upper-case name."""
    return {line.split("=", 1)[0].upper(): line.split("=", 1)[1].rstrip("\r")
            for line in stdout.splitlines() if "=" in line and not line.startswith("{")}


def tool_env_names(build: Build) -> list[set[str]]:
    return [{k.upper() for k in call["env"]} for call in build.tool_calls()]


def ssm_credential(aws, user, moto_url) -> dict:
    """The credential in SSM, as CredentialDelivery=task-role gives it to the task; no AWS
    credentials (the test adds them), and no profile files the SDK could find instead."""
    name, password = user
    prefix = f"/fargate-smb-test/{uuid.uuid4().hex[:8]}"
    aws.ssm.put_parameter(Name=f"{prefix}/username", Value=f"EXAMPLE\\{name}", Type="String")
    aws.ssm.put_parameter(Name=f"{prefix}/password", Value=password, Type="SecureString")
    return {"SMB_SHARE": "\\\\127.0.0.1\\share", "SMB_USERNAME_PARAMETER": f"{prefix}/username",
            "SMB_PASSWORD_PARAMETER": f"{prefix}/password", "SMB_DEADLINE_SECONDS": "1",
            "AWS_ENDPOINT_URL": moto_url, "AWS_REGION": "us-east-1",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials", "AWS_CONFIG_FILE": "/nonexistent/config"}


@pytest.fixture
def credential_endpoint():
    """The ECS credential endpoint as the SDK's container provider calls it (GET, with the
    authorization token): answers temporary credentials, which moto takes as any. Yields its
    URL and the Authorization header of every request."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            body = json.dumps({"AccessKeyId": "ASIATESTTASKROLE", "SecretAccessKey": "testing",
                               "Token": "task-role-session", "Expiration": "2099-01-01T00:00:00Z"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v2/credentials/task-role", seen
    finally:
        server.shutdown()
        server.server_close()


def test_task_role_mode_keeps_the_task_role_from_every_child(build, user, aws, moto_url, credential_endpoint):
    """CredentialDelivery=task-role: the entrypoint reads SSM with the task role, through the
    real container credential provider. Had the main process kept the variables that lead to
    it, any code in w3wp could fetch the same credentials and read the password with them."""
    url, seen = credential_endpoint
    token_file = build.tmp / "token"
    token_file.write_text("token-from-the-file")
    env = {**ssm_credential(aws, user, moto_url), "AWS_CONTAINER_CREDENTIALS_FULL_URI": url,
           "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": win_path(token_file) if build.kind == "windows" else str(token_file),
           "AWS_CONTAINER_AUTHORIZATION_TOKEN": "token-from-the-variable"}
    out = build.run(["--", *build.main_dump_env()], env)
    assert_no_secret(user[1], out.stdout, out.stderr)
    assert out.returncode == 0, out.stdout + out.stderr
    # The entrypoint itself did use the task role, authorized by the token.
    assert seen and set(seen) <= {"token-from-the-file", "token-from-the-variable"}, seen
    assert build.tool_calls()[0]["env"]["FARGATE_SMB_PASSWORD"] == user[1]
    main = main_env(out.stdout)
    assert "SMB_SHARE" in main and "SMB_PASSWORD_PARAMETER" in main
    assert not set(TASK_ROLE_VARS) & set(main), sorted(set(TASK_ROLE_VARS) & set(main))
    for names in tool_env_names(build):
        assert not set(TASK_ROLE_VARS) & names
    starting = next(e for e in json_lines(out.stdout) if e["message"] == "starting")
    assert starting["task_role"].startswith("the entrypoint's alone"), starting


@pytest.mark.parametrize("delivery, opt_in, kept", [
    ("task-role", None, False),
    ("task-role", "false", False),
    ("task-role", "true", True),
    # With ECS secrets the entrypoint calls no AWS API: the task role is the application's.
    ("ecs-secrets", None, True),
])
def test_the_task_role_reaches_the_application_only_when_it_is_the_application_s(
        build, user, aws, moto_url, delivery, opt_in, kept):
    # All four variables, pointing nowhere: the SDK's environment credentials come first and
    # are what the entrypoint reads moto with.
    task_role = {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/test-id",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9/never",
                 "AWS_CONTAINER_AUTHORIZATION_TOKEN": "test-token",
                 "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "C:\\no\\such\\token"}
    if delivery == "task-role":
        env = {**ssm_credential(aws, user, moto_url), "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing"}
    else:
        env = {**share_env(user), "AWS_ACCESS_KEY_ID": "app-key"}
    env.update(task_role)
    if opt_in is not None:
        env["SMB_APP_USES_TASK_ROLE"] = opt_in
    out = build.run(["--", *build.main_dump_env()], env)
    assert_no_secret(user[1], out.stdout, out.stderr)
    assert out.returncode == 0, out.stdout + out.stderr
    main = main_env(out.stdout)
    if kept:
        assert {name: main.get(name) for name in TASK_ROLE_VARS} == task_role
        for names in tool_env_names(build):
            assert set(TASK_ROLE_VARS) <= names
    else:
        assert not set(TASK_ROLE_VARS) & set(main)
        for names in tool_env_names(build):
            assert not set(TASK_ROLE_VARS) & names
    # The static keys the entrypoint read SSM with could read the password again: in task-role
    # mode they are withheld like the task role.
    assert ("AWS_ACCESS_KEY_ID" in main) == (delivery == "ecs-secrets" or opt_in == "true"), sorted(main)
    logs = json_lines(out.stdout)
    warned = [e for e in logs if e["message"].startswith("SMB_APP_USES_TASK_ROLE=true")]
    assert len(warned) == (1 if opt_in == "true" else 0), logs
    assert all(e["level"] == "WARN" and "can read the password" in e["message"] for e in warned)
    plan = json.loads(build.run(["--plan", "--json"], env).stdout)
    assert (set(TASK_ROLE_VARS) <= set(plan["removed_from_child_environment"])) == (not kept)


def test_a_variable_that_contains_the_password_is_removed_and_named(build, user):
    name, password = user
    env = share_env(user, DB_CONNECTION=f"Server=db;Password={password};",
                    DB_USER=f"Server=db;User Id=EXAMPLE\\{name}", KEEP_ME="still-here")
    out = build.run(["--", *build.main_dump_env()], env)
    # The log names the variable and never shows the value.
    assert_no_secret(password, out.stdout, out.stderr)
    assert out.returncode == 0, out.stdout + out.stderr
    main = main_env(out.stdout)
    assert "DB_CONNECTION" not in main
    assert main["DB_USER"] == f"Server=db;User Id=EXAMPLE\\{name}" and main["KEEP_ME"] == "still-here"
    for names in tool_env_names(build):
        assert "DB_CONNECTION" not in names
    logs = json_lines(out.stdout)
    warned = [e for e in logs if e.get("variable", "").upper() == "DB_CONNECTION"]
    assert len(warned) == 1, logs
    assert warned[0]["level"] == "WARN" and warned[0]["reason"] == "its value contains the password"
    children = next(e for e in logs if e["message"] == "children's environment")
    assert "DB_CONNECTION" in {n.upper() for n in json.loads(children["removed"])}


@pytest.mark.parametrize("var", ["SMB_PASSWORD", "password"])
def test_the_password_leaves_the_entrypoint_s_own_environment_at_start(build, user, var):
    """The witness is the entrypoint's environment as its own code reads it later: the children's
    environment is built from the live process environment after the mapping's preflight, and
    lists every credential variable it found there and left out. The user name variable is in
    that list (it is still in the process environment); the password variable is not, because
    it was no longer there. (/proc/<pid>/environ would show the initial environment, not this.)"""
    name, password = user
    env = {"SMB_SHARE": "\\\\127.0.0.1\\share", "SMB_USERNAME": f"EXAMPLE\\{name}", var: password,
           "SMB_DEADLINE_SECONDS": "1"}
    out = build.run(["--", *build.main_dump_env()], env)
    assert_no_secret(password, out.stdout, out.stderr)
    assert out.returncode == 0, out.stdout + out.stderr
    logs = json_lines(out.stdout)
    messages = [e["message"] for e in logs]
    children = next(e for e in logs if e["message"] == "children's environment")
    removed = {n.upper() for n in json.loads(children["removed"])}
    assert "SMB_USERNAME" in removed, children
    assert var.upper() not in removed, children
    # And the entrypoint says so, before anything else it logs about the start.
    taken = next(e for e in logs if e["message"] == "credential removed from the entrypoint's own environment")
    assert json.loads(taken["variables"]) == [var]
    assert messages.index(taken["message"]) < messages.index("starting")
    # The one mapping PowerShell still gets it, through its own environment; nothing else does.
    calls = build.tool_calls()
    assert calls[0]["env"]["FARGATE_SMB_PASSWORD"] == password
    assert var.upper() not in {k.upper() for k in calls[0]["env"]}
    assert var.upper() not in main_env(out.stdout)


# ── --plan: the Windows commands, as data ─────────────────────────────────────────────────────

def test_plan_shows_the_exact_commands_and_no_secret(build, user):
    name, password = user
    env = share_env(user, SMB_MAPPINGS="G:=\\\\127.0.0.1\\share;H:=\\\\fs2\\data", SMB_IIS_VDIRS="/content=G:\\web")
    del env["SMB_SHARE"]
    out = build.run(["--plan", "--json", "--", "C:\\ServiceMonitor.exe", "w3svc"], env)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert [m["local"] for m in plan["mappings"]] == ["G:", "H:"]
    first = plan["mappings"][0]["invocation"]
    assert first["program"] == build.fake_tool
    assert first["args"][:6] == ["-NoLogo", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-EncodedCommand"]
    assert "New-SmbGlobalMapping -RemotePath $remote -LocalPath $local -Credential $credential -RequirePrivacy $true -Persistent $false" in first["script"]
    assert first["env"] == [["FARGATE_SMB_USERNAME", {"kind": "plain", "value": f"EXAMPLE\\{name}"}],
                            ["FARGATE_SMB_PASSWORD", {"kind": "password"}]]
    hidden = plan["hidden_segment"]
    assert hidden["segments"] == [".fargate-smb", ".fargate-smb-content.json"]
    assert hidden["add_if_missing"]["args"] == ["set", "config", "Default Web Site",
                                                "/section:system.webServer/security/requestFiltering",
                                                "/+hiddenSegments.[segment='.fargate-smb']",
                                                "/+hiddenSegments.[segment='.fargate-smb-content.json']", "/commit:apphost"]
    vdir = plan["virtual_directories"][0]
    assert vdir["add_if_missing"]["args"] == ["add", "vdir", "/app.name:Default Web Site/", "/path:/content", "/physicalPath:G:\\web"]
    assert plan["main_process"] == ["C:\\ServiceMonitor.exe", "w3svc"]
    assert "SMB_PASSWORD" in plan["removed_from_child_environment"]
    assert_no_secret(password, out.stdout, out.stderr)
    human = build.run(["--plan"], env)
    assert human.returncode == 0 and "New-SmbGlobalMapping" in human.stdout
    assert_no_secret(password, human.stdout)


# ── stop signals (Linux build: Windows console events are not deliverable under Wine) ─────────
#
# No sleep races the spawn here: each test waits for a fact (a log line, a marker file the main
# process writes once its trap is set, the fake PowerShell's own record of its call) before it
# signals, and the entrypoint installs its handlers before it starts anything.

class Entrypoint:
    """A running entrypoint whose stdout (its JSON log) is read line by line as it comes."""

    def __init__(self, build: Build, args: list[str], env: dict):
        full = {**build.base_env, "SMB_POWERSHELL": build.fake_tool, "SMB_APPCMD": build.fake_tool,
                "FAKE_TOOL_LOG": build.log_arg, **env}
        # A session of its own: at the end the whole group (the main process too) is ended by
        # its id, and a signal the test sends reaches the entrypoint alone.
        self.proc = subprocess.Popen([*build.argv, *args], env=full, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        self.seen: list[str] = []
        self.stderr = ""
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _read_stderr(self):
        self.stderr = self.proc.stderr.read()

    def wait_for(self, message: str, timeout: float = 60) -> dict:
        """The first log entry whose message starts with `message`, waiting for it."""
        for entry in json_lines("".join(self.seen)):
            if entry["message"].startswith(message):
                return entry
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no log line {message!r} within {timeout} s:\n{''.join(self.seen)}{self.stderr}"
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            assert line is not None, f"the entrypoint ended before {message!r}:\n{''.join(self.seen)}{self.stderr}"
            self.seen.append(line)
            entry = next(iter(json_lines(line)), None)
            if entry and entry["message"].startswith(message):
                return entry

    def finish(self, timeout: float = 60) -> tuple[int, list[dict]]:
        """Wait for the entrypoint to exit; its exit code and its whole log."""
        code = self.proc.wait(timeout=timeout)
        while (line := self.lines.get(timeout=timeout)) is not None:
            self.seen.append(line)
        return code, json_lines("".join(self.seen))

    def messages(self) -> list[str]:
        return [e["message"] for e in json_lines("".join(self.seen))]

    def close(self):
        # Only what this test started: the entrypoint's own session, by its id.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


def wait_for_file(path: Path, proc: subprocess.Popen, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().strip():
        assert proc.poll() is None, f"the entrypoint exited before {what}"
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.02)


def index(messages: list[str], prefix: str) -> int:
    return next(i for i, m in enumerate(messages) if m.startswith(prefix))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signals_are_forwarded_to_the_main_process(tmp_path, user, sig):
    build = Build("linux", tmp_path)
    ready = tmp_path / "ready"
    # The marker is written after the trap is set: from then on the trap, not sh's default
    # disposition, answers a forwarded signal.
    script = f"trap 'exit 42' TERM INT; echo up > {ready}; while :; do sleep 0.05; done"
    entry = Entrypoint(build, ["--", "sh", "-c", script], share_env(user))
    try:
        entry.wait_for("stop signal handlers installed")
        wait_for_file(ready, entry.proc, "the main process's trap")
        # Only the entrypoint is signalled (not its process group): the trap fires only if it forwards.
        entry.proc.send_signal(sig)
        code, logs = entry.finish(timeout=30)
    finally:
        entry.close()
    assert code == 42, (code, logs, entry.stderr)
    forwarded = [e for e in logs if e["message"].startswith("forwarding")]
    assert forwarded and forwarded[0]["signal"] == sig.name
    messages = [e["message"] for e in logs]
    assert index(messages, "stop signal handlers installed") < index(messages, "main process started")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_before_the_main_process_exists_stops_the_task_without_starting_it(tmp_path, user, sig):
    """The signal arrives while the share is being mapped (the fake PowerShell holds the start
    until the test lets it go), so the main process provably does not exist yet. ECS is stopping
    the task: the entrypoint must neither die of the signal nor lose it, and must not start the
    main process only to stop it; it abandons the mapping and exits with 128 + the signal."""
    build = Build("linux", tmp_path)
    release = tmp_path / "release-the-mapping"
    entry = Entrypoint(build, ["--", "sleep", "600"], share_env(user, FAKE_TOOL_MAP_WAIT_FOR=str(release)))
    try:
        entry.wait_for("stop signal handlers installed")
        wait_for_file(build.log, entry.proc, "the mapping")  # the fake PowerShell records its call first
        assert "main process started" not in entry.messages()
        entry.proc.send_signal(sig)
        code, logs = entry.finish(timeout=30)
    finally:
        release.write_text("go")
        entry.close()
    assert code == 128 + sig, (code, logs, entry.stderr)
    messages = [e["message"] for e in logs]
    assert "main process started" not in messages, messages
    stopped = next(e for e in logs if e["message"].startswith("stop requested before the main process started"))
    assert stopped["signal"] == sig.name and stopped["exit_code"] == 128 + sig, stopped
    assert index(messages, "stop signal handlers installed") < index(messages, "stop signal received before"), messages


def test_console_ctrl_c_does_not_cut_the_main_process_short_windows(tmp_path, user):
    """Under Wine a SIGINT to the entrypoint becomes a CTRL_C_EVENT for its console handler. The
    handler must keep the entrypoint alive until the main process exits, and the exit code must
    still be the main process's."""
    build = Build("windows", tmp_path)
    entry = Entrypoint(build, ["--", "cmd", "/c", "ping -n 4 127.0.0.1 >nul & exit 9"], share_env(user))
    try:
        entry.wait_for("stop signal handlers installed")
        entry.wait_for("main process started")
        entry.proc.send_signal(signal.SIGINT)
        code, logs = entry.finish(timeout=60)
    finally:
        entry.close()
    events = [e for e in logs if e["message"].startswith("console control event")]
    assert events and events[0]["event"] == "ctrl_c", logs
    exited = next(e for e in logs if e["message"] == "main process exited")
    assert code == exited["exit_code"], (code, exited)


def test_a_console_event_before_the_main_process_exists_stops_the_task_windows(tmp_path, user):
    """The handler is installed before anything starts: a Ctrl+C during the mapping neither ends
    the entrypoint abruptly nor is forgotten; the main process is not started and the exit code
    says why (130, as for Ctrl+C)."""
    build = Build("windows", tmp_path)
    release = tmp_path / "release-the-mapping"
    entry = Entrypoint(build, ["--", "cmd", "/c", "ping -n 4 127.0.0.1 >nul & exit 9"],
                       share_env(user, FAKE_TOOL_MAP_WAIT_FOR=win_path(release)))
    try:
        entry.wait_for("stop signal handlers installed")
        wait_for_file(build.log, entry.proc, "the mapping")
        entry.proc.send_signal(signal.SIGINT)
        queued = entry.wait_for("console control event before the main process started")
        assert queued["event"] == "ctrl_c"
        code, logs = entry.finish(timeout=60)
    finally:
        release.write_text("go")
        entry.close()
    messages = [e["message"] for e in logs]
    assert "main process started" not in messages, messages
    stopped = next(e for e in logs if e["message"].startswith("stop requested before the main process started"))
    assert stopped["signal"] == "ctrl_c" and code == 130, (code, stopped)


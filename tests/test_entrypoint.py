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
    for text in texts:
        assert password not in text


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
    assert [c["argv"][1] for c in calls] == ["-NoLogo", "list", "add"], calls
    mapping, query, add = calls
    # The password reached PowerShell through its environment only.
    assert mapping["env"]["FARGATE_SMB_PASSWORD"] == password
    assert mapping["env"]["FARGATE_SMB_USERNAME"] == f"EXAMPLE\\{name}"
    assert "SMB_PASSWORD" not in {k.upper() for k in mapping["env"]}
    assert "-EncodedCommand" in mapping["argv"]
    for call in calls:
        assert_no_secret(password, " ".join(call["argv"]))
    for call in (query, add):
        assert password not in call["env"].values()
        assert "FARGATE_SMB_PASSWORD" not in {k.upper() for k in call["env"]}
    assert query["argv"][1:] == ["list", "vdir", "Default Web Site/content", "/text:physicalPath"]
    assert add["argv"][1:] == ["add", "vdir", "/app.name:Default Web Site/", "/path:/content", "/physicalPath:G:\\web"]

    logs = json_lines(out.stdout)
    messages = [entry["message"] for entry in logs]
    for expected in ("starting", "preflight passed", "share mapped", "virtual directory", "main process started",
                     "main process exited"):
        assert expected in messages, messages
    mapped = next(entry for entry in logs if entry["message"] == "share mapped")
    assert mapped["outcome"] == "Created" and mapped["drive"] == "G:"


def test_start_is_idempotent_when_the_mapping_and_vdir_exist(build, user):
    env = share_env(user, SMB_IIS_VDIRS="/content=G:\\web", FAKE_TOOL_MAP_OUTCOME="kept", FAKE_TOOL_VDIR_PATH="g:\\WEB\\")
    out = build.run(["--", *build.main_exit(0)], env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert [c["argv"][1] for c in build.tool_calls()] == ["-NoLogo", "list"]
    logs = json_lines(out.stdout)
    assert next(e for e in logs if e["message"] == "share mapped")["outcome"] == "Kept"
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
    assert logs[-1]["code"] == "mapping"
    assert "main process started" not in [e["message"] for e in logs]


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
    assert "New-SmbGlobalMapping -RemotePath $remote -LocalPath $local -Credential $credential -RequirePrivacy $true -Persistent $true" in first["script"]
    assert first["env"] == [["FARGATE_SMB_USERNAME", {"kind": "plain", "value": f"EXAMPLE\\{name}"}],
                            ["FARGATE_SMB_PASSWORD", {"kind": "password"}]]
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


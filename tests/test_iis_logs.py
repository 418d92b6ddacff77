"""IIS's W3C log files on the entrypoint's stdout (SMB_IIS_LOG_DIR), both builds: the Linux binary
and the Windows .exe under Wine.

The main process stands in for IIS: it appends W3C lines to log files in a folder laid out as
IIS's (`W3SVC<n>\\u_ex<date>.log`) while the entrypoint runs, and the entrypoint's stdout must
carry exactly those lines, in order, once each, as JSON log lines: those written while the main
process runs (seen before it is let go on), and those written just before it exits. What was in
the files before the start, and the `#` directives, must not appear.

The start itself is real (the share's preflight against Samba); PowerShell and appcmd are
`fake_tool`, as in test_entrypoint.py, whose helpers this reuses."""

import json
import queue
import time
from pathlib import Path

import pytest

from lambda_harness import domain_user
from test_entrypoint import Build, Entrypoint, json_lines, share_env, win_path

HEADER = ["#Software: Microsoft Internet Information Services 10.0", "#Version: 1.0",
          "#Date: 2025-01-02 03:04:05", "#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port c-ip sc-status"]


def w3c(n: int) -> str:
    return f"2025-01-02 03:04:{n:02d} 10.0.0.5 GET /content/picture-{n}.png - 80 10.0.1.9 200"


HISTORY = [w3c(0), w3c(1)]
WHILE_RUNNING = [w3c(10), w3c(11), w3c(12)]
BEFORE_EXIT_SITE1 = [w3c(20), w3c(21)]
BEFORE_EXIT_SITE2 = [w3c(30), w3c(31)]


@pytest.fixture(params=["linux", "windows"])
def build(request, tmp_path) -> Build:
    return Build(request.param, tmp_path)


@pytest.fixture(scope="module")
def user():
    return domain_user()


def native(build: Build, path: Path) -> str:
    return win_path(path) if build.kind == "windows" else str(path)


def main_process(build: Build, site1: Path, site2_dir: Path, go: Path) -> list[str]:
    """A stand-in for IIS: appends WHILE_RUNNING to site 1's file, waits for `go`, then appends
    BEFORE_EXIT_SITE1, creates site 2's folder and file (header and BEFORE_EXIT_SITE2), and exits
    at once. Lines end in CRLF, as HTTP.sys writes them."""
    site2 = site2_dir / site1.name
    if build.kind == "linux":
        def put(path, lines):
            return "".join(f"printf '%s\\r\\n' '{line}' >> '{path}'\n" for line in lines)
        script = build.tmp / "main.sh"
        script.write_text(put(site1, WHILE_RUNNING)
                          + f"while [ ! -e '{go}' ]; do sleep 0.05; done\n"
                          + put(site1, BEFORE_EXIT_SITE1)
                          + f"mkdir -p '{site2_dir}'\n"
                          + put(site2, HEADER + BEFORE_EXIT_SITE2)
                          + "exit 0\n")
        return ["sh", str(script)]

    def put(path, lines):
        # Redirection first: `echo text 2>>f` would redirect stderr and drop the digit.
        return "".join(f'>>"{native(build, path)}" echo {line}\r\n' for line in lines)
    script = build.tmp / "main.cmd"
    script.write_text("@echo off\r\n"
                      + put(site1, WHILE_RUNNING)
                      + ":wait\r\n"
                      + f'if exist "{native(build, go)}" goto go\r\n'
                      + "ping -n 2 127.0.0.1 >nul\r\n"
                      + "goto wait\r\n"
                      + ":go\r\n"
                      + put(site1, BEFORE_EXIT_SITE1)
                      + f'mkdir "{native(build, site2_dir)}"\r\n'
                      + put(site2, HEADER + BEFORE_EXIT_SITE2)
                      + "exit 0\r\n")
    return ["cmd", "/c", native(build, script)]


class Running(Entrypoint):
    """The entrypoint (test_entrypoint's harness), with its IIS lines."""

    def iis(self) -> list[dict]:
        return [e for e in json_lines("".join(self.seen)) if e.get("message") == "iis"]

    def wait_for_iis_lines(self, count: int, timeout: float = 90):
        deadline = time.monotonic() + timeout
        while len(self.iis()) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"fewer than {count} IIS lines within {timeout} s:\n{''.join(self.seen)}{self.stderr}"
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            assert line is not None, f"the entrypoint ended early:\n{''.join(self.seen)}{self.stderr}"
            self.seen.append(line)



def test_iis_lines_reach_stdout_once_each_in_order_until_the_main_process_exits(build, user):
    logs = build.tmp / "LogFiles"
    site1 = logs / "W3SVC1" / "u_ex250102.log"
    site1.parent.mkdir(parents=True)
    # What the image (or an earlier run) left: history, not to be shipped again.
    site1.write_bytes("".join(f"{line}\r\n" for line in HEADER + HISTORY).encode())
    go = build.tmp / "go"
    argv = main_process(build, site1, logs / "W3SVC2", go)
    entry = Running(build, ["--", *argv], share_env(user, SMB_IIS_LOG_DIR=native(build, logs)))
    try:
        # Read while the main process runs: it waits for `go` until the test has seen them.
        entry.wait_for_iis_lines(len(WHILE_RUNNING))
        assert entry.proc.poll() is None
        go.write_text("go")
        code, _ = entry.finish(timeout=90)
    finally:
        go.write_text("go")
        entry.close()
    out = "".join(entry.seen)
    assert code == 0, out + entry.stderr

    shipped = [(e["site"], e["line"]) for e in entry.iis()]
    expected = ([("W3SVC1", line) for line in WHILE_RUNNING + BEFORE_EXIT_SITE1]
                + [("W3SVC2", line) for line in BEFORE_EXIT_SITE2])
    assert shipped == expected, out + entry.stderr
    for e in entry.iis():
        assert e["level"] == "INFO" and "truncated" not in e and "partial" not in e, e

    # All of the container's output stays JSON, and the lines written just before the exit come
    # before the entrypoint's own last line.
    lines = [line for line in out.splitlines() if line.strip()]
    for line in lines:
        json.loads(line)
    messages = [json.loads(line)["message"] for line in lines]
    following = messages.index(next(m for m in messages if m.startswith("following IIS's log files")))
    assert following < messages.index("main process started")
    last_iis = len(messages) - 1 - messages[::-1].index("iis")
    assert last_iis < messages.index("main process exited"), messages
    assert not [e for e in json_lines(out) if e["level"] == "WARN"], out


def test_without_the_variable_nothing_is_followed(build, user):
    logs = build.tmp / "LogFiles"
    site1 = logs / "W3SVC1" / "u_ex250102.log"
    site1.parent.mkdir(parents=True)
    site1.write_text("")
    if build.kind == "linux":
        argv = ["sh", "-c", f"printf '%s\\r\\n' '{w3c(40)}' >> '{site1}'"]
    else:
        # A batch file: cmd does not take the quotes Windows' argument escaping gives a command line.
        script = build.tmp / "main.cmd"
        script.write_text(f'@echo off\r\n>>"{native(build, site1)}" echo {w3c(40)}\r\n')
        argv = ["cmd", "/c", native(build, script)]
    out = build.run(["--", *argv], share_env(user, SMB_IIS_LOG_DIR=""))
    assert out.returncode == 0, out.stdout + out.stderr
    assert w3c(40) in site1.read_text()
    messages = [e["message"] for e in json_lines(out.stdout)]
    assert "iis" not in messages and not any(m.startswith("following IIS") for m in messages), messages


def test_a_relative_log_folder_is_a_configuration_error(build, user):
    out = build.run(["--", *build.main_exit(0)], share_env(user, SMB_IIS_LOG_DIR="inetpub\\logs"))
    assert out.returncode == 2, out.stdout + out.stderr
    final = json_lines(out.stdout)[-1]
    assert final["code"] == "config" and final["error"].startswith("SMB_IIS_LOG_DIR: "), final

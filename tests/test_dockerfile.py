"""container/Dockerfile against what the task definition and the entrypoint assume of it.

No Windows host or Docker engine here, so the image is never built in CI: these tests read the
Dockerfile as Docker's parser would (the escape directive, line continuations, the JSON form of
ENTRYPOINT/CMD) and pin the facts the rest of the product depends on — IIS must not start before
the entrypoint has mapped the share, Windows must give IIS time to stop, and the image, the task
definition, the entrypoint's stop grace and the health probe must agree on each number and name.
"""
import json
import re
from pathlib import Path

import pytest

try:
    import cfnlint.decode
except ImportError:  # pragma: no cover - the venv has it
    pytest.fail("cfn-lint is not importable: run scripts/install", pytrace=False)

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "container" / "Dockerfile"
TEMPLATE = ROOT / "cloudformation" / "template.yaml"
SUPERVISE = ROOT / "container" / "src" / "supervise.rs"
MANIFEST = ROOT / "crates" / "content-copy" / "src" / "manifest.rs"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, as Docker reads them: parser directives first, then
    comments dropped and lines joined where they end with the escape character."""
    lines = text.splitlines()
    escape = "\\"
    for line in lines:
        m = re.fullmatch(r"#\s*escape\s*=\s*(\S)\s*", line)
        if m:
            escape = m.group(1)
            continue
        if not re.match(r"#\s*\w+\s*=", line):
            break
    out, pending = [], ""
    for line in lines:
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction is dropped
        if stripped.endswith(escape):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def container() -> dict:
    tpl, matches = cfnlint.decode.decode(str(TEMPLATE))
    assert not matches, matches
    (web,) = tpl["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    return web


def runs(dockerfile) -> list[str]:
    return [args for word, args in dockerfile if word == "RUN"]


def test_the_parser_reads_escape_and_continuations():
    text = "# escape=`\nFROM x\n# note\nRUN a && `\n    b\nRUN c\\d\n"
    assert instructions(text) == [("FROM", "x"), ("RUN", "a &&  b"), ("RUN", "c\\d")]
    # Without the directive, the backslash continues a line.
    assert instructions("FROM x\nRUN a \\\n b\n") == [("FROM", "x"), ("RUN", "a  b")]


def test_iis_waits_for_the_entrypoint(dockerfile):
    """W3SVC is Automatic in the IIS base image: it would serve the image's pages during the
    preflight. Manual start leaves starting it to ServiceMonitor (StartService works for a
    demand-start service), and the change must come after FROM and before ENTRYPOINT."""
    words = [w for w, _ in dockerfile]
    demand = [i for i, (w, a) in enumerate(dockerfile)
              if w == "RUN" and re.search(r"\bsc(\.exe)?\s+config\s+w3svc\s+start=\s+demand\b", a, re.I)]
    assert demand, "no `sc.exe config w3svc start= demand` in the Dockerfile"
    assert words.index("FROM") < demand[0] < words.index("ENTRYPOINT")
    # sc.exe's syntax: `start=` is one token followed by a space; `start=demand` is an error.
    assert not any(re.search(r"start=\S", a) for a in runs(dockerfile))


def registry_values(dockerfile) -> dict[tuple[str, str], tuple[str, str]]:
    values = {}
    for args in runs(dockerfile):
        for cmd in re.split(r"\s*&&\s*", args):
            m = re.fullmatch(r"reg add (\S+) /v (\S+) /t (REG_SZ|REG_DWORD) /d (\S+) /f", cmd.strip(), re.I)
            if m:
                values[(m.group(1).lower(), m.group(2))] = (m.group(3).upper(), m.group(4))
    return values


def test_windows_waits_long_enough_for_iis_to_stop(dockerfile, container):
    """Windows ends a container's processes WaitToKillServiceTimeout after CTRL_SHUTDOWN_EVENT
    (5 s in the base images). It must cover the entrypoint's own wait (it stops W3SVC, since
    ServiceMonitor exits at once) and stay under StopTimeout, after which ECS stops the task hard."""
    values = registry_values(dockerfile)
    kind, wait_ms = values[(r"hklm\system\currentcontrolset\control", "WaitToKillServiceTimeout")]
    assert kind == "REG_SZ"  # Windows reads this value as a string of milliseconds
    wait_ms = int(wait_ms)
    # Only documented values: CExecSvc's ProcessShutdownTimeoutSeconds has no documentation of
    # what it delays.
    assert set(values) == {(r"hklm\system\currentcontrolset\control", "WaitToKillServiceTimeout")}

    stop_timeout = container.get("StopTimeout")
    assert isinstance(stop_timeout, int), "the container has no StopTimeout (ECS's default is 30 s)"
    assert stop_timeout <= 120, "Fargate accepts at most 120 s"
    assert 30_000 <= wait_ms < stop_timeout * 1000


def test_the_entrypoint_gives_up_before_windows_does(dockerfile):
    """The entrypoint waits for the main process on close/shutdown; a wait longer than Windows'
    own is cut without the entrypoint's last log line."""
    m = re.search(r"const GRACE: Duration = Duration::from_secs\((\d+)\);", SUPERVISE.read_text())
    assert m, "supervise.rs has no GRACE constant"
    _, wait_ms = registry_values(dockerfile)[(r"hklm\system\currentcontrolset\control", "WaitToKillServiceTimeout")]
    # The IIS log follower flushes (5 s) and drains (10 s) after the main process exits.
    assert (int(m.group(1)) + 15) * 1000 < int(wait_ms)


def test_entrypoint_and_command_match_the_task_definition(dockerfile, container):
    """The task definition overrides both; a difference would mean the image alone behaves
    otherwise than the deployed task."""
    form = dict((w, a) for w, a in dockerfile if w in ("ENTRYPOINT", "CMD"))
    assert json.loads(form["ENTRYPOINT"]) == container["EntryPoint"]
    assert json.loads(form["CMD"]) == container["Command"]


def test_the_health_probe_names_the_file_webcontent_writes(container):
    """The target group and the container health check ask for the file Custom::WebContent
    writes at the top of the content folder: the names must agree with the copy engine's."""
    m = re.search(r'pub const HEALTH_PROBE_NAME: &str = "([^"]+)";', MANIFEST.read_text())
    assert m, "content-copy has no HEALTH_PROBE_NAME"
    name = m.group(1)
    tpl, _ = cfnlint.decode.decode(str(TEMPLATE))
    tg = tpl["Resources"]["TargetGroup"]["Properties"]
    assert tg["HealthCheckPath"] == f"/content/{name}"
    command = container["HealthCheck"]["Command"]
    assert f"/content/{name}" in json.dumps(command)

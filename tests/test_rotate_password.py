"""The rotation function end to end: the real bootstrap against the Samba DC (LDAPS resets, SMB
proof) and moto (SSM, ECS). Witnesses: smbclient logons with what SSM holds (boto3 reads it),
SSM's parameter history, moto's ECS deployments. Faults are injected from outside: a closed
port for the DC or the file server, and a small proxy in front of moto that refuses chosen
calls (or reports a deployment as still rolling out)."""

import json
import os
import queue
import subprocess
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import samba_env
from lambda_harness import ROOT, domain_user

SHARE = "\\\\127.0.0.1\\share"


class FaultProxy:
    """Forwards every request to moto, except those a rule refuses or rewrites. A rule is
    (X-Amz-Target suffix, substring of the body, action) with action
    - "fail": answer 400 AccessDeniedException, nothing applied ("fail-after-first": the first
      matching call goes through);
    - "apply-then-fail": forward it (moto applies it), then answer 500 InternalServerError, as a
      timeout or a 5xx after the write looks to the caller;
    - "crash" / "crash-after": kill the function (``on_crash``) before forwarding the call, or
      after moto applied it; the call is never answered — a Lambda that died at that step;
    - a function rewriting moto's JSON answer."""

    def __init__(self, moto_url: str):
        self.moto = moto_url
        self.rules: list[tuple[str, str, object]] = []
        self.seen: list[str] = []
        self.passed: dict[int, int] = {}
        self.on_crash = lambda: None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = self.headers.get("X-Amz-Target", "")
                proxy.seen.append(target)
                rule = next((r for r in proxy.rules if target.endswith(r[0]) and r[1] in body.decode(errors="replace")), None)
                if rule and rule[2] == "fail-after-first":
                    proxy.passed[id(rule)] = proxy.passed.get(id(rule), 0) + 1
                    if proxy.passed[id(rule)] == 1:
                        rule = None  # the first such call goes through
                if rule and rule[2] == "crash":
                    proxy.on_crash()
                    return
                if rule and rule[2] in ("fail", "fail-after-first"):
                    payload = json.dumps({"__type": "AccessDeniedException", "message": "injected by the test proxy"}).encode()
                    self.send_response(400)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "accept-encoding")}
                request = urllib.request.Request(proxy.moto + self.path, data=body if body else None, headers=headers, method=self.command)
                try:
                    with urllib.request.urlopen(request, timeout=60) as r:
                        status, answer, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
                except urllib.error.HTTPError as e:
                    status, answer, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
                if rule and rule[2] == "crash-after":
                    proxy.on_crash()
                    return
                if rule and rule[2] == "apply-then-fail":
                    status, ctype = 500, "application/x-amz-json-1.1"
                    answer = json.dumps({"__type": "InternalServerError", "message": "injected by the test proxy after the write"}).encode()
                if rule and callable(rule[2]) and status == 200:
                    answer = json.dumps(rule[2](json.loads(answer))).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_POST = _forward
            do_GET = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class World:
    """An alternating pair in AD, the SSM parameters Custom::SsmParameters would have made, an ECS
    service in moto, and the function's environment."""

    def __init__(self, aws, ecs, tmp_path):
        env = samba_env()
        self.aws, self.ecs, self.tmp = aws, ecs, tmp_path
        self.ca = open(env["FARGATE_SMB_CA"]).read()
        admin_password = open(env["FARGATE_SMB_ADMIN_PASSWORD_FILE"]).read()
        self.prefix = f"/fargate-smb-test/rot-{uuid.uuid4().hex[:8]}"
        self.a, password_a = domain_user()
        self.b, _ = domain_user()
        self.admin_parameter = f"{self.prefix}-admin"
        aws.ssm.put_parameter(Name=self.admin_parameter, Value=admin_password, Type="SecureString")
        self.key = aws.kms.create_key()["KeyMetadata"]["KeyId"]
        # As Custom::SsmParameters leaves it, with its ownership tag.
        self.owner = f"arn:aws:cloudformation:us-east-1:123456789012:stack/t/{uuid.uuid4()}/Parameters"
        aws.ssm.put_parameter(Name=f"{self.prefix}/username", Value=f"EXAMPLE\\{self.a}", Type="String",
                              Tags=[{"Key": "fargate-smb:owner", "Value": self.owner}])
        aws.ssm.put_parameter(Name=f"{self.prefix}/password", Value=password_a, Type="SecureString", KeyId=self.key)
        aws.ssm.put_parameter(Name=f"{self.prefix}/share", Value=SHARE, Type="String")
        self.cluster = f"c-{uuid.uuid4().hex[:6]}"
        ecs.create_cluster(clusterName=self.cluster)
        ecs.register_task_definition(family="web", containerDefinitions=[{"name": "web", "image": "iis", "memory": 512}])
        ecs.create_service(cluster=self.cluster, serviceName="site", taskDefinition="web", desiredCount=0)  # moto: 0 tasks = rollout COMPLETED

    def env(self, **extra) -> dict:
        base = {
            "PARAMETER_PREFIX": self.prefix,
            "ACCOUNTS": f"{self.a},{self.b}",
            "LDAPS_URL": "ldaps://127.0.0.1",
            "LDAPS_CA_BUNDLE": self.ca,
            "AD_DOMAIN": "example.test",
            "ADMIN_USERNAME": "Administrator@example.test",
            "ADMIN_PASSWORD_PARAMETER": self.admin_parameter,
            "ECS_CLUSTER": self.cluster,
            "ECS_SERVICES": "site",
            "PROOF_ATTEMPTS": "2",
            "PROOF_DELAY_MS": "200",
            "TIMEOUT_SECONDS": "5",
        }
        base.update({k: v for k, v in extra.items()})
        return base

    def ssm(self) -> tuple[str, str]:
        user = self.aws.ssm.get_parameter(Name=f"{self.prefix}/username")["Parameter"]["Value"]
        password = self.aws.ssm.get_parameter(Name=f"{self.prefix}/password", WithDecryption=True)["Parameter"]["Value"]
        return user, password

    def versions(self) -> tuple[int, int]:
        return tuple(self.aws.ssm.get_parameter(Name=f"{self.prefix}/{n}")["Parameter"]["Version"] for n in ("username", "password"))

    def record(self) -> dict | None:
        try:
            return json.loads(self.aws.ssm.get_parameter(Name=f"{self.prefix}/rotation")["Parameter"]["Value"])
        except self.aws.ssm.exceptions.ParameterNotFound:
            return None

    def logs_on(self, user: str, password: str) -> bool:
        auth = self.tmp / f"auth-{uuid.uuid4().hex[:6]}"
        domain, name = user.split("\\")
        auth.write_text(f"username = {name}\npassword = {password}\ndomain = {domain}\n")
        auth.chmod(0o600)
        out = subprocess.run(["smbclient", "//127.0.0.1/share", "-A", str(auth), "-m", "SMB3", "--client-protection=encrypt", "-c", "ls"],
                             capture_output=True, text=True, timeout=60)
        auth.unlink()
        if out.returncode == 0:
            return True
        assert "NT_STATUS_LOGON_FAILURE" in out.stdout + out.stderr, out.stdout + out.stderr
        return False

    def pending(self) -> str | None:
        try:
            return self.aws.ssm.get_parameter(Name=f"{self.prefix}/rotation-pending", WithDecryption=True)["Parameter"]["Value"]
        except self.aws.ssm.exceptions.ParameterNotFound:
            return None

    def attributes(self, name: str, *attrs: str) -> dict[str, str]:
        """What the DC says about an account (ldapsearch, the independent witness)."""
        env = samba_env()
        out = subprocess.run(["ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-H", "ldaps://127.0.0.1", "-D", "Administrator@example.test",
                              "-y", env["FARGATE_SMB_ADMIN_PASSWORD_FILE"], "-b", env["FARGATE_SMB_OU"], f"(sAMAccountName={name})", *attrs],
                             capture_output=True, text=True, timeout=60, env={**os.environ, "LDAPTLS_CACERT": env["FARGATE_SMB_CA"]})
        assert out.returncode == 0, out.stderr
        pairs = (line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
        return {k: v for k, v in pairs}

    def lock(self) -> str | None:
        try:
            return self.aws.ssm.get_parameter(Name=f"{self.prefix}/rotation-lock")["Parameter"]["Value"]
        except self.aws.ssm.exceptions.ParameterNotFound:
            return None

    def lock_free(self) -> bool:
        """The lock is never deleted (its version numbers are the compare-and-set): a run gives
        it back by writing `free`."""
        held = self.lock()
        return held is None or held.startswith("free ")

    def expire_lock(self) -> None:
        """What time does for a run Lambda killed: its lock's lease (the invocation's deadline)
        ends. The token is kept; only the lease moves into the past."""
        held = self.lock()
        if held:
            token = held.split(" ")[0]
            self.aws.ssm.put_parameter(Name=f"{self.prefix}/rotation-lock", Value=f"{token} {int(time.time() * 1000) - 1}",
                                       Type="String", Overwrite=True)

    def deployment_id(self) -> str:
        service = self.ecs.describe_services(cluster=self.cluster, services=["site"])["services"][0]
        return service["deployments"][0]["id"]


@pytest.fixture
def ecs(moto_url):
    import boto3
    return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1").client("ecs", endpoint_url=moto_url)


@pytest.fixture
def world(aws, ecs, tmp_path):
    return World(aws, ecs, tmp_path)


@pytest.fixture
def lockout():
    """A fine-grained password policy locking an account after two bad passwords, applied to
    the accounts the test names; removed afterwards."""
    conf = samba_env()["FARGATE_SMB_SMB_CONF"]
    name = f"lockout-{uuid.uuid4().hex[:6]}"
    out = subprocess.run(["samba-tool", "domain", "passwordsettings", "pso", "create", name, "10", "--account-lockout-threshold=2",
                          "--account-lockout-duration=30", "--reset-account-lockout-after=30", "-s", conf], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr

    def apply(*accounts: str) -> None:
        for account in accounts:
            out = subprocess.run(["samba-tool", "domain", "passwordsettings", "pso", "apply", name, account, "-s", conf],
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr

    yield apply
    subprocess.run(["samba-tool", "domain", "passwordsettings", "pso", "delete", name, "-s", conf], capture_output=True, timeout=60)


@pytest.fixture
def proxy(moto_url):
    p = FaultProxy(moto_url)
    yield p
    p.close()


class Fn:
    """The bootstrap, relaunched whenever its environment changes."""

    def __init__(self, launch, runtime):
        self.launch, self.runtime, self.current, self.outputs = launch, runtime, None, []

    def run(self, env: dict, event: dict | None = None, deadline_s: float = 300.0) -> tuple[str, object]:
        if self.current is not None:
            self.outputs.append(self.current.output())
            self.current.stop()
        self.current = self.launch("rotate-password", env)
        return self.runtime.invoke(event or {}, timeout=120, deadline_s=deadline_s)

    def output(self) -> str:
        return "".join(self.outputs) + (self.current.output() if self.current else "")

    def crash(self) -> None:
        """SIGKILL the running bootstrap, as Lambda ends an invocation that ran out of time."""
        self.current.process.kill()

    def run_until_crash(self, env: dict, timeout: float = 120.0, deadline_s: float = 300.0) -> int:
        """Invoke, expecting the proxy to kill the function mid-way; returns once it is dead,
        with the invocation's deadline (ms since the epoch)."""
        if self.current is not None:
            self.outputs.append(self.current.output())
            self.current.stop()
        self.current = self.launch("rotate-password", env)
        request_id = str(uuid.uuid4())
        deadline_ms = int((time.time() + deadline_s) * 1000)
        self.runtime.events.put((request_id, {}, deadline_ms))
        end = time.monotonic() + timeout
        while self.current.alive():
            assert time.monotonic() < end, "the function was not killed: the crash point was never reached"
            try:
                kind, body = self.runtime._result(request_id).get(timeout=0.1)
            except queue.Empty:
                continue
            raise AssertionError(f"the run finished ({kind}: {body}) instead of reaching the crash point")
        return deadline_ms


@pytest.fixture
def fn(launch, runtime):
    return Fn(launch, runtime)


def test_two_rotations_alternate_and_the_previous_account_keeps_working(fn, world):
    user0, pw0 = world.ssm()
    deployment0 = world.deployment_id()
    kind, report = fn.run(world.env(), json.loads((ROOT / "events" / "rotate-password" / "scheduled.json").read_text()))
    assert kind == "response", report
    assert report["outcome"] == "rotated" and report["active"] == f"EXAMPLE\\{world.b}", report
    user1, pw1 = world.ssm()
    assert user1 == f"EXAMPLE\\{world.b}" and pw1 != pw0 and len(pw1) == 32
    assert world.logs_on(user1, pw1), "the credential in SSM logs on"
    assert world.logs_on(user0, pw0), "the previously active account still works"
    assert world.deployment_id() != deployment0, "a new deployment was forced"
    # The KMS key of the SecureString is kept across the overwrite.
    described = world.aws.ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [f"{world.prefix}/password"]}])
    assert described["Parameters"][0]["KeyId"].endswith(world.key)
    record = world.record()
    assert record["state"] == "idle" and record["active"] == user1 and record["previous"] == user0 and record["outcome"] == "rotated"
    tags = world.aws.ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=f"{world.prefix}/rotation")["TagList"]
    assert {"Key": "fargate-smb:owner", "Value": world.owner} in tags, "the record is owned like the parameters"
    assert world.lock_free() and world.pending() is None, "the run's lock is given back and the pending copy is gone"

    kind, report = fn.run(world.env())
    assert kind == "response" and report["outcome"] == "rotated", report
    user2, pw2 = world.ssm()
    assert user2 == user0 and pw2 not in (pw0, pw1)
    assert world.logs_on(user2, pw2)
    assert world.logs_on(user1, pw1), "the account of the first rotation works until the next one"
    assert not world.logs_on(user0, pw0), "the first password of the first account is gone"
    output = fn.output()
    for secret in (pw0, pw1, pw2):
        assert secret not in output


def test_the_switch_writes_the_password_first_and_the_window_is_one_retry(fn, world, aws):
    """The order, from SSM's own history: password version n+1 before username version n+1. A task
    reading in between gets the old username with the new password: that pair is refused (the
    entrypoint exits, ECS starts another task), and the pair read after it logs on."""
    old_user, old_pw = world.ssm()
    kind, report = fn.run(world.env())
    assert kind == "response", report
    history = {n: aws.ssm.get_parameter_history(Name=f"{world.prefix}/{n}", WithDecryption=True)["Parameters"] for n in ("username", "password")}
    new_pw, new_user = history["password"][-1], history["username"][-1]
    assert new_pw["LastModifiedDate"] <= new_user["LastModifiedDate"], "password written before username"
    window_pair = (history["username"][-2]["Value"], new_pw["Value"])
    assert window_pair == (old_user, new_pw["Value"])
    assert not world.logs_on(*window_pair), "a task starting inside the window is refused…"
    assert world.logs_on(new_user["Value"], new_pw["Value"]), "…and its replacement reads a pair that logs on"


def test_dry_run_changes_nothing(fn, world):
    before_versions, before = world.versions(), world.ssm()
    deployment = world.deployment_id()
    kind, report = fn.run(world.env(), json.loads((ROOT / "events" / "rotate-password" / "dry-run.json").read_text()))
    assert kind == "response" and report["outcome"] == "dry-run", report
    plan = "\n".join(report["plan"])
    assert f"reset the password of EXAMPLE\\{world.b}" in plan and "force a new deployment of site" in plan, plan
    assert world.versions() == before_versions and world.ssm() == before and world.record() is None
    assert world.deployment_id() == deployment


@pytest.mark.parametrize("fault", ["ad-unreachable", "smb-logon-fails"])
def test_a_failure_before_ssm_changes_leaves_the_credential_and_the_next_run_rotates(fn, world, fault):
    before_versions, (user, pw) = world.versions(), world.ssm()
    env = world.env(LDAPS_URL="ldaps://127.0.0.1:1") if fault == "ad-unreachable" else world.env(SMB_PORT="1")
    kind, error = fn.run(env)
    assert kind == "error", error
    message = json.dumps(error)
    assert ("127.0.0.1:1" in message) if fault == "ad-unreachable" else ("did not log on" in message and "SSM still holds" in message), message
    assert world.versions() == before_versions and world.logs_on(user, pw)
    record, pending = world.record(), world.pending()
    if fault == "ad-unreachable":
        assert record is None and pending is None, "nothing is started before the directory answers"
    else:
        assert record["state"] == "pending" and record["fingerprint"].startswith("sha256:"), record
        assert pending and pending != pw and pending not in json.dumps(record), "the new password is kept, apart from the record"
        described = world.aws.ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [f"{world.prefix}/rotation-pending"]}])
        assert described["Parameters"][0]["Type"] == "SecureString" and described["Parameters"][0]["KeyId"].endswith(world.key)
    kind, report = fn.run(world.env())
    assert kind == "response" and report["outcome"].startswith("rotated"), report
    if pending:
        assert world.ssm() == (f"EXAMPLE\\{world.b}", pending), "the next run finishes with the kept password"
    assert world.logs_on(*world.ssm())
    assert world.pending() is None and world.record()["state"] == "idle"


@pytest.mark.parametrize("which", ["password", "username"])
def test_an_ssm_write_failure_leaves_a_working_pair_and_the_next_run_rotates(fn, world, proxy, which):
    """A write refused every time: the switch cannot finish, so the previous pair is put back,
    and that is believed only from a read-back."""
    user, pw = world.ssm()
    proxy.rules.append(("PutParameter", f"{world.prefix}/{which}\"", "fail"))
    kind, error = fn.run(world.env(AWS_ENDPOINT_URL=proxy.url))
    assert kind == "error", error
    message = json.dumps(error)
    assert "injected by the test proxy" in message, message
    assert "SSM holds the previous, working credential (read back and verified)" in message, message
    assert world.ssm() == (user, pw), "SSM holds the previous pair, by value"
    assert world.logs_on(user, pw)
    assert world.record()["state"] == "idle"
    kind, report = fn.run(world.env())
    assert kind == "response" and report["outcome"] == "rotated", report
    assert world.logs_on(*world.ssm())


@pytest.mark.parametrize("which", ["password", "username"])
def test_a_write_applied_but_answered_with_an_error_is_read_back(fn, world, proxy, which):
    """SSM applies the write and the caller still sees an error (a timeout, a 5xx after the
    write). The switch reads both parameters back and goes on from what SSM holds, instead of
    taking the error for "nothing changed" (which left the new password under the old username)
    or writing the old password back beside the new username."""
    user, pw = world.ssm()
    proxy.rules.append(("PutParameter", f"{world.prefix}/{which}\"", "apply-then-fail"))
    kind, report = fn.run(world.env(AWS_ENDPOINT_URL=proxy.url))
    assert kind == "response" and report["outcome"] == "rotated", report
    new_user, new_pw = world.ssm()
    assert new_user == f"EXAMPLE\\{world.b}" and new_pw != pw
    assert world.logs_on(new_user, new_pw), "SSM holds a pair that logs on"
    assert world.logs_on(user, pw), "the previous account is untouched"
    assert world.record()["state"] == "idle" and world.pending() is None
    assert "injected by the test proxy after the write" in fn.output(), "the write really failed"


# Where a run can die, as the SSM call it was making (X-Amz-Target, body substring) and whether
# SSM had applied it. The AD reset and the SMB proof sit between the Pending and the Switching
# records.
CRASH_POINTS = {
    "before-keeping-the-password": ("PutParameter", "/rotation-pending\"", "crash"),
    "after-keeping-the-password": ("PutParameter", "/rotation-pending\"", "crash-after"),
    "before-the-ad-reset": ("PutParameter", r'\"state\":\"pending\"', "crash-after"),
    "after-the-ad-reset-and-proof": ("PutParameter", r'\"state\":\"switching\"', "crash"),
    "after-recording-the-switch": ("PutParameter", r'\"state\":\"switching\"', "crash-after"),
    "before-the-password-write": ("PutParameter", "/password\"", "crash"),
    "after-the-password-write": ("PutParameter", "/password\"", "crash-after"),
    "after-the-username-write": ("PutParameter", "/username\"", "crash-after"),
    "after-recording-the-deployment": ("PutParameter", r'\"state\":\"deploying\"', "crash-after"),
    "before-the-deployment": ("UpdateService", "", "crash"),
    "after-recording-idle": ("PutParameter", r'\"state\":\"idle\"', "crash-after"),
}


# In single-account mode the username never changes, so there is no username write to die at.
CRASH_CASES = [(mode, point) for mode in ("alternating", "single") for point in CRASH_POINTS
               if not (mode == "single" and point == "after-the-username-write")]


@pytest.mark.parametrize(("mode", "point"), CRASH_CASES)
def test_a_run_killed_at_any_step_never_strands_a_dead_password(fn, world, proxy, mode, point):
    """The fault matrix: the function is SIGKILLed at each step in turn. Right after the crash,
    in alternating mode SSM's pair logs on (except between the two writes, the window a
    starting task survives by being replaced); in single-account mode once AD is reset only
    the next run can repair SSM, and it does: the next run always ends with a pair that logs
    on, the record idle, and the pending copy gone."""
    user, pw = world.ssm()
    env = world.env(AWS_ENDPOINT_URL=proxy.url, **({"ACCOUNTS": world.a} if mode == "single" else {}))
    proxy.on_crash = fn.crash
    proxy.rules.append(CRASH_POINTS[point])
    fn.run_until_crash(env)
    after_user, after_pw = world.ssm()
    ad_reset = point not in ("before-keeping-the-password", "after-keeping-the-password", "before-the-ad-reset")
    if mode == "alternating" and point != "after-the-password-write":
        assert world.logs_on(after_user, after_pw), f"SSM's pair logs on right after a crash {point}"
    if mode == "single" and not ad_reset:
        assert (after_user, after_pw) == (user, pw) and world.logs_on(user, pw), "AD not touched yet: nothing changed"
    if point == "after-recording-idle":
        # The rotation was complete: the next run is a rotation of its own.
        assert after_pw != pw and world.logs_on(after_user, after_pw) and world.record()["state"] == "idle"
        user, pw = after_user, after_pw
    proxy.rules.clear()
    assert world.lock(), "the killed run still holds its lock"
    world.expire_lock()
    kind, report = fn.run(world.env(**({"ACCOUNTS": world.a} if mode == "single" else {})))
    assert kind == "response" and report["outcome"].startswith("rotated"), report
    final_user, final_pw = world.ssm()
    assert world.logs_on(final_user, final_pw), "the next run leaves a pair that logs on"
    assert final_pw != pw
    assert final_user == (user if mode == "single" else {f"EXAMPLE\\{world.a}": f"EXAMPLE\\{world.b}", f"EXAMPLE\\{world.b}": f"EXAMPLE\\{world.a}"}[user])
    record = world.record()
    assert record["state"] == "idle" and "fingerprint" not in record, record
    assert world.pending() is None and world.lock_free()
    if mode == "alternating":
        assert world.logs_on(user, pw), "the account running tasks use was never reset"
    output = fn.output()
    for secret in (pw, final_pw):
        assert secret not in output


def test_resuming_never_logs_on_with_a_guess(fn, world, proxy, lockout):
    """A run dies after recording the switch and before writing the password: SSM still holds
    the active account's password. The next run must not try that password on the target to
    find out what SSM holds (each try counts towards the target's lockout); it compares the
    record's fingerprint instead. Witness: the target's badPwdCount on the DC stays 0."""
    lockout(world.b)
    proxy.on_crash = fn.crash
    proxy.rules.append(CRASH_POINTS["before-the-password-write"])
    fn.run_until_crash(world.env(AWS_ENDPOINT_URL=proxy.url))
    assert world.record()["state"] == "switching"
    proxy.rules.clear()
    world.expire_lock()
    kind, report = fn.run(world.env(PROOF_ATTEMPTS="3"))
    assert kind == "response" and report["outcome"].startswith("rotated"), report
    assert world.attributes(world.b, "badPwdCount").get("badPwdCount", "0") == "0", "no logon with a wrong password"
    assert world.logs_on(*world.ssm())


def test_a_locked_out_target_is_unlocked_by_its_reset(fn, world, lockout):
    """Logons with the target's old password (a stale task, a person) locked it. Resetting the
    password does not clear a lockout in AD; the rotation clears lockoutTime with the reset, so
    the proof with the new password succeeds."""
    lockout(world.b)
    for _ in range(3):
        auth = world.tmp / "bad"
        auth.write_text(f"username = {world.b}\npassword = wrong-{uuid.uuid4().hex}\ndomain = EXAMPLE\n")
        subprocess.run(["smbclient", "//127.0.0.1/share", "-A", str(auth), "-m", "SMB3", "-c", "ls"], capture_output=True, timeout=60)
    assert world.attributes(world.b, "lockoutTime").get("lockoutTime", "0") != "0", "the target is locked out"
    kind, report = fn.run(world.env())
    assert kind == "response" and report["outcome"] == "rotated", report
    assert world.attributes(world.b, "lockoutTime").get("lockoutTime") == "0"
    assert world.logs_on(*world.ssm())


def test_a_disabled_target_is_not_enabled_by_a_rotation(fn, world):
    """A password reset enables the account (ds:ResetUserPassword documents it; the LDAPS backend
    does the same). A disabled inactive account was disabled by someone (OnDelete: disable, an
    administrator): the rotation refuses, changes nothing and says how to go on."""
    disabled, _ = domain_user(enabled=False)
    before_versions, (user, pw) = world.versions(), world.ssm()
    kind, error = fn.run(world.env(ACCOUNTS=f"{world.a},{disabled}"))
    assert kind == "error", error
    message = json.dumps(error)
    assert f"the account {disabled} is disabled" in message and "Enable it deliberately" in message, message
    assert int(world.attributes(disabled, "userAccountControl")["userAccountControl"]) & 2, "still disabled"
    assert world.versions() == before_versions and world.logs_on(user, pw)
    assert world.record() is None and world.pending() is None


def test_an_interrupted_switch_is_completed_by_the_next_run(fn, world, proxy):
    """The username write and the rollback of the password both fail (SSM went away mid-switch):
    SSM is left with the new password under the old username, and the record says Switching. The
    next run finishes the switch from the kept password (no logon to find out what SSM holds)."""
    user, pw = world.ssm()
    proxy.rules.append(("PutParameter", f"{world.prefix}/username\"", "fail"))
    proxy.rules.append(("PutParameter", f"{world.prefix}/password\"", "fail-after-first"))
    kind, error = fn.run(world.env(AWS_ENDPOINT_URL=proxy.url))
    assert kind == "error", error
    assert "the next run" in json.dumps(error), error
    record = world.record()
    assert record["state"] == "switching" and record["target"] == f"EXAMPLE\\{world.b}", record
    stuck_user, stuck_pw = world.ssm()
    assert stuck_user == user and stuck_pw != pw, "the half-done switch"
    kind, report = fn.run(world.env())
    assert kind == "response", report
    assert report["outcome"] == "rotated (switch completed by a later run)", report
    done_user, done_pw = world.ssm()
    assert done_user == f"EXAMPLE\\{world.b}" and done_pw == stuck_pw
    assert world.logs_on(done_user, done_pw) and world.logs_on(user, pw)
    assert world.record()["state"] == "idle"


def test_a_deployment_failure_keeps_the_new_credential_and_the_next_run_only_deploys(fn, world):
    kind, error = fn.run(world.env(ECS_SERVICES="no-such-service"))
    assert kind == "error", error
    assert "forcing a new deployment failed" in json.dumps(error)
    user, pw = world.ssm()
    assert user == f"EXAMPLE\\{world.b}" and world.logs_on(user, pw), "SSM switched to a working credential"
    assert world.record()["state"] == "deploying"
    deployment = world.deployment_id()
    kind, report = fn.run(world.env())
    assert kind == "response", report
    assert report["outcome"].startswith("rotated (deployment completed"), report
    assert world.ssm() == (user, pw), "no second rotation"
    assert world.deployment_id() != deployment
    assert world.record()["state"] == "idle"


def test_a_rollout_in_progress_skips_the_rotation(fn, world, proxy):
    def rolling(answer):
        for s in answer.get("services", []):
            for d in s.get("deployments", []):
                d["rolloutState"] = "IN_PROGRESS"
        return answer

    proxy.rules.append(("DescribeServices", "", rolling))
    before = world.versions()
    kind, report = fn.run(world.env(AWS_ENDPOINT_URL=proxy.url))
    assert kind == "response" and report["outcome"] == "skipped", report
    assert "rolling out" in report["reason"]
    assert world.versions() == before and world.record() is None


def test_a_run_while_another_holds_the_lock_changes_nothing(fn, world, aws):
    """A duplicate delivery of the schedule, or a run by hand, while a run is in progress: two
    runs would each keep a password and reset the same account. The second finds the lock (a
    parameter created with Overwrite false, holding a lease) and stops. A lock whose lease has
    ended (a run Lambda killed) is taken over."""
    lease = int((time.time() + 600) * 1000)
    aws.ssm.put_parameter(Name=f"{world.prefix}/rotation-lock", Value=f"0123456789abcdef {lease}", Type="String")
    before = world.versions(), world.ssm()
    kind, report = fn.run(world.env())
    assert kind == "response" and report["outcome"] == "skipped" and "rotation-lock" in report["reason"], report
    assert (world.versions(), world.ssm()) == before and world.record() is None and world.pending() is None
    assert world.lock() == f"0123456789abcdef {lease}", "another run's lock is not touched"
    world.expire_lock()
    kind, report = fn.run(world.env())
    assert kind == "response" and report["outcome"] == "rotated", report
    assert world.lock_free()
    assert "taking it over" in fn.output()


def test_two_runs_taking_over_an_expired_lock_at_once_rotate_once(fn, world, aws, moto_url):
    """A killed run left an expired lock, and two deliveries arrive together. Both read the lock
    at version n; B writes only after A has written. SSM gives A's write n + 1 and B's n + 2, so
    A holds the lock and B, seeing its write was not the next version, stops. Deleting and
    re-creating the lock (the first design) let both take it: AD ended with one run's password
    and SSM with the other's."""
    aws.ssm.put_parameter(Name=f"{world.prefix}/rotation-lock", Value=f"deadbeefdeadbeef {int(time.time() * 1000) - 1}", Type="String")
    a_wrote = threading.Event()
    pa, pb = FaultProxy(moto_url), FaultProxy(moto_url)

    def a_took(answer):
        a_wrote.set()
        return answer

    def b_read(answer):  # B has read the expired lock; it acts only after A has written its own
        assert a_wrote.wait(60)
        return answer

    pa.rules.append(("PutParameter", "/rotation-lock\"", a_took))
    pb.rules.append(("GetParameter", "/rotation-lock\"", b_read))
    from lambda_harness import Bootstrap, RuntimeApi, binary
    ra, rb = RuntimeApi(), RuntimeApi()
    ba = Bootstrap(binary("rotate-password"), ra, {"AWS_ENDPOINT_URL": pa.url, **world.env(AWS_ENDPOINT_URL=pa.url)})
    bb = Bootstrap(binary("rotate-password"), rb, {"AWS_ENDPOINT_URL": pb.url, **world.env(AWS_ENDPOINT_URL=pb.url)})
    results = {}
    threads = [threading.Thread(target=lambda k=k, r=r: results.__setitem__(k, r.invoke({}, timeout=120))) for k, r in (("A", ra), ("B", rb))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for b in (ba, bb):
            b.stop()
        for r in (ra, rb):
            r.close()
        pa.close()
        pb.close()
    assert results["A"][0] == "response" and results["A"][1]["outcome"] == "rotated", results
    assert results["B"][0] == "response" and results["B"][1]["outcome"] == "skipped", results
    assert world.logs_on(*world.ssm()) and world.record()["state"] == "idle" and world.lock_free()


@pytest.mark.parametrize("lock", ["absent", "free"])
def test_a_lock_that_cannot_be_taken_fails_the_run(fn, world, proxy, aws, lock):
    """SSM refuses the lock's creation, or the overwrite of a free lock (a missing permission,
    throttling): that is an error Lambda retries, not a "skipped" success that hides it."""
    if lock == "free":
        aws.ssm.put_parameter(Name=f"{world.prefix}/rotation-lock", Value="free 0", Type="String")
    before = world.versions(), world.ssm()
    proxy.rules.append(("PutParameter", "/rotation-lock\"", "fail"))
    kind, error = fn.run(world.env(AWS_ENDPOINT_URL=proxy.url))
    assert kind == "error" and "rotation-lock" in json.dumps(error), error
    assert (world.versions(), world.ssm()) == before and world.record() is None


def test_a_killed_run_s_lock_makes_its_retry_fail_not_skip(fn, world, proxy):
    """A run dies mid-rotation holding the lock. Lambda's retry comes before the lease ends: it
    must fail (so Lambda retries again), not answer "skipped", which would end the retries with
    SSM possibly on a dead password until the next schedule. The winner's lease is its own
    deadline (plus 5 s), not the long lease a value is first written with."""
    fast = {"ACCOUNTS": world.a, "AWS_OPERATION_TIMEOUT_SECONDS": "2", "AWS_ATTEMPT_TIMEOUT_SECONDS": "1"}
    proxy.on_crash = fn.crash
    proxy.rules.append(CRASH_POINTS["after-recording-the-switch"])
    deadline_ms = fn.run_until_crash(world.env(AWS_ENDPOINT_URL=proxy.url, **fast), deadline_s=40)
    proxy.rules.clear()
    token, lease = world.lock().split(" ")
    assert int(lease) <= deadline_ms + 5_000, "the winner shortened its lease to its deadline"
    kind, error = fn.run(world.env(**fast))
    assert kind == "error" and "another run holds" in json.dumps(error), error
    world.expire_lock()  # the lease ends
    kind, report = fn.run(world.env(**fast))
    assert kind == "response" and report["outcome"].startswith("rotated"), report
    assert world.logs_on(*world.ssm())


def test_a_half_switched_pair_is_finished_before_any_proof(fn, world, proxy):
    """Killed between the two writes: SSM holds the new password under the old username, which
    does not log on. The next run cannot reach the file server (its proof would fail), yet it
    finishes the switch first, since the pair in SSM is already broken."""
    proxy.on_crash = fn.crash
    proxy.rules.append(CRASH_POINTS["after-the-password-write"])
    fn.run_until_crash(world.env(AWS_ENDPOINT_URL=proxy.url))
    proxy.rules.clear()
    world.expire_lock()
    assert not world.logs_on(*world.ssm()), "the half-switched pair"
    kind, report = fn.run(world.env(SMB_PORT="1"))
    assert kind == "response" and report["outcome"] == "rotated (switch completed by a later run)", report
    assert world.logs_on(*world.ssm())


def test_a_duplicate_delivery_of_a_scheduled_invocation_rotates_once(fn, world):
    """EventBridge Scheduler delivers at least once: a second delivery with the same scheduled
    time, after the first completed, is skipped (in single-account mode it would cost a second
    outage); a later scheduled time rotates."""
    event = {**json.loads((ROOT / "events" / "rotate-password" / "scheduled.json").read_text()), "scheduledTime": "2026-12-01T03:00:00Z"}
    kind, report = fn.run(world.env(ACCOUNTS=world.a), event)
    assert kind == "response" and report["outcome"] == "rotated", report
    after = world.versions(), world.ssm()
    kind, report = fn.run(world.env(ACCOUNTS=world.a), event)
    assert kind == "response" and report["outcome"] == "skipped" and "duplicate" in report["reason"], report
    assert (world.versions(), world.ssm()) == after
    kind, report = fn.run(world.env(ACCOUNTS=world.a), {**event, "scheduledTime": "2027-01-01T03:00:00Z"})
    assert kind == "response" and report["outcome"] == "rotated", report


def test_an_interrupted_rotation_for_accounts_no_longer_configured_is_abandoned(fn, world, proxy):
    """Killed while pending; then a stack update renamed the pair (ACCOUNTS and the username now
    name other accounts). Finishing the old rotation would move SSM outside ACCOUNTS; the next
    run abandons it (recorded, pending copy dropped) and rotates the new pair."""
    proxy.on_crash = fn.crash
    proxy.rules.append(CRASH_POINTS["after-the-ad-reset-and-proof"])
    fn.run_until_crash(world.env(AWS_ENDPOINT_URL=proxy.url))
    proxy.rules.clear()
    world.expire_lock()
    c, c_pw = domain_user()
    d, _ = domain_user()
    world.aws.ssm.put_parameter(Name=f"{world.prefix}/username", Value=f"EXAMPLE\\{c}", Type="String", Overwrite=True)
    world.aws.ssm.put_parameter(Name=f"{world.prefix}/password", Value=c_pw, Type="SecureString", KeyId=world.key, Overwrite=True)
    kind, report = fn.run(world.env(ACCOUNTS=f"{c},{d}"))
    assert kind == "response" and report["outcome"] == "rotated" and report["active"] == f"EXAMPLE\\{d}", report
    assert world.logs_on(*world.ssm()) and world.record()["state"] == "idle" and world.pending() is None
    assert "abandoning an interrupted rotation" in fn.output()


def test_a_resumed_switch_resets_ad_again_first(fn, world, proxy):
    """Killed after recording the switch; then someone reset the target in AD (an administrator,
    or a PasswordVersion update in single-account mode). Writing the kept password to SSM
    without resetting AD to it again would leave SSM with a password AD no longer has."""
    proxy.on_crash = fn.crash
    proxy.rules.append(CRASH_POINTS["after-recording-the-switch"])
    fn.run_until_crash(world.env(AWS_ENDPOINT_URL=proxy.url, ACCOUNTS=world.a))
    proxy.rules.clear()
    world.expire_lock()
    env = samba_env()
    import base64
    other = f"Other-{uuid.uuid4().hex}-Pw"
    pwd = base64.b64encode(f'"{other}"'.encode("utf-16-le")).decode()
    ldif = f"dn: CN={world.a},OU=fargate-smb,DC=example,DC=test\nchangetype: modify\nreplace: unicodePwd\nunicodePwd:: {pwd}\n-\n"
    out = subprocess.run(["ldapmodify", "-H", "ldaps://127.0.0.1", "-D", "Administrator@example.test", "-y", env["FARGATE_SMB_ADMIN_PASSWORD_FILE"]],
                         input=ldif, capture_output=True, text=True, timeout=60, env={**os.environ, "LDAPTLS_CACERT": env["FARGATE_SMB_CA"]})
    assert out.returncode == 0, out.stderr
    kind, report = fn.run(world.env(ACCOUNTS=world.a))
    assert kind == "response" and report["outcome"].startswith("rotated"), report
    assert world.logs_on(*world.ssm()), "SSM holds what AD holds"


def test_single_account_mode_a_record_of_the_previous_version_starts_over(fn, world, aws):
    """A `switching` record written by the previous version (no fingerprint, no pending copy) in
    single-account mode: the username always names the target there, so it says nothing about
    the switch; the run starts over and ends with a pair that logs on."""
    user, _ = world.ssm()
    lost = f"Lost-{uuid.uuid4().hex}-Pw"
    env = samba_env()
    import base64
    pwd = base64.b64encode(f'"{lost}"'.encode("utf-16-le")).decode()
    ldif = f"dn: CN={world.a},OU=fargate-smb,DC=example,DC=test\nchangetype: modify\nreplace: unicodePwd\nunicodePwd:: {pwd}\n-\n"
    out = subprocess.run(["ldapmodify", "-H", "ldaps://127.0.0.1", "-D", "Administrator@example.test", "-y", env["FARGATE_SMB_ADMIN_PASSWORD_FILE"]],
                         input=ldif, capture_output=True, text=True, timeout=60, env={**os.environ, "LDAPTLS_CACERT": env["FARGATE_SMB_CA"]})
    assert out.returncode == 0, out.stderr
    aws.ssm.put_parameter(Name=f"{world.prefix}/rotation", Type="String", Value=json.dumps(
        {"state": "switching", "active": user, "target": user, "time": "2026-11-30T00:00:00Z", "outcome": "switching SSM to the new credential"}))
    kind, report = fn.run(world.env(ACCOUNTS=world.a))
    assert kind == "response" and report["outcome"] == "rotated", report
    assert world.logs_on(*world.ssm())


def test_single_account_mode_a_slow_file_server_never_keeps_ssm_on_a_dead_password(fn, world):
    """The file server accepts connections and never answers: each proof attempt takes the whole
    TIMEOUT_SECONDS. In single-account mode SSM is switched right after the reset, and the proof
    is cut to the time left, so the run ends with SSM holding what AD holds."""
    import socket
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        kind, report = fn.run(world.env(ACCOUNTS=world.a, SMB_PORT=str(silent.getsockname()[1]), TIMEOUT_SECONDS="4",
                                        PROOF_ATTEMPTS="10", PROOF_DELAY_MS="100", AWS_OPERATION_TIMEOUT_SECONDS="2",
                                        AWS_ATTEMPT_TIMEOUT_SECONDS="1"), deadline_s=30)
    finally:
        silent.close()
    assert kind == "response" and report["outcome"] == "rotated" and "unproven" in report, report
    assert "no time is left" in report["unproven"], report
    assert world.logs_on(*world.ssm())


def test_an_unreadable_pending_password_starts_over(fn, world, proxy):
    """The pending copy cannot be decrypted any more (its key was replaced, a policy changed):
    that is the same as having none, and the run starts over instead of failing forever."""
    proxy.on_crash = fn.crash
    proxy.rules.append(CRASH_POINTS["after-the-ad-reset-and-proof"])
    fn.run_until_crash(world.env(AWS_ENDPOINT_URL=proxy.url))
    proxy.rules.clear()
    world.expire_lock()
    proxy.rules.append(("GetParameter", "/rotation-pending\"", "fail"))
    kind, report = fn.run(world.env(AWS_ENDPOINT_URL=proxy.url))
    assert kind == "response" and report["outcome"] == "rotated", report
    assert world.logs_on(*world.ssm()) and world.pending() is None


def test_single_account_mode(fn, world):
    user, pw = world.ssm()
    kind, report = fn.run(world.env(ACCOUNTS=world.a))
    assert kind == "response" and report["outcome"] == "rotated", report
    user1, pw1 = world.ssm()
    assert user1 == user and pw1 != pw
    assert world.logs_on(user1, pw1) and not world.logs_on(user, pw)


def test_single_account_mode_a_refused_key_stops_before_ad_changes(fn, world, proxy):
    """The key policy refuses the SecureString write. The new password is kept (under the same
    key) before AD is reset, so the refusal comes first and AD and SSM keep the working pair;
    resetting first left SSM with a password AD no longer accepted."""
    user, pw = world.ssm()
    proxy.rules.append(("PutParameter", "SecureString", "fail"))
    kind, error = fn.run(world.env(ACCOUNTS=world.a, AWS_ENDPOINT_URL=proxy.url))
    assert kind == "error", error
    assert "nothing was changed in AD" in json.dumps(error), error
    assert world.ssm() == (user, pw) and world.logs_on(user, pw), "the credential in SSM still logs on"


def test_single_account_mode_follows_ad_when_the_proof_fails(fn, world):
    """Once the only account is reset, only the new password logs on; a proof that fails (here
    the function cannot reach the file server; in life, replication slower than the retries)
    must not keep SSM on the dead one. SSM is switched and the report says it is unproven."""
    user, pw = world.ssm()
    kind, report = fn.run(world.env(ACCOUNTS=world.a, SMB_PORT="1"))
    assert kind == "response" and report["outcome"] == "rotated" and "did not log on" in report["unproven"], report
    new_user, new_pw = world.ssm()
    assert new_user == user and new_pw != pw
    assert world.logs_on(new_user, new_pw), "SSM holds the password AD accepts"


def test_bad_configuration_names_the_variable(fn, world):
    kind, error = fn.run(world.env(ACCOUNTS="a,b,c"))
    assert kind == "error" and "ACCOUNTS" in json.dumps(error), error
    kind, error = fn.run(world.env(PARAMETER_PREFIX="/fargate-smb-test/none-such"))
    assert kind == "error" and "Custom::SsmParameters" in json.dumps(error), error


def test_too_little_time_left_stops_before_any_change(fn, world):
    """With less time left than the start budget (LDAP operations at TIMEOUT_SECONDS, SDK calls
    at the operation timeout, then the switch), the run changes nothing: once AD is reset it
    would never refuse a write for lack of time."""
    before_versions, (user, pw) = world.versions(), world.ssm()
    kind, error = fn.run(world.env(TIMEOUT_SECONDS="30"), deadline_s=20)
    assert kind == "error", error
    assert "too little time is left to start a rotation safely" in json.dumps(error), error
    assert world.versions() == before_versions and world.logs_on(user, pw)

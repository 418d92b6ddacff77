"""The rotation function end to end: the real bootstrap against the Samba DC (LDAPS resets, SMB
proof) and moto (SSM, ECS). Witnesses: smbclient logons with what SSM holds (boto3 reads it),
SSM's parameter history, moto's ECS deployments. Faults are injected from outside: a closed
port for the DC or the file server, and a small proxy in front of moto that refuses chosen
calls (or reports a deployment as still rolling out)."""

import json
import subprocess
import threading
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import samba_env
from lambda_harness import ROOT, domain_user

SHARE = "\\\\127.0.0.1\\share"


class FaultProxy:
    """Forwards every request to moto, except those a rule refuses or rewrites. A rule is
    (X-Amz-Target suffix, substring of the body, action) with action "fail" (answer 400
    AccessDeniedException) or a function rewriting moto's JSON answer."""

    def __init__(self, moto_url: str):
        self.moto = moto_url
        self.rules: list[tuple[str, str, object]] = []
        self.seen: list[str] = []
        self.passed: dict[int, int] = {}
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
    kind, report = fn.run(world.env())
    assert kind == "response" and report["outcome"] == "rotated", report
    assert world.logs_on(*world.ssm())


@pytest.mark.parametrize("which", ["password", "username"])
def test_an_ssm_write_failure_leaves_a_working_pair_and_the_next_run_rotates(fn, world, proxy, which):
    user, pw = world.ssm()
    proxy.rules.append(("PutParameter", f"{world.prefix}/{which}\"", "fail"))
    kind, error = fn.run(world.env(AWS_ENDPOINT_URL=proxy.url))
    assert kind == "error", error
    message = json.dumps(error)
    assert "injected by the test proxy" in message, message
    assert ("nothing was changed in SSM" in message) if which == "password" else ("written back" in message), message
    assert world.ssm() == (user, pw), "SSM holds the previous pair, by value"
    assert world.logs_on(user, pw)
    assert world.record()["state"] == "idle"
    kind, report = fn.run(world.env())
    assert kind == "response" and report["outcome"] == "rotated", report
    assert world.logs_on(*world.ssm())


def test_an_interrupted_switch_is_completed_by_the_next_run(fn, world, proxy):
    """The username write and the rollback of the password both fail (SSM went away mid-switch):
    SSM is left with the new password under the old username, and the record says Switching. The
    next run proves that the password parameter belongs to the target and completes the switch."""
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


def test_single_account_mode(fn, world):
    user, pw = world.ssm()
    kind, report = fn.run(world.env(ACCOUNTS=world.a))
    assert kind == "response" and report["outcome"] == "rotated", report
    user1, pw1 = world.ssm()
    assert user1 == user and pw1 != pw
    assert world.logs_on(user1, pw1) and not world.logs_on(user, pw)


def test_bad_configuration_names_the_variable(fn, world):
    kind, error = fn.run(world.env(ACCOUNTS="a,b,c"))
    assert kind == "error" and "ACCOUNTS" in json.dumps(error), error
    kind, error = fn.run(world.env(PARAMETER_PREFIX="/fargate-smb-test/none-such"))
    assert kind == "error" and "Custom::SsmParameters" in json.dumps(error), error


def test_too_little_time_left_stops_before_the_switch(fn, world):
    """With less time left than two SSM calls may take (2 x TIMEOUT_SECONDS), the run stops
    before touching SSM rather than risk being killed between the two writes."""
    before_versions, (user, pw) = world.versions(), world.ssm()
    kind, error = fn.run(world.env(TIMEOUT_SECONDS="30"), deadline_s=20)
    assert kind == "error", error
    assert "too little to switch SSM safely" in json.dumps(error), error
    assert world.versions() == before_versions and world.logs_on(user, pw)

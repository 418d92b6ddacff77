"""The rotation function in Secrets Manager mode, end to end: the real bootstrap against moto's
Secrets Manager and ECS (over HTTP) and the Samba DC (LDAPS resets, SMB proof). The test plays
Secrets Manager: it calls the four steps with one ClientRequestToken, repeats them, and retries
them after a fault. Witnesses: smbclient logons with what the secret holds (boto3 reads it, always
naming the stage: moto answers a read without one with the version AWSCURRENT had before a
move), DescribeSecret's stages and tags, moto's ECS deployments, and the DC's pwdLastSet.

moto cannot run the rotation itself (RotateSecret would invoke the Lambda through Docker), so
rotation is enabled with RotateSecret without a function (RotationEnabled true; moto then moves
AWSCURRENT to a copy of the value, which is where the tests start)."""

import json
import os
import subprocess
import uuid

import pytest

from conftest import samba_env
from lambda_harness import ROOT, domain_user
from test_rotate_password import SHARE, FaultProxy, Fn

ENVIRONMENT = {
    "LDAPS_URL": "ldaps://127.0.0.1",
    "AD_DOMAIN": "example.test",
    "ADMIN_USERNAME": "Administrator@example.test",
    "PROOF_ATTEMPTS": "2",
    "PROOF_DELAY_MS": "200",
    "TIMEOUT_SECONDS": "5",
}


class Rotation:
    """The secret the template would make (JSON username/password/share, the stack's KMS key) for
    an alternating pair in AD whose first account has the secret's password (as
    Custom::AdServiceAccount leaves it), an ECS service, and the function's environment."""

    def __init__(self, aws, ecs, tmp_path, accounts: int = 2):
        env = samba_env()
        self.aws, self.sm, self.ecs, self.tmp = aws, aws.secretsmanager, ecs, tmp_path
        self.ca = open(env["FARGATE_SMB_CA"]).read()
        self.tag = uuid.uuid4().hex[:8]
        self.a, password = domain_user()
        self.b, _ = domain_user()
        self.accounts = f"{self.a},{self.b}" if accounts == 2 else self.a
        self.admin_parameter = f"/fargate-smb-test/sm-{self.tag}-admin"
        aws.ssm.put_parameter(Name=self.admin_parameter, Value=open(env["FARGATE_SMB_ADMIN_PASSWORD_FILE"]).read(), Type="SecureString")
        self.key = aws.kms.create_key()["KeyMetadata"]["KeyId"]
        self.name = f"fargate-smb-test/sm-{self.tag}"
        value = {"username": f"EXAMPLE\\{self.a}", "password": password, "share": SHARE, "generation": "1"}
        self.arn = self.sm.create_secret(Name=self.name, SecretString=json.dumps(value), KmsKeyId=self.key)["ARN"]
        self.sm.rotate_secret(SecretId=self.arn, RotationRules={"AutomaticallyAfterDays": 30}, RotateImmediately=False)
        assert self.sm.describe_secret(SecretId=self.arn)["RotationEnabled"] is True
        self.cluster = f"c-{self.tag}"
        ecs.create_cluster(clusterName=self.cluster)
        ecs.register_task_definition(family="web", containerDefinitions=[{"name": "web", "image": "iis", "memory": 512}])
        ecs.create_service(cluster=self.cluster, serviceName="site", taskDefinition="web", desiredCount=0)  # moto: 0 tasks = rollout COMPLETED
        self.passwords = {password}

    def env(self, **extra) -> dict:
        return {
            **ENVIRONMENT,
            "CREDENTIAL_STORE": "secrets-manager",
            "SECRET_ID": self.arn,
            "ACCOUNTS": self.accounts,
            "LDAPS_CA_BUNDLE": self.ca,
            "ADMIN_PASSWORD_PARAMETER": self.admin_parameter,
            "ECS_CLUSTER": self.cluster,
            "ECS_SERVICES": "site",
            **extra,
        }

    def event(self, step: str, token: str, secret_id: str | None = None) -> dict:
        return {"Step": step, "SecretId": secret_id or self.arn, "ClientRequestToken": token}

    def value(self, stage: str = "AWSCURRENT", token: str | None = None) -> dict:
        kw = {"VersionId": token} if token else {}
        v = json.loads(self.sm.get_secret_value(SecretId=self.arn, VersionStage=stage, **kw)["SecretString"])
        self.passwords.add(v["password"])
        return v

    def stages(self) -> dict:
        return self.sm.describe_secret(SecretId=self.arn)["VersionIdsToStages"]

    def current_version(self) -> str:
        return next(v for v, stages in self.stages().items() if "AWSCURRENT" in stages)

    def tags(self) -> dict:
        return {t["Key"]: t["Value"] for t in self.sm.describe_secret(SecretId=self.arn).get("Tags", [])}

    def logs_on(self, value: dict) -> bool:
        auth = self.tmp / f"auth-{uuid.uuid4().hex[:6]}"
        domain, name = value["username"].split("\\")
        auth.write_text(f"username = {name}\npassword = {value['password']}\ndomain = {domain}\n")
        auth.chmod(0o600)
        out = subprocess.run(["smbclient", "//127.0.0.1/share", "-A", str(auth), "-m", "SMB3", "--client-protection=encrypt", "-c", "ls"],
                             capture_output=True, text=True, timeout=60)
        auth.unlink()
        if out.returncode == 0:
            return True
        assert "NT_STATUS_LOGON_FAILURE" in out.stdout + out.stderr, out.stdout + out.stderr
        return False

    def current_logs_on(self) -> bool:
        return self.logs_on(self.value("AWSCURRENT"))

    def pwd_last_set(self, account: str) -> str:
        """pwdLastSet as the DC reports it (ldapsearch, the independent witness of a reset)."""
        env = samba_env()
        out = subprocess.run(["ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-H", "ldaps://127.0.0.1", "-D", "Administrator@example.test",
                              "-y", env["FARGATE_SMB_ADMIN_PASSWORD_FILE"], "-b", env["FARGATE_SMB_OU"], f"(sAMAccountName={account})", "pwdLastSet"],
                             capture_output=True, text=True, timeout=60, env={**os.environ, "LDAPTLS_CACERT": env["FARGATE_SMB_CA"]})
        assert out.returncode == 0, out.stderr
        return next(line.split(": ", 1)[1] for line in out.stdout.splitlines() if line.startswith("pwdLastSet: "))

    def reset_in_ad(self, account: str, password: str) -> None:
        """Set the account's password over LDAPS (from stdin), as Custom::AdServiceAccount does
        when CloudFormation writes a new value."""
        import base64
        env = samba_env()
        pwd = base64.b64encode(f'"{password}"'.encode("utf-16-le")).decode()
        ldif = f"dn: CN={account},OU=fargate-smb,DC=example,DC=test\nchangetype: modify\nreplace: unicodePwd\nunicodePwd:: {pwd}\n-\n"
        out = subprocess.run(["ldapmodify", "-H", "ldaps://127.0.0.1", "-D", "Administrator@example.test", "-y", env["FARGATE_SMB_ADMIN_PASSWORD_FILE"]],
                             input=ldif, capture_output=True, text=True, timeout=60, env={**os.environ, "LDAPTLS_CACERT": env["FARGATE_SMB_CA"]})
        assert out.returncode == 0, out.stderr
        self.passwords.add(password)

    def cloudformation_writes(self, account: str) -> dict:
        """What a PasswordVersion update does: CloudFormation writes a new AWSCURRENT value for
        `account` (the old one becomes AWSPREVIOUS) and Custom::AdServiceAccount resets the
        account to it. Made by a put and a move: moto's PutSecretValue(VersionStages=[AWSCURRENT])
        after an earlier move leaves AWSCURRENT on two versions (it moves the label from the
        version that was AWSCURRENT before that move), which AWS never does."""
        written = {"username": f"EXAMPLE\\{account}", "password": f"Cf-{uuid.uuid4().hex}-X", "share": SHARE, "generation": "2"}
        version, previous = str(uuid.uuid4()), self.current_version()
        self.sm.put_secret_value(SecretId=self.arn, ClientRequestToken=version, SecretString=json.dumps(written), VersionStages=["CLOUDFORMATION"])
        self.sm.update_secret_version_stage(SecretId=self.arn, VersionStage="AWSCURRENT", MoveToVersionId=version, RemoveFromVersionId=previous)
        self.sm.update_secret_version_stage(SecretId=self.arn, VersionStage="CLOUDFORMATION", RemoveFromVersionId=version)
        assert self.current_version() == version, self.stages()
        self.reset_in_ad(account, written["password"])
        return written

    def deployment_id(self) -> str:
        return self.ecs.describe_services(cluster=self.cluster, services=["site"])["services"][0]["deployments"][0]["id"]


@pytest.fixture
def ecs(moto_url):
    import boto3
    return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1").client("ecs", endpoint_url=moto_url)


@pytest.fixture
def rot(aws, ecs, tmp_path):
    return Rotation(aws, ecs, tmp_path)


@pytest.fixture
def single(aws, ecs, tmp_path):
    return Rotation(aws, ecs, tmp_path, accounts=1)


@pytest.fixture
def proxy(moto_url):
    p = FaultProxy(moto_url)
    yield p
    p.close()


@pytest.fixture
def fn(launch, runtime):
    return Fn(launch, runtime)


def step(fn, rot, name: str, token: str, **env) -> dict:
    """One step that must succeed; its report."""
    kind, body = fn.run(rot.env(**env), rot.event(name, token))
    assert kind == "response", body
    assert body["step"] == name and body["token"] == token, body
    return body


def failing(fn, rot, name: str, token: str, event: dict | None = None, **env) -> str:
    """One step that must fail; its error message."""
    kind, body = fn.run(rot.env(**env), event or rot.event(name, token))
    assert kind == "error", body
    assert body.get("errorType") == "RotationStepFailed", body
    return body["errorMessage"]


def no_leak(fn, rot, *reports) -> None:
    """No password the secret ever held is in the function's output or in a report."""
    text = fn.output() + json.dumps(reports)
    assert rot.passwords and all(len(p) >= 16 for p in rot.passwords)
    for secret in rot.passwords:
        assert secret not in text


def test_the_four_steps_rotate_to_the_other_account_and_the_previous_one_keeps_working(fn, rot):
    before = rot.value()
    old_version, deployment = rot.current_version(), rot.deployment_id()
    token = str(uuid.uuid4())

    created = step(fn, rot, "createSecret", token)
    assert created["outcome"] == "created" and created["account"] == f"EXAMPLE\\{rot.b}", created
    pending = rot.value("AWSPENDING", token)
    assert pending["username"] == f"EXAMPLE\\{rot.b}" and pending["share"] == SHARE
    assert len(pending["password"]) == 32 and pending["password"] != before["password"]
    assert rot.stages()[token] == ["AWSPENDING"] and rot.value() == before
    assert rot.current_logs_on()
    assert not rot.logs_on(pending), "the directory does not have the pending password yet"

    assert step(fn, rot, "setSecret", token)["outcome"] == "set"
    assert rot.current_logs_on() and rot.logs_on(rot.value("AWSPENDING", token)), "both versions log on"

    proven = step(fn, rot, "testSecret", token)
    assert proven["outcome"] == "proven" and proven["account"] == f"EXAMPLE\\{rot.b}", proven
    assert rot.current_logs_on() and rot.value() == before

    finished = step(fn, rot, "finishSecret", token)
    assert finished["outcome"] == "finished" and finished["deployed"] == ["site"], finished
    stages = rot.stages()
    # AWSPENDING is taken off too: left there, a later value written by CloudFormation would leave it
    # on an old version, and Secrets Manager would refuse every later rotation as still in progress.
    assert stages[token] == ["AWSCURRENT"] and stages[old_version] == ["AWSPREVIOUS"], stages
    assert rot.value() == pending and rot.current_logs_on()
    assert rot.deployment_id() != deployment, "a new deployment was forced"
    assert "fargate-smb:redeploy" not in rot.tags() and "fargate-smb:password-set" not in rot.tags(), rot.tags()
    assert rot.logs_on(before), "the previously active account was never touched"
    no_leak(fn, rot, created, proven, finished)


def test_a_second_rotation_goes_back_to_the_first_account(fn, rot):
    first = rot.value()
    for expected in (rot.b, rot.a):
        token = str(uuid.uuid4())
        for name in ("createSecret", "setSecret", "testSecret", "finishSecret"):
            step(fn, rot, name, token)
            assert rot.current_logs_on(), f"AWSCURRENT logs on after {name}"
        assert rot.value()["username"] == f"EXAMPLE\\{expected}"
        if expected == rot.b:
            second = rot.value()
    third = rot.value()
    assert third["password"] not in (first["password"], second["password"])
    assert rot.logs_on(second), "the account of the first rotation works until the next one"
    assert not rot.logs_on(first), "the first password of the first account is gone"
    no_leak(fn, rot)


def test_each_step_repeated_changes_nothing_the_second_time(fn, rot, proxy):
    token = str(uuid.uuid4())
    env = {"AWS_ENDPOINT_URL": proxy.url}
    assert step(fn, rot, "createSecret", token, **env)["outcome"] == "created"
    pending = rot.value("AWSPENDING", token)
    proxy.seen.clear()
    again = step(fn, rot, "createSecret", token, **env)
    assert again["outcome"] == "already-created" and again["account"] == pending["username"], again
    assert "secretsmanager.PutSecretValue" not in proxy.seen, proxy.seen
    assert rot.value("AWSPENDING", token) == pending, "the pending password is unchanged"

    assert step(fn, rot, "setSecret", token, **env)["outcome"] == "set"
    reset_at = rot.pwd_last_set(rot.b)
    assert step(fn, rot, "setSecret", token, **env)["outcome"] == "already-set"
    assert rot.pwd_last_set(rot.b) == reset_at, "no second reset"

    for _ in range(2):
        assert step(fn, rot, "testSecret", token, **env)["outcome"] == "proven"

    assert step(fn, rot, "finishSecret", token, **env)["outcome"] == "finished"
    stages, deployment = rot.stages(), rot.deployment_id()
    proxy.seen.clear()
    again = step(fn, rot, "finishSecret", token, **env)
    assert again["outcome"] == "already-finished", again
    assert rot.stages() == stages and rot.deployment_id() == deployment, "no second move, no second deployment"
    assert not any(t.endswith(("UpdateSecretVersionStage", "UpdateService")) for t in proxy.seen), proxy.seen
    assert rot.current_logs_on()
    no_leak(fn, rot)


def test_create_secret_refused_then_retried(fn, rot, proxy):
    """PutSecretValue refused (nothing applied): the step fails with the secret, the step and the
    token named; no version exists; the retry creates it."""
    token = str(uuid.uuid4())
    proxy.rules.append(("PutSecretValue", "", "fail"))
    message = failing(fn, rot, "createSecret", token, AWS_ENDPOINT_URL=proxy.url)
    assert f"createSecret of {rot.arn} (ClientRequestToken {token}) failed" in message, message
    assert "PutSecretValue" in message and "grant the function's role" in message, message
    assert token not in rot.stages() and rot.current_logs_on()
    proxy.rules.clear()
    assert step(fn, rot, "createSecret", token)["outcome"] == "created"
    assert rot.value("AWSPENDING", token)["username"] == f"EXAMPLE\\{rot.b}"
    no_leak(fn, rot)


def test_create_secret_applied_but_answered_with_an_error_is_read_back(fn, rot, proxy):
    """moto applies PutSecretValue and the function sees a 500 (every SDK attempt): the version is
    read back, holds this password, and the step succeeds; a repeat keeps it."""
    token = str(uuid.uuid4())
    proxy.rules.append(("PutSecretValue", "", "apply-then-fail"))
    created = step(fn, rot, "createSecret", token, AWS_ENDPOINT_URL=proxy.url)
    assert created["outcome"] == "created", created
    assert "injected by the test proxy after the write" in fn.output(), "the write really failed"
    pending = rot.value("AWSPENDING", token)
    proxy.rules.clear()
    assert step(fn, rot, "createSecret", token)["outcome"] == "already-created"
    assert rot.value("AWSPENDING", token) == pending
    for name in ("setSecret", "testSecret", "finishSecret"):
        step(fn, rot, name, token)
    assert rot.value() == pending and rot.current_logs_on()
    no_leak(fn, rot)


def test_set_secret_with_the_directory_unreachable_then_retried(fn, rot):
    token = str(uuid.uuid4())
    step(fn, rot, "createSecret", token)
    message = failing(fn, rot, "setSecret", token, LDAPS_URL="ldaps://127.0.0.1:1")
    assert f"setSecret of {rot.arn} (ClientRequestToken {token})" in message and "127.0.0.1:1" in message, message
    assert rot.current_logs_on() and not rot.logs_on(rot.value("AWSPENDING", token))
    assert "fargate-smb:password-set" not in rot.tags()
    assert step(fn, rot, "setSecret", token)["outcome"] == "set"
    assert rot.logs_on(rot.value("AWSPENDING", token))
    no_leak(fn, rot)


def test_test_secret_with_the_share_unreachable_then_retried(fn, rot):
    """The proof fails (the file server's port is closed): AWSCURRENT is untouched, and the
    failure forgets that setSecret was done, so the retry's setSecret resets again (someone may
    have reset the account in between)."""
    token = str(uuid.uuid4())
    step(fn, rot, "createSecret", token)
    step(fn, rot, "setSecret", token)
    assert rot.tags().get("fargate-smb:password-set") == token
    message = failing(fn, rot, "testSecret", token, SMB_PORT="1")
    assert f"testSecret of {rot.arn} (ClientRequestToken {token})" in message, message
    assert "did not log on" in message and "AWSCURRENT is unchanged" in message, message
    assert "fargate-smb:password-set" not in rot.tags()
    assert rot.current_logs_on() and token in rot.stages() and "AWSCURRENT" not in rot.stages()[token]
    assert step(fn, rot, "testSecret", token)["outcome"] == "proven"
    assert step(fn, rot, "setSecret", token)["outcome"] == "set", "reset again after the failed proof"
    step(fn, rot, "finishSecret", token)
    assert rot.current_logs_on()
    no_leak(fn, rot)


def test_a_failed_deployment_after_the_move_is_forced_by_the_retry(fn, rot, proxy):
    """UpdateService fails after AWSCURRENT moved: the redeploy tag names the token; the retry of
    finishSecret (the token is AWSCURRENT now) only forces the deployment and drops the tag."""
    token = str(uuid.uuid4())
    for name in ("createSecret", "setSecret", "testSecret"):
        step(fn, rot, name, token)
    deployment = rot.deployment_id()
    proxy.rules.append(("UpdateService", "", "fail"))
    message = failing(fn, rot, "finishSecret", token, AWS_ENDPOINT_URL=proxy.url)
    assert "forcing a new ECS deployment failed" in message and "fargate-smb:redeploy" in message, message
    assert "AWSCURRENT" in rot.stages()[token] and rot.tags().get("fargate-smb:redeploy") == token
    assert rot.current_logs_on() and rot.deployment_id() == deployment
    proxy.rules.clear()
    retried = step(fn, rot, "finishSecret", token)
    assert retried["outcome"] == "finished" and retried["deployed"] == ["site"], retried
    assert rot.deployment_id() != deployment and "fargate-smb:redeploy" not in rot.tags()
    no_leak(fn, rot)


def test_a_deployment_left_due_is_forced_by_the_next_rotation_s_create_secret(fn, rot, proxy):
    token = str(uuid.uuid4())
    for name in ("createSecret", "setSecret", "testSecret"):
        step(fn, rot, name, token)
    proxy.rules.append(("UpdateService", "", "fail"))
    failing(fn, rot, "finishSecret", token, AWS_ENDPOINT_URL=proxy.url)
    proxy.rules.clear()
    deployment = rot.deployment_id()
    nxt = str(uuid.uuid4())
    created = step(fn, rot, "createSecret", nxt)
    assert created["outcome"] == "created" and created["dueDeployment"] == {"token": token, "deployed": ["site"]}, created
    assert rot.deployment_id() != deployment and "fargate-smb:redeploy" not in rot.tags()
    assert rot.value("AWSPENDING", nxt)["username"] == f"EXAMPLE\\{rot.a}"
    no_leak(fn, rot)


def rolling(answer):
    """moto's DescribeServices answer, with every deployment still rolling out."""
    for s in answer.get("services", []):
        for d in s.get("deployments", []):
            d["rolloutState"] = "IN_PROGRESS"
    return answer


def test_a_rollout_in_progress_stops_set_secret(fn, rot, proxy):
    """createSecret only writes the pending version, so it goes on while a deployment rolls out;
    setSecret, which resets the account old tasks may still use, stops before the directory is
    touched."""
    token = str(uuid.uuid4())
    proxy.rules.append(("DescribeServices", "", rolling))
    env = {"AWS_ENDPOINT_URL": proxy.url}
    assert step(fn, rot, "createSecret", token, **env)["outcome"] == "created"
    reset_at = rot.pwd_last_set(rot.b)
    message = failing(fn, rot, "setSecret", token, **env)
    assert "still rolling out" in message and f"EXAMPLE\\{rot.b}" in message and "rotate-secret" in message, message
    assert rot.pwd_last_set(rot.b) == reset_at and "fargate-smb:password-set" not in rot.tags()
    assert not rot.logs_on(rot.value("AWSPENDING", token)) and rot.current_logs_on()
    proxy.rules.clear()
    for name in ("setSecret", "testSecret", "finishSecret"):
        step(fn, rot, name, token)
    assert rot.value()["username"] == f"EXAMPLE\\{rot.b}" and rot.current_logs_on()
    no_leak(fn, rot)


def test_a_due_deployment_is_forced_once_and_does_not_stop_its_own_create_secret(fn, rot, proxy):
    """The deployment createSecret forces for an earlier rotation rolls out at once: createSecret
    still succeeds, a repeat forces nothing more (the tag is gone), and setSecret waits for the
    rollout."""
    token = str(uuid.uuid4())
    for name in ("createSecret", "setSecret", "testSecret"):
        step(fn, rot, name, token)
    proxy.rules.append(("UpdateService", "", "fail"))
    failing(fn, rot, "finishSecret", token, AWS_ENDPOINT_URL=proxy.url)
    proxy.rules.clear()
    # From the first forced deployment on, the services report it as rolling out.
    proxy.rules.append(("DescribeServices", "", lambda answer: rolling(answer) if any(t.endswith("UpdateService") for t in proxy.seen) else answer))
    proxy.seen.clear()
    env = {"AWS_ENDPOINT_URL": proxy.url}
    nxt = str(uuid.uuid4())
    created = step(fn, rot, "createSecret", nxt, **env)
    assert created["outcome"] == "created" and created["dueDeployment"] == {"token": token, "deployed": ["site"]}, created
    assert "fargate-smb:redeploy" not in rot.tags()
    again = step(fn, rot, "createSecret", nxt, **env)
    assert again["outcome"] == "already-created" and "dueDeployment" not in again, again
    assert [t for t in proxy.seen if t.endswith("UpdateService")] == ["AmazonEC2ContainerServiceV20141113.UpdateService"], proxy.seen
    assert "still rolling out" in failing(fn, rot, "setSecret", nxt, **env)
    no_leak(fn, rot)


def test_a_due_deployment_whose_tag_cannot_be_removed_is_said_in_the_log(fn, rot, proxy):
    token = str(uuid.uuid4())
    for name in ("createSecret", "setSecret", "testSecret"):
        step(fn, rot, name, token)
    proxy.rules.append(("UpdateService", "", "fail"))
    failing(fn, rot, "finishSecret", token, AWS_ENDPOINT_URL=proxy.url)
    proxy.rules[:] = [("UntagResource", "", "fail")]
    created = step(fn, rot, "createSecret", str(uuid.uuid4()), AWS_ENDPOINT_URL=proxy.url)
    assert created["dueDeployment"]["token"] == token, created
    assert rot.tags().get("fargate-smb:redeploy") == token
    assert "the next createSecret or finishSecret forces one more deployment" in fn.output(), fn.output()[-3000:]


def test_another_secret_is_refused(fn, rot):
    other = rot.sm.create_secret(Name=f"{rot.name}-other", SecretString=json.dumps(rot.value()))["ARN"]
    token = str(uuid.uuid4())
    for name in ("createSecret", "finishSecret"):
        message = failing(fn, rot, name, token, rot.event(name, token, secret_id=other))
        assert f"this function rotates {rot.arn} (SECRET_ID), not {other}" in message, message
    # By name: the event's ARN is described and the secret's name compared.
    message = failing(fn, rot, "createSecret", token, rot.event("createSecret", token, secret_id=other), SECRET_ID=rot.name)
    assert f"this function rotates {rot.name} (SECRET_ID)" in message, message
    versions = rot.sm.describe_secret(SecretId=other)["VersionIdsToStages"]
    assert token not in versions and token not in rot.stages()
    assert step(fn, rot, "createSecret", token, SECRET_ID=rot.name)["outcome"] == "created"


def test_tokens_that_are_not_pending_are_refused(fn, rot, proxy):
    unknown = str(uuid.uuid4())
    for name in ("setSecret", "testSecret", "finishSecret"):
        message = failing(fn, rot, name, unknown)
        assert "the token is not a version of the secret" in message and "rotate-secret" in message, message
    # AWSCURRENT already: the rotation has finished, and every step says so and changes nothing
    # (Secrets Manager retries a whole rotation from createSecret with the same token).
    current, stages = rot.current_version(), rot.stages()
    reset_at = (rot.pwd_last_set(rot.a), rot.pwd_last_set(rot.b))
    proxy.seen.clear()
    for name in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        assert step(fn, rot, name, current, AWS_ENDPOINT_URL=proxy.url)["outcome"] == "already-finished"
    assert not any(t.endswith(("PutSecretValue", "UpdateSecretVersionStage", "UpdateService", "TagResource")) for t in proxy.seen), proxy.seen
    assert rot.stages() == stages and (rot.pwd_last_set(rot.a), rot.pwd_last_set(rot.b)) == reset_at
    previous = next(v for v, s in rot.stages().items() if s == ["AWSPREVIOUS"])
    for name in ("setSecret", "testSecret", "finishSecret"):
        message = failing(fn, rot, name, previous)
        assert "[AWSPREVIOUS], not AWSPENDING" in message, message


def test_finish_secret_refuses_a_pending_password_the_directory_no_longer_has(fn, rot):
    """Rotation 2 ran create/set/test (AWSPENDING = the first account, new password); then
    CloudFormation wrote a new value (AWSCURRENT = the first account, another password) and
    Custom::AdServiceAccount reset the account to it. finishSecret must not move AWSCURRENT to
    the pending password, which no longer logs on."""
    first = str(uuid.uuid4())
    for name in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        step(fn, rot, name, first)
    second = str(uuid.uuid4())
    for name in ("createSecret", "setSecret", "testSecret"):
        step(fn, rot, name, second)
    assert rot.value("AWSPENDING", second)["username"] == f"EXAMPLE\\{rot.a}"
    written = rot.cloudformation_writes(rot.a)
    assert rot.stages()[second] == ["AWSPENDING"], rot.stages()
    stages, deployment = rot.stages(), rot.deployment_id()
    assert rot.current_logs_on() and not rot.logs_on(rot.value("AWSPENDING", second))
    message = failing(fn, rot, "finishSecret", second)
    assert f"finishSecret of {rot.arn} (ClientRequestToken {second}) failed" in message, message
    assert f"EXAMPLE\\{rot.a}" in message and "rotate-secret" in message, message
    assert "AWSCURRENT has changed since this rotation's createSecret" in message, message
    assert "AWSPENDING was taken off this version" in message, message
    # Nothing moved; only the stale version lost AWSPENDING (else every later rotation would
    # resume this one and fail the same way).
    stages[second] = [s for s in stages[second] if s != "AWSPENDING"]
    assert {v: s for v, s in rot.stages().items() if s} == {v: s for v, s in stages.items() if s}, rot.stages()
    assert rot.deployment_id() == deployment and "fargate-smb:redeploy" not in rot.tags()
    assert rot.value() == written and rot.current_logs_on()
    # A retry of the dead token changes nothing; the next rotation (a new token) goes to the
    # other account, and AWSCURRENT's account keeps working throughout.
    kind, _ = fn.run(rot.env(), rot.event("createSecret", second))
    assert kind == "error" and rot.value() == written
    third = str(uuid.uuid4())
    for name in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        step(fn, rot, name, third)
        assert rot.logs_on(written)
    assert rot.current_version() == third and rot.value()["username"] == f"EXAMPLE\\{rot.b}" and rot.current_logs_on()
    no_leak(fn, rot)


def test_create_secret_of_a_stale_pending_version_drops_its_label(fn, rot):
    """Rotation 2 stopped after createSecret (AWSPENDING = the first account); then CloudFormation
    wrote a new AWSCURRENT for the first account. Secrets Manager resumes the unfinished rotation
    with its token: createSecret must not answer already-created (setSecret would then refuse
    forever), but take AWSPENDING off so that a new rotation can start."""
    first = str(uuid.uuid4())
    for name in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        step(fn, rot, name, first)
    second = str(uuid.uuid4())
    step(fn, rot, "createSecret", second)
    assert rot.value("AWSPENDING", second)["username"] == f"EXAMPLE\\{rot.a}"
    written = rot.cloudformation_writes(rot.a)
    message = failing(fn, rot, "createSecret", second)
    assert "AWSPENDING was taken off this version" in message and f"EXAMPLE\\{rot.a}" in message, message
    assert not any("AWSPENDING" in s for s in rot.stages().values()), rot.stages()
    assert rot.value() == written and rot.current_logs_on()
    third = str(uuid.uuid4())
    for name in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        step(fn, rot, name, third)
    assert rot.value()["username"] == f"EXAMPLE\\{rot.b}" and rot.current_logs_on() and rot.logs_on(written)
    no_leak(fn, rot)


def test_finish_secret_straight_after_create_secret_is_refused(fn, rot):
    """No setSecret, no testSecret: the pending password is not in the directory, and
    finishSecret refuses to make it AWSCURRENT. The retry of the whole rotation finishes it."""
    token = str(uuid.uuid4())
    step(fn, rot, "createSecret", token)
    before, stages, deployment = rot.value(), rot.stages(), rot.deployment_id()
    message = failing(fn, rot, "finishSecret", token)
    assert f"finishSecret of {rot.arn} (ClientRequestToken {token}) failed" in message, message
    assert "does not log on" in message and "rotate-secret" in message, message
    assert rot.stages() == stages and rot.value() == before and rot.current_logs_on()
    assert rot.deployment_id() == deployment and "fargate-smb:redeploy" not in rot.tags()
    for name in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        step(fn, rot, name, token)
    assert rot.value()["username"] == f"EXAMPLE\\{rot.b}" and rot.current_logs_on()
    no_leak(fn, rot)


def test_single_account_mode_finish_secret_straight_after_create_secret_is_refused(fn, single):
    rot = single
    token = str(uuid.uuid4())
    step(fn, rot, "createSecret", token)
    stages = rot.stages()
    assert "does not log on" in failing(fn, rot, "finishSecret", token)
    assert rot.stages() == stages and rot.current_logs_on()
    no_leak(fn, rot)


def test_a_retry_after_the_move_replays_every_step_with_the_same_token(fn, rot, proxy):
    """finishSecret moved AWSCURRENT and its UpdateService failed. Secrets Manager retries the
    whole rotation with the same token: createSecret forces the due deployment, setSecret and
    testSecret change nothing, finishSecret finds it done. The deployment is forced once, the
    directory is not touched, and AWSCURRENT logs on throughout."""
    token = str(uuid.uuid4())
    for name in ("createSecret", "setSecret", "testSecret"):
        step(fn, rot, name, token)
    proxy.rules.append(("UpdateService", "", "fail"))
    failing(fn, rot, "finishSecret", token, AWS_ENDPOINT_URL=proxy.url)
    assert "AWSCURRENT" in rot.stages()[token] and rot.tags().get("fargate-smb:redeploy") == token
    proxy.rules.clear()
    proxy.seen.clear()
    deployment, reset_at = rot.deployment_id(), rot.pwd_last_set(rot.b)
    reports = {}
    for name in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        reports[name] = step(fn, rot, name, token, AWS_ENDPOINT_URL=proxy.url)
        assert reports[name]["outcome"] == "already-finished", reports[name]
        assert rot.current_logs_on(), f"AWSCURRENT logs on after {name}"
    assert reports["createSecret"]["dueDeployment"] == {"token": token, "deployed": ["site"]}, reports
    assert [t for t in proxy.seen if t.endswith("UpdateService")] == ["AmazonEC2ContainerServiceV20141113.UpdateService"], proxy.seen
    assert not any(t.endswith("PutSecretValue") for t in proxy.seen), proxy.seen
    assert rot.deployment_id() != deployment and rot.pwd_last_set(rot.b) == reset_at
    assert rot.stages()[token] == ["AWSCURRENT"] and "fargate-smb:redeploy" not in rot.tags()
    assert rot.value()["username"] == f"EXAMPLE\\{rot.b}"
    no_leak(fn, rot, *reports.values())


def test_finish_secret_s_move_applied_but_answered_with_an_error_is_read_back(fn, rot, proxy):
    """moto applies the move of AWSCURRENT and the function sees a 500: the stages are read
    back, the move counts as done, and the step finishes (deployment, tags, AWSPENDING off)."""
    token = str(uuid.uuid4())
    for name in ("createSecret", "setSecret", "testSecret"):
        step(fn, rot, name, token)
    old_version, deployment = rot.current_version(), rot.deployment_id()
    proxy.rules.append(("UpdateSecretVersionStage", "MoveToVersionId", "apply-then-fail"))
    finished = step(fn, rot, "finishSecret", token, AWS_ENDPOINT_URL=proxy.url)
    assert finished["outcome"] == "finished" and finished["deployed"] == ["site"], finished
    assert "injected by the test proxy after the write" in fn.output(), "the move really was answered with an error"
    stages = rot.stages()
    assert stages[token] == ["AWSCURRENT"] and stages[old_version] == ["AWSPREVIOUS"], stages
    assert rot.deployment_id() != deployment and "fargate-smb:redeploy" not in rot.tags()
    assert rot.current_logs_on()
    no_leak(fn, rot, finished)


def test_finish_secret_with_tag_resource_refused_moves_nothing_then_retried(fn, rot, proxy):
    token = str(uuid.uuid4())
    for name in ("createSecret", "setSecret", "testSecret"):
        step(fn, rot, name, token)
    stages, deployment = rot.stages(), rot.deployment_id()
    proxy.rules.append(("TagResource", "fargate-smb:redeploy", "fail"))
    message = failing(fn, rot, "finishSecret", token, AWS_ENDPOINT_URL=proxy.url)
    assert f"finishSecret of {rot.arn} (ClientRequestToken {token}) failed" in message, message
    assert "secretsmanager:TagResource" in message, message
    assert rot.stages() == stages and rot.deployment_id() == deployment and "fargate-smb:redeploy" not in rot.tags()
    assert rot.current_logs_on()
    proxy.rules.clear()
    assert step(fn, rot, "finishSecret", token)["outcome"] == "finished"
    assert rot.stages()[token] == ["AWSCURRENT"] and rot.deployment_id() != deployment and rot.current_logs_on()
    no_leak(fn, rot)


def test_a_configuration_error_has_its_own_error_type(fn, rot):
    env = rot.env()
    del env["SECRET_ID"]
    kind, body = fn.run(env, rot.event("createSecret", str(uuid.uuid4())))
    assert kind == "error" and body.get("errorType") == "ConfigurationError", body
    assert "SECRET_ID" in body["errorMessage"], body


def test_set_secret_never_resets_the_active_account(fn, rot):
    """A pending version crafted with the account AWSCURRENT names: refused before the directory
    is touched."""
    before = rot.value()
    reset_at = rot.pwd_last_set(rot.a)
    token = str(uuid.uuid4())
    crafted = {**before, "password": f"Crafted-{uuid.uuid4().hex}"}
    rot.sm.put_secret_value(SecretId=rot.arn, ClientRequestToken=token, SecretString=json.dumps(crafted), VersionStages=["AWSPENDING"])
    rot.passwords.add(crafted["password"])
    message = failing(fn, rot, "setSecret", token)
    assert f"names EXAMPLE\\{rot.a}, the account AWSCURRENT holds" in message, message
    assert "AWSPENDING was taken off this version" in message and "rotate-secret" in message, message
    assert rot.pwd_last_set(rot.a) == reset_at and rot.logs_on(before)
    # The label is gone, so Secrets Manager would start the next rotation anew.
    assert "AWSPENDING" not in rot.stages().get(token, []) and rot.value() == before
    no_leak(fn, rot)


def test_a_scheduled_event_is_refused_in_secrets_manager_mode(fn, rot, aws):
    scheduled = json.loads((ROOT / "events" / "rotate-password" / "scheduled.json").read_text())
    for event in ({}, scheduled, {"dryRun": True}):
        kind, body = fn.run(rot.env(), event)
        assert kind == "error" and body.get("errorType") == "InvalidEvent", body
        assert f"aws secretsmanager rotate-secret --secret-id {rot.arn}" in body["errorMessage"], body
    assert list(rot.stages().values()).count(["AWSCURRENT"]) == 1 and rot.current_logs_on()
    # And the other way round: a step sent to the function in SSM mode.
    kind, body = fn.run({**ENVIRONMENT, "PARAMETER_PREFIX": "/fargate-smb-test/none", "ACCOUNTS": rot.accounts,
                         "ADMIN_PASSWORD_PARAMETER": rot.admin_parameter}, rot.event("createSecret", str(uuid.uuid4())))
    assert kind == "error" and body.get("errorType") == "InvalidEvent", body
    assert "CREDENTIAL_STORE=ssm-parameters" in body["errorMessage"], body
    assert f"cancel-rotate-secret --secret-id {rot.arn}" in body["errorMessage"], body
    assert "Custom::SsmParameters" not in body["errorMessage"], "refused before any parameter is read"


def test_rotation_disabled_is_refused(fn, aws, ecs, tmp_path):
    rot = Rotation(aws, ecs, tmp_path)
    rot.sm.create_secret(Name=f"{rot.name}-off", SecretString=json.dumps(rot.value()))
    off = rot.sm.describe_secret(SecretId=f"{rot.name}-off")["ARN"]
    rot.sm.rotate_secret(SecretId=off, RotateImmediately=False)  # moto: rotation requested, not enabled
    assert rot.sm.describe_secret(SecretId=off)["RotationEnabled"] is False
    token = str(uuid.uuid4())
    kind, body = fn.run(rot.env(SECRET_ID=off), rot.event("createSecret", token, secret_id=off))
    assert kind == "error" and "RotationEnabled false" in body["errorMessage"], body
    assert token not in rot.sm.describe_secret(SecretId=off)["VersionIdsToStages"]


def test_single_account_mode_has_its_outage_window_between_set_and_finish(fn, single):
    rot = single
    before = rot.value()
    token = str(uuid.uuid4())
    assert step(fn, rot, "createSecret", token)["account"] == f"EXAMPLE\\{rot.a}"
    pending = rot.value("AWSPENDING", token)
    assert pending["username"] == before["username"] and pending["password"] != before["password"]
    assert step(fn, rot, "setSecret", token)["outcome"] == "set"
    assert rot.logs_on(pending) and not rot.current_logs_on(), "the window: AWSCURRENT no longer logs on"
    assert step(fn, rot, "testSecret", token)["outcome"] == "proven"
    assert step(fn, rot, "finishSecret", token)["outcome"] == "finished"
    assert rot.value() == pending and rot.current_logs_on()
    no_leak(fn, rot)


def test_single_account_mode_a_failed_proof_says_awscurrent_is_dead(fn, single):
    rot = single
    token = str(uuid.uuid4())
    step(fn, rot, "createSecret", token)
    step(fn, rot, "setSecret", token)
    message = failing(fn, rot, "testSecret", token, SMB_PORT="1")
    assert "AWSCURRENT no longer logs on" in message and "AWSCURRENT is unchanged" not in message, message
    assert not rot.current_logs_on()
    assert step(fn, rot, "setSecret", token)["outcome"] == "set", "reset again after the failed proof"
    step(fn, rot, "testSecret", token)
    step(fn, rot, "finishSecret", token)
    assert rot.current_logs_on()
    no_leak(fn, rot)


def test_the_value_less_version_secrets_manager_makes_before_create_secret(fn, rot):
    """On AWS, RotateSecret makes the token's AWSPENDING version without a value before it calls
    createSecret. moto makes it too when RotateSecret names a function it cannot find (it then
    fails, after the version is made). createSecret fills that version in; testSecret on a
    value-less version (Secrets Manager's test of the configuration) proves AWSCURRENT."""
    token = str(uuid.uuid4())
    with pytest.raises(rot.sm.exceptions.ResourceNotFoundException):
        rot.sm.rotate_secret(SecretId=rot.arn, ClientRequestToken=token, RotationRules={"AutomaticallyAfterDays": 30},
                             RotationLambdaARN="arn:aws:lambda:us-east-1:123456789012:function:not-in-moto")
    assert rot.stages().get(token) == ["AWSPENDING"], "moto made the value-less pending version"
    with pytest.raises(rot.sm.exceptions.ResourceNotFoundException):
        rot.sm.get_secret_value(SecretId=rot.arn, VersionId=token, VersionStage="AWSPENDING")
    assert step(fn, rot, "testSecret", token)["outcome"] == "proven-current"
    assert "the token's AWSPENDING version holds no value" in failing(fn, rot, "setSecret", token)
    assert step(fn, rot, "createSecret", token)["outcome"] == "created"
    for name in ("setSecret", "testSecret", "finishSecret"):
        step(fn, rot, name, token)
    assert rot.value()["username"] == f"EXAMPLE\\{rot.b}" and rot.current_logs_on()
    no_leak(fn, rot)

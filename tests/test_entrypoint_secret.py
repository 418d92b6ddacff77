"""The entrypoint with its credential in AWS Secrets Manager (`SMB_CREDENTIAL_SECRET`), read with
the task role (CredentialDelivery=task-role, CredentialStore=secrets-manager): the secret in moto,
the real SDK and credential provider, Samba for the preflight, the fake tools for PowerShell and
appcmd; under Linux and under Wine."""

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from test_entrypoint import (TASK_ROLE_VARS, assert_no_secret, build, credential_endpoint,  # noqa: F401 (fixtures)
                             json_lines, main_env, tool_env_names, user, win_path)


def put_secret(aws, value: str | bytes) -> str:
    """A new secret holding `value` (JSON text, or bytes as a binary secret); returns its ARN."""
    name = f"fargate-smb-test/{uuid.uuid4().hex[:8]}"
    kind = {"SecretBinary": value} if isinstance(value, bytes) else {"SecretString": value}
    return aws.secretsmanager.create_secret(Name=name, **kind)["ARN"]


def secret_env(moto_url: str, secret: str, **extra) -> dict:
    """As the template's task-role delivery gives it: the share, the secret's ARN, no AWS
    credentials (the test adds them), and no profile files the SDK could find instead."""
    return {"SMB_SHARE": "\\\\127.0.0.1\\share", "SMB_CREDENTIAL_SECRET": secret, "SMB_DEADLINE_SECONDS": "1",
            "AWS_ENDPOINT_URL": moto_url, "AWS_REGION": "us-east-1",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials", "AWS_CONFIG_FILE": "/nonexistent/config",
            **extra}


STATIC_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def credential_json(user, **override) -> str:
    name, password = user
    return json.dumps({"username": f"EXAMPLE\\{name}", "password": password, "share": "\\\\127.0.0.1\\share",
                       **override})


def test_the_credential_comes_from_the_secret_and_reaches_only_powershell(
        build, user, aws, moto_url, credential_endpoint):
    name, password = user
    url, seen = credential_endpoint
    token_file = build.tmp / "token"
    token_file.write_text("token-from-the-file")
    arn = put_secret(aws, credential_json(user))
    env = secret_env(moto_url, arn, AWS_CONTAINER_CREDENTIALS_FULL_URI=url,
                     AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=win_path(token_file) if build.kind == "windows"
                     else str(token_file))

    doctor = build.run(["doctor"], env)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"credential from Secrets Manager secret {arn}" in doctor.stdout, doctor.stdout
    assert_no_secret(password, doctor.stdout, doctor.stderr)

    out = build.run(["--", *build.main_dump_env()], env)
    assert_no_secret(password, out.stdout, out.stderr)
    assert out.returncode == 0, out.stdout + out.stderr
    # The entrypoint read the secret with the task role, through the container provider.
    assert seen and set(seen) == {"token-from-the-file"}, seen
    mapping = next(c for c in build.tool_calls() if "FARGATE_SMB_PASSWORD" in c["env"])
    assert mapping["env"]["FARGATE_SMB_USERNAME"] == f"EXAMPLE\\{name}"
    assert mapping["env"]["FARGATE_SMB_PASSWORD"] == password
    for call in build.tool_calls():
        assert_no_secret(password, json.dumps(call["argv"]))
    # Only the mapping's PowerShell had the password; no other tool, nor the main process.
    assert sum(password in json.dumps(c["env"]) for c in build.tool_calls()) == 1
    main = main_env(out.stdout)
    assert "SMB_CREDENTIAL_SECRET" not in main, "no child needs the secret's id"
    assert not set(TASK_ROLE_VARS) & set(main), sorted(set(TASK_ROLE_VARS) & set(main))
    for names in tool_env_names(build):
        assert not set(TASK_ROLE_VARS) & names
    starting = next(e for e in json_lines(out.stdout) if e["message"] == "starting")
    assert starting["password_from"] == f'Secrets Manager secret {arn}, key "password"', starting
    assert starting["task_role"].startswith("the entrypoint's alone"), starting


@pytest.mark.parametrize("opt_in, kept", [(None, False), ("true", True)])
def test_the_static_keys_and_task_role_are_withheld_unless_the_application_keeps_them(
        build, user, aws, moto_url, opt_in, kept):
    task_role = {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/test-id",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9/never",
                 "AWS_CONTAINER_AUTHORIZATION_TOKEN": "test-token",
                 "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "C:\\no\\such\\token"}
    env = {**secret_env(moto_url, put_secret(aws, credential_json(user))), **STATIC_KEYS, **task_role}
    if opt_in:
        env["SMB_APP_USES_TASK_ROLE"] = opt_in
    out = build.run(["--", *build.main_dump_env()], env)
    assert_no_secret(user[1], out.stdout, out.stderr)
    assert out.returncode == 0, out.stdout + out.stderr
    main = main_env(out.stdout)
    if kept:
        assert {name: main.get(name) for name in TASK_ROLE_VARS} == task_role
    else:
        assert not set(TASK_ROLE_VARS) & set(main)
    assert ("AWS_ACCESS_KEY_ID" in main) == kept, sorted(main)


# ── each error: exit 3 (credential) or 2 (configuration), naming the secret and the key ─────

@pytest.mark.parametrize("value, expected", [
    (lambda u: credential_json(u, password=None), 'the key "password" is not a string'),
    (lambda u: json.dumps({"username": f"EXAMPLE\\{u[0]}"}), 'the key "password" is missing'),
    (lambda u: json.dumps({"password": u[1]}), 'the key "username" is missing'),
    (lambda u: credential_json(u, username=7), 'the key "username" is not a string'),
    (lambda u: credential_json(u, username=u[0]), 'the key "username" is not a user name'),
    (lambda u: credential_json(u, share=["\\\\127.0.0.1\\share"]), 'the key "share" is not a string'),
    # The bare password, as a plain-text secret or a JSON string: never echoed back.
    (lambda u: u[1], "is not JSON"),
    (lambda u: json.dumps(u[1]), "is JSON but not an object"),
    (lambda u: u[1].encode(), "holds a binary value"),
], ids=["password-null", "no-password", "no-username", "username-number", "bare-username", "share-list",
        "plain-text", "json-string", "binary"])
def test_a_secret_of_the_wrong_shape_names_the_secret_and_the_key(build, user, aws, moto_url, value, expected):
    arn = put_secret(aws, value(user))
    env = {**secret_env(moto_url, arn), **STATIC_KEYS}
    doctor = build.run(["doctor"], env)
    assert doctor.returncode == 3, doctor.stdout + doctor.stderr
    assert "[credential]" in doctor.stdout and expected in doctor.stdout and arn in doctor.stdout, doctor.stdout
    out = build.run(["--", *build.main_exit(0)], env)
    assert out.returncode == 3, out.stdout + out.stderr
    error = next(e for e in json_lines(out.stdout) if e.get("code") == "credential")
    assert expected in error["error"] and arn in error["error"], error
    assert_no_secret(user[1], doctor.stdout, doctor.stderr, out.stdout, out.stderr)
    assert not build.tool_calls(), "nothing was mapped"


def test_a_secret_that_does_not_exist(build, user, aws, moto_url):
    arn = put_secret(aws, credential_json(user))
    missing = arn.replace("fargate-smb-test/", "fargate-smb-test/gone-")
    env = {**secret_env(moto_url, missing), **STATIC_KEYS}
    out = build.run(["doctor"], env)
    assert out.returncode == 3, out.stdout + out.stderr
    assert f"Secrets Manager secret {missing} (SMB_CREDENTIAL_SECRET) does not exist" in out.stdout, out.stdout
    assert "[credential]" in out.stdout


@pytest.fixture
def denying_endpoint():
    """Secrets Manager answering AccessDeniedException, as AWS does to a role without
    secretsmanager:GetSecretValue: moto (which does not enforce IAM here) cannot play that."""
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.dumps({"__type": "AccessDeniedException",
                               "message": "User is not authorized to perform: secretsmanager:GetSecretValue"}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("x-amzn-ErrorType", "AccessDeniedException")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_access_denied_says_what_the_task_role_needs(build, moto_url, denying_endpoint):
    secret = "fargate-smb-test/denied"
    env = {**secret_env(moto_url, secret, AWS_ENDPOINT_URL_SECRETS_MANAGER=denying_endpoint), **STATIC_KEYS}
    out = build.run(["doctor"], env)
    assert out.returncode == 3, out.stdout + out.stderr
    assert f"reading Secrets Manager secret {secret} (SMB_CREDENTIAL_SECRET) was denied" in out.stdout, out.stdout
    assert "secretsmanager:GetSecretValue" in out.stdout and "kms:Decrypt" in out.stdout


@pytest.mark.parametrize("other", ["SMB_USERNAME", "SMB_PASSWORD", "SMB_USERNAME_PARAMETER", "SMB_PASSWORD_PARAMETER",
                                   "password"])
def test_the_secret_and_another_credential_source_are_a_configuration_error(build, user, aws, moto_url, other):
    env = {**secret_env(moto_url, "fargate-smb-test/any"), **STATIC_KEYS, other: "EXAMPLE\\x"}
    doctor = build.run(["doctor"], env)
    assert doctor.returncode == 2, doctor.stdout + doctor.stderr
    assert f"[config] set SMB_CREDENTIAL_SECRET or {other}, not both" in doctor.stdout, doctor.stdout
    out = build.run(["--", *build.main_exit(0)], env)
    assert out.returncode == 2, out.stdout + out.stderr
    error = next(e for e in json_lines(out.stdout) if e.get("code") == "config")
    assert f"set SMB_CREDENTIAL_SECRET or {other}, not both" in error["error"], error


def test_the_secrets_value_given_instead_of_its_id_is_refused_and_never_shown(build, user, moto_url):
    """The variable set from the task definition's `secrets` (the secret's value) instead of its
    `environment` (the ARN): a configuration error that repeats nothing of the value."""
    name, password = user
    value = credential_json(user)
    for args in (["doctor"], ["--", *build.main_exit(0)]):
        out = build.run(args, {**secret_env(moto_url, value), **STATIC_KEYS})
        assert out.returncode == 2, out.stdout + out.stderr
        assert "not a Secrets Manager secret ARN" in out.stdout, out.stdout
        assert_no_secret(password, out.stdout, out.stderr)
        assert '"password"' not in out.stdout

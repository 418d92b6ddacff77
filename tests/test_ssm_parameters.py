"""Custom::SsmParameters end to end: the real bootstrap, the Runtime API, a ResponseURL, moto.

Witnesses read SSM with boto3, independently of the function's own code.
"""

import json
import socket
import threading
import time
import uuid

import pytest

from lambda_harness import STACK_ID, CloudFormation

RESOURCE = "Custom::SsmParameters"


@pytest.fixture
def fn(launch, runtime, responses):
    bootstrap = launch("ssm-parameters", {"ALLOWED_PARAMETER_PATH": "/fargate-smb-test"})
    return bootstrap, CloudFormation(runtime, responses, RESOURCE, "ServiceAccountParameters")


@pytest.fixture
def key(aws):
    return aws.kms.create_key(Description="fargate-smb test key")["KeyMetadata"]["KeyId"]


def prefix() -> str:
    return f"/fargate-smb-test/{uuid.uuid4().hex[:10]}"


def props(p: str, **extra) -> dict:
    base = {"ParameterPrefix": p, "Username": "EXAMPLE\\svc-web", "SharePath": "\\\\fsx.example.test\\share\\web"}
    base.update(extra)
    return base


def read(aws, name: str) -> dict | None:
    try:
        return aws.ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]
    except aws.ssm.exceptions.ParameterNotFound:
        return None


def describe(aws, name: str) -> dict:
    found = aws.ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [name]}])["Parameters"]
    assert len(found) == 1, found
    return found[0]


def tags(aws, name: str) -> dict:
    got = aws.ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name)["TagList"]
    return {t["Key"]: t["Value"] for t in got}


def assert_no_leak(secrets: set[str], *texts) -> None:
    for secret in secrets:
        assert len(secret) >= 16
        for text in texts:
            assert secret not in text, "a password leaked"


def test_lifecycle_create_update_regenerate_rekey_delete(fn, aws, key):
    bootstrap, cfn = fn
    p = prefix()
    seen: set[str] = set()

    # Create.
    created = cfn.create(props(p, KmsKeyId=key, Tags=[{"Key": "team", "Value": "web"}]))
    assert created["Status"] == "SUCCESS", created
    assert created["PhysicalResourceId"] == p
    data = created["Data"]
    assert data["PasswordParameterName"] == f"{p}/password"
    assert data["PasswordParameterArn"] == f"arn:aws:ssm:us-east-1:123456789012:parameter{p}/password"
    assert data["UsernameParameterArn"].endswith(f"parameter{p}/username")
    assert data["SharePathParameterName"] == f"{p}/share"
    assert data["PasswordParameterVersion"] == "1"
    assert created["NoEcho"] is False
    password = read(aws, f"{p}/password")
    seen.add(password["Value"])
    assert password["Type"] == "SecureString"
    assert describe(aws, f"{p}/password")["KeyId"] == key
    assert len(password["Value"]) == 32
    assert any(c.isupper() for c in password["Value"]) and any(c.isdigit() for c in password["Value"])
    assert not set(password["Value"]) & set("\"'`$;,&|<>^%!(){}@ ")
    assert read(aws, f"{p}/username")["Value"] == "EXAMPLE\\svc-web"
    assert read(aws, f"{p}/username")["Type"] == "String"
    assert read(aws, f"{p}/share")["Value"] == "\\\\fsx.example.test\\share\\web"
    assert tags(aws, f"{p}/password") == {"team": "web", "fargate-smb:owner": f"{STACK_ID}/ServiceAccountParameters"}
    assert password["Value"] not in json.dumps(created)

    # Update without PasswordVersion change: username and tags change, password does not.
    old = props(p, KmsKeyId=key, Tags=[{"Key": "team", "Value": "web"}])
    new = props(p, KmsKeyId=key, Username="svc-web2@example.test", PasswordLength="40", Tags=[{"Key": "env", "Value": "prod"}])
    updated = cfn.update(p, new, old)
    assert updated["Status"] == "SUCCESS", updated
    assert updated["PhysicalResourceId"] == p
    assert read(aws, f"{p}/password")["Value"] == password["Value"]
    assert read(aws, f"{p}/password")["Version"] == 1
    assert read(aws, f"{p}/username")["Value"] == "svc-web2@example.test"
    assert tags(aws, f"{p}/username") == {"env": "prod", "fargate-smb:owner": f"{STACK_ID}/ServiceAccountParameters"}

    # Update with a new PasswordVersion: a new password under the new rules.
    regen = dict(new, PasswordVersion="2")
    updated = cfn.update(p, regen, new)
    assert updated["Status"] == "SUCCESS", updated
    second = read(aws, f"{p}/password")
    seen.add(second["Value"])
    assert second["Value"] != password["Value"]
    assert len(second["Value"]) == 40
    assert second["Version"] == 2
    assert updated["Data"]["PasswordParameterVersion"] == "2"

    # Update with another KMS key: same password, re-encrypted.
    key2 = aws.kms.create_key(Description="second key")["KeyMetadata"]["KeyId"]
    rekey = dict(regen, KmsKeyId=key2)
    updated = cfn.update(p, rekey, regen)
    assert updated["Status"] == "SUCCESS", updated
    assert read(aws, f"{p}/password")["Value"] == second["Value"]
    assert describe(aws, f"{p}/password")["KeyId"] == key2

    # Delete, then Delete again (CloudFormation retries): both succeed, everything is gone.
    for _ in range(2):
        deleted = cfn.delete(p, rekey)
        assert deleted["Status"] == "SUCCESS", deleted
        assert deleted["PhysicalResourceId"] == p
        for leaf in ("username", "password", "share"):
            assert read(aws, f"{p}/{leaf}") is None

    assert bootstrap.alive()
    assert_no_leak(seen, bootstrap.output(), *(json.dumps(r) for r in cfn.sent))
    # Every log line is a JSON object (CloudWatch-friendly).
    for line in bootstrap.stdout_lines():
        assert isinstance(json.loads(line), dict), line


def test_repeated_create_adopts_and_keeps_the_password(fn, aws):
    _, cfn = fn
    p = prefix()
    first = cfn.create(props(p))
    assert first["Status"] == "SUCCESS", first
    before = read(aws, f"{p}/password")["Value"]
    again = cfn.create(props(p, SharePath="//fsx2.example.test/share"))
    assert again["Status"] == "SUCCESS", again
    assert read(aws, f"{p}/password")["Value"] == before
    assert read(aws, f"{p}/share")["Value"] == "\\\\fsx2.example.test\\share"


def test_replacement_on_prefix_change_then_old_delete(fn, aws):
    _, cfn = fn
    old_p, new_p = prefix(), prefix()
    assert cfn.create(props(old_p))["Status"] == "SUCCESS"
    replaced = cfn.update(old_p, props(new_p), props(old_p))
    assert replaced["Status"] == "SUCCESS", replaced
    assert replaced["PhysicalResourceId"] == new_p
    assert read(aws, f"{new_p}/password") is not None
    assert read(aws, f"{old_p}/password") is not None  # CloudFormation deletes the old one itself
    assert cfn.delete(old_p, props(old_p))["Status"] == "SUCCESS"
    assert read(aws, f"{old_p}/password") is None
    assert read(aws, f"{new_p}/password") is not None


def test_a_foreign_parameter_is_refused_and_nothing_is_left_half_made(fn, aws):
    bootstrap, cfn = fn
    p = prefix()
    aws.ssm.put_parameter(Name=f"{p}/password", Value="someone-elses-Secret-1", Type="SecureString")
    failed = cfn.create(props(p))
    assert failed["Status"] == "FAILED"
    assert f"{p}/password already exists and was not created by this resource" in failed["Reason"]
    assert "choose another ParameterPrefix" in failed["Reason"]
    assert failed["PhysicalResourceId"].startswith("create-failed:")
    # The parameters this Create made before it hit the foreign one were rolled back.
    assert read(aws, f"{p}/share") is None and read(aws, f"{p}/username") is None
    # CloudFormation's rollback Delete succeeds and leaves the foreign parameter alone.
    deleted = cfn.delete(failed["PhysicalResourceId"], props(p))
    assert deleted["Status"] == "SUCCESS", deleted
    assert read(aws, f"{p}/password")["Value"] == "someone-elses-Secret-1"
    # Even a Delete aimed at the prefix itself does not take what is not ours.
    assert cfn.delete(p, props(p))["Status"] == "SUCCESS"
    assert read(aws, f"{p}/password")["Value"] == "someone-elses-Secret-1"
    assert "someone-elses-Secret-1" not in bootstrap.output()


@pytest.mark.parametrize(
    "change, named, fix",
    [
        ({"Username": "svc-web"}, "Username", "DOMAIN\\name"),
        ({"SharePath": "fsx.example.test/share"}, "SharePath", "\\\\server\\share"),
        ({"PasswordLength": "abc"}, "ResourceProperties.PasswordLength", "expected a number"),
        ({"PasswordLength": "12"}, "PasswordLength", "16 to 127"),
        ({"RetainOnDelete": "maybe"}, "ResourceProperties.RetainOnDelete", "expected true or false"),
        ({"PasswordLenght": "20"}, "unknown field `PasswordLenght`", "expected one of"),
        ({"KmsKeyId": "not a key"}, "KmsKeyId", "key ARN"),
        ({"ParameterPrefix": "/elsewhere/web"}, "ParameterPrefix", "ALLOWED_PARAMETER_PATH"),
    ],
)
def test_bad_properties_fail_naming_the_property_and_write_nothing(fn, aws, change, named, fix):
    bootstrap, cfn = fn
    p = prefix()
    document = props(p)
    document.update(change)
    failed = cfn.create(document)
    assert failed["Status"] == "FAILED", failed
    assert named in failed["Reason"] and fix in failed["Reason"], failed["Reason"]
    assert "log stream:" in failed["Reason"]
    assert aws.ssm.get_parameters_by_path(Path=p, Recursive=True)["Parameters"] == []
    assert bootstrap.alive()


def test_missing_property_is_named(fn):
    _, cfn = fn
    document = props(prefix())
    del document["SharePath"]
    failed = cfn.create(document)
    assert failed["Status"] == "FAILED"
    assert "missing field `SharePath`" in failed["Reason"], failed["Reason"]


def test_cloudformation_string_values_and_password_rules(fn, aws):
    _, cfn = fn
    p = prefix()
    created = cfn.create(props(p, PasswordLength="20", PasswordSymbols="false", PasswordExcludeCharacters="0O1lI"))
    assert created["Status"] == "SUCCESS", created
    value = read(aws, f"{p}/password")["Value"]
    assert len(value) == 20 and value.isalnum() and not set(value) & set("0O1lI")


def test_retain_on_delete_keeps_the_parameters(fn, aws):
    _, cfn = fn
    p = prefix()
    assert cfn.create(props(p, RetainOnDelete="true"))["Status"] == "SUCCESS"
    assert cfn.delete(p, props(p, RetainOnDelete="true"))["Status"] == "SUCCESS"
    assert read(aws, f"{p}/password") is not None


def test_a_parameter_deleted_by_hand_is_recreated_on_update(fn, aws):
    _, cfn = fn
    p = prefix()
    assert cfn.create(props(p))["Status"] == "SUCCESS"
    aws.ssm.delete_parameter(Name=f"{p}/password")
    updated = cfn.update(p, props(p), props(p))
    assert updated["Status"] == "SUCCESS", updated
    assert len(read(aws, f"{p}/password")["Value"]) == 32


def test_an_init_failure_is_answered_on_every_event_and_serving_goes_on(launch, runtime, responses):
    bootstrap = launch("ssm-parameters", {"ALLOWED_PARAMETER_PATH": "relative/path"})
    cfn = CloudFormation(runtime, responses, RESOURCE)
    for _ in range(2):
        failed = cfn.create(props(prefix()))
        assert failed["Status"] == "FAILED"
        assert "could not initialise" in failed["Reason"] and "ALLOWED_PARAMETER_PATH" in failed["Reason"], failed
    # The Delete that follows a failed Create needs no initialisation.
    deleted = cfn.delete(failed["PhysicalResourceId"], props(prefix()))
    assert deleted["Status"] == "SUCCESS"
    assert bootstrap.alive()


@pytest.fixture
def blackhole():
    """A TCP endpoint that accepts connections and never answers: SSM hanging."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    for c in held:
        c.close()
    server.close()


def test_a_hanging_dependency_is_answered_before_the_deadline(launch, runtime, responses, blackhole):
    bootstrap = launch("ssm-parameters", {"AWS_ENDPOINT_URL": blackhole, "ALLOWED_PARAMETER_PATH": "/"})
    cfn = CloudFormation(runtime, responses, RESOURCE)
    started = time.monotonic()
    p = prefix()
    failed = cfn.create(props(p), deadline_s=4)
    answered = time.monotonic() - started
    assert failed["Status"] == "FAILED"
    assert "did not finish within" in failed["Reason"], failed["Reason"]
    assert answered < 4, f"answered {answered:.1f} s after the request, past the 4 s deadline"
    # Cut short, the Create could not clean up after itself: it answers the id it worked under,
    # so the rollback's Delete reaches the handler (SSM still hangs: answered FAILED, in time).
    assert failed["PhysicalResourceId"] == p, failed
    started = time.monotonic()
    deleted = cfn.delete(p, props(p), deadline_s=4)
    assert deleted["Status"] == "FAILED" and "did not finish within" in deleted["Reason"], deleted
    assert "--retain-resources" in deleted["Reason"], deleted
    assert time.monotonic() - started < 4
    assert bootstrap.alive()


def test_the_sample_events_work_as_shipped(fn, aws, responses):
    """events/ssm-parameters/*.json, with only the endpoint, prefix and key made local."""
    from lambda_harness import ROOT

    _, cfn = fn
    p = prefix()
    key_id = aws.kms.create_key()["KeyMetadata"]["KeyId"]
    passwords = []

    def localise(event: dict) -> dict:
        event = json.loads(json.dumps(event).replace("/fargate-smb/web", p).replace("alias/fargate-smb", key_id))
        event["ResponseURL"] = responses.url(event["RequestId"])
        return event

    for name in ("create", "update", "update-regenerate-password", "delete"):
        event = json.loads((ROOT / "events" / "ssm-parameters" / f"{name}.json").read_text())
        answer = cfn.send(localise(event))
        assert answer["Status"] == "SUCCESS", (name, answer)
        found = read(aws, f"{p}/password")
        passwords.append(found and found["Value"])
    create, update, regenerate, delete = passwords
    assert create == update and regenerate != update and delete is None


def test_an_update_leaves_a_rotated_username_alone_unless_the_property_changes(fn, aws):
    """After a rotation switched the username to the other account of the pair, a stack update
    that does not change the Username property must not switch it back (the password in SSM
    belongs to the rotated account); changing the property still writes it."""
    _, cfn = fn
    p = prefix()
    created = cfn.create(props(p, Username="EXAMPLE\\svc-web-a"))
    assert created["Status"] == "SUCCESS", created
    aws.ssm.put_parameter(Name=f"{p}/username", Value="EXAMPLE\\svc-web-b", Type="String", Overwrite=True)  # as the rotation does
    old = props(p, Username="EXAMPLE\\svc-web-a")
    updated = cfn.update(p, props(p, Username="EXAMPLE\\svc-web-a", SharePath="\\\\fsx2.example.test\\share"), old)
    assert updated["Status"] == "SUCCESS", updated
    assert read(aws, f"{p}/username")["Value"] == "EXAMPLE\\svc-web-b"
    assert read(aws, f"{p}/share")["Value"] == "\\\\fsx2.example.test\\share"
    renamed = cfn.update(p, props(p, Username="EXAMPLE\\svc-new-a"), old)
    assert renamed["Status"] == "SUCCESS", renamed
    assert read(aws, f"{p}/username")["Value"] == "EXAMPLE\\svc-new-a"


def test_delete_removes_the_rotation_record_it_owns_and_nothing_foreign(fn, aws):
    _, cfn = fn
    p = prefix()
    created = cfn.create(props(p))
    assert created["Status"] == "SUCCESS", created
    owner = tags(aws, f"{p}/username")["fargate-smb:owner"]
    aws.ssm.put_parameter(Name=f"{p}/rotation", Value='{"state": "pending"}', Type="String",
                          Tags=[{"Key": "fargate-smb:owner", "Value": owner}])
    # The password of a rotation in progress, as the rotation function keeps it.
    aws.ssm.put_parameter(Name=f"{p}/rotation-pending", Value="Pending-Pw-0123456789", Type="SecureString",
                          Tags=[{"Key": "fargate-smb:owner", "Value": owner}])
    assert cfn.delete(p, props(p))["Status"] == "SUCCESS"
    assert read(aws, f"{p}/rotation") is None
    assert read(aws, f"{p}/rotation-pending") is None, "no copy of a password outlives the stack"
    # A record nobody tagged (made by hand, or by another tool) is not ours to delete.
    p2 = prefix()
    assert cfn.create(props(p2))["Status"] == "SUCCESS"
    aws.ssm.put_parameter(Name=f"{p2}/rotation", Value="{}", Type="String")
    assert cfn.delete(p2, props(p2))["Status"] == "SUCCESS"
    assert read(aws, f"{p2}/rotation") is not None
    assert read(aws, f"{p2}/username") is None


def test_a_prefix_respelled_in_case_is_a_real_replacement(fn, aws):
    """SSM parameter names are case-sensitive: /App and /app are different parameters, so unlike
    AD or NTFS names a respelled prefix is a genuine replacement and the old Delete removes only
    the old parameters."""
    _, cfn = fn
    base = prefix()
    old_p, new_p = f"{base}/svc", f"{base}/SVC"
    assert cfn.create(props(old_p))["Status"] == "SUCCESS"
    replaced = cfn.update(old_p, props(new_p), props(old_p))
    assert replaced["PhysicalResourceId"] == new_p
    assert cfn.delete(old_p, props(old_p))["Status"] == "SUCCESS"
    assert read(aws, f"{old_p}/password") is None
    assert read(aws, f"{new_p}/password") is not None
    assert cfn.delete(new_p, props(new_p))["Status"] == "SUCCESS"


def test_a_delete_with_another_versions_properties_removes_the_parameters(fn, aws):
    bootstrap, cfn = fn
    p = prefix()
    assert cfn.create(props(p))["Status"] == "SUCCESS"
    deleted = cfn.delete(p, {"Username": ["EXAMPLE\\svc-web"], "Tier": "Advanced", "Policies": [{"Type": "Expiration"}]})
    assert deleted["Status"] == "SUCCESS", deleted
    for slot in ("username", "password", "share"):
        assert read(aws, f"{p}/{slot}") is None
    assert "cannot read all the properties" in bootstrap.output()
    # RetainOnDelete is still honoured when the rest is unreadable.
    assert cfn.create(props(p))["Status"] == "SUCCESS"
    kept = cfn.delete(p, {"RetainOnDelete": "true", "Extra": 1})
    assert kept["Status"] == "SUCCESS", kept
    assert read(aws, f"{p}/password") is not None
    assert cfn.delete(p, props(p))["Status"] == "SUCCESS"


def test_an_unreadable_retain_on_delete_keeps_the_parameters(fn, aws):
    _, cfn = fn
    p = prefix()
    assert cfn.create(props(p))["Status"] == "SUCCESS"
    kept = cfn.delete(p, props(p, RetainOnDelete="only-in-prod"))
    assert kept["Status"] == "SUCCESS", kept
    assert read(aws, f"{p}/password") is not None, "an unreadable RetainOnDelete deleted the parameters"
    assert cfn.delete(p, props(p))["Status"] == "SUCCESS"

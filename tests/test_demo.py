"""The local demo against the current template: scripts/demo.py resolves cloudformation/template.yaml
with scripts/demo-parameters.json and runs the whole lifecycle on the local stack, in
CloudFormation's dependency waves (from cfn-lint's template graph): create, the container's
preflight, content sync, rotation, update, a replacement by spelling only, Deletes carrying another
version's properties, the stack delete, a second stack whose create fails and rolls back, and the
leak check. The security-group rules gate the functions' paths to the share and the DC (loopback
forwarders), so a template that lets a rule go before the resource that needs it fails here, as
the stack would fail on AWS. Also the template reader alone (scripts/cfn_local.py), no stack."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lambda_harness import ROOT, binary

sys.path.insert(0, str(ROOT / "scripts"))

import cfn_local  # noqa: E402

DEMO = ROOT / "scripts" / "demo.py"
TEMPLATE = ROOT / "cloudformation" / "template.yaml"
PHASES = ["── Template", "── Create", "── The container's preflight", "── Content sync", "── Password rotation",
          "── Stack update (", "── Stack update: a replacement by spelling only", "── Deletes carrying another version's properties",
          "── Stack delete", "── Rollback", "── Leak check"]


def run_demo(*args, timeout=150) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DEMO), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_plan_only_resolves_the_template():
    out = run_demo("--plan-only", timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    waves = [line.strip() for line in out.stdout.splitlines() if line.strip().startswith("wave ")]
    assert waves and waves[0].startswith("wave 1: "), out.stdout
    for resource in ("ServiceAccountParameters", "ServiceAccount", "WebFolderAcl", "WebContent"):
        assert f"{resource} (custom)" in out.stdout, out.stdout
    assert "FileServerIngressFromFunctions (network)" in out.stdout
    assert "demo passed" in out.stdout


def steps_of(out: subprocess.CompletedProcess) -> list[str]:
    return [line for line in out.stdout.splitlines() if line[:3].strip().isdigit() and ". " in line[:6]]


def ok_step(steps: list[str], text: str) -> bool:
    return any(text in line and line.rstrip().endswith(" ok") for line in steps)


def built():
    for name in subprocess.run([sys.executable, str(DEMO), "--binaries"], capture_output=True, text=True,
                               check=True).stdout.split():
        binary(name)  # built (scripts/test builds everything first)


def test_the_whole_lifecycle_as_cloudformation_would(moto_url):
    built()
    out = run_demo(moto_url)
    assert out.returncode == 0, out.stdout + out.stderr
    for phase in PHASES:
        assert phase in out.stdout, f"phase {phase!r} missing:\n{out.stdout}"
    steps = steps_of(out)
    assert len(steps) >= 90, out.stdout
    # Every step ok: a step listed under KnownIssues in the parameters file fails this test too.
    bad = [line for line in steps if not line.rstrip().endswith(" ok")]
    assert not bad, "\n".join(bad)
    for request in ("Create Custom::SsmParameters", "Create Custom::AdServiceAccount", "Create Custom::ShareAcl",
                    "Create Custom::WebContent", "Update Custom::SsmParameters", "Update Custom::AdServiceAccount",
                    "Update Custom::ShareAcl", "Update Custom::WebContent", "Delete Custom::WebContent",
                    "Delete Custom::ShareAcl", "Delete Custom::AdServiceAccount", "Delete Custom::SsmParameters"):
        assert ok_step(steps, request), f"{request} not ok:\n{out.stdout}"
    # The network rules gate the functions' paths: opened in the create waves, closed in the delete waves.
    for path in ("functions -> file server", "functions -> domain controller"):
        assert ok_step(steps, f"network: {path} open; witness"), out.stdout
        assert ok_step(steps, f"network: {path} closed; witness"), out.stdout
    # The replacement (issue 13 section 1): Update answered with new ids, the old ids' Deletes in the
    # cleanup phase, and the objects the new ids own intact afterwards.
    for text in ("the spelling change made CloudFormation replace resources", "cleanup: Delete the replaced ServiceAccount",
                 "cleanup: Delete the replaced WebFolderAcl", "cleanup: Delete the replaced WebContent",
                 "still exist after the old id's Delete", "the active account still logs on", "witness (smbcacls): the grant for",
                 "witness (smbclient): the content is still in"):
        assert ok_step(steps, text), f"{text} not ok:\n{out.stdout}"
    # Deletes with another version's properties (section 2) succeed and remove what the id owns.
    for text in ("with an unknown extra property", "without its required AccountName"):
        assert ok_step(steps, text), f"{text} not ok:\n{out.stdout}"
    assert ok_step(steps, "stack status after the delete") and "DELETE_COMPLETE" in out.stdout
    # The rollback: a failure injected at the ECS service, everything deleted in waves, nothing left.
    assert ok_step(steps, "Create AWS::ECS::Service WebService: a failure is injected here")
    assert ok_step(steps, "stack status after the rollback") and "ROLLBACK_COMPLETE" in out.stdout
    for text in ("no account or group of ours", "no SSM parameter under", "no ACE of ours on"):
        assert ok_step(steps, text), f"{text} not ok:\n{out.stdout}"
    assert "no password in any log line or CloudFormation message" in out.stdout
    assert "demo passed" in out.stdout


def test_a_failed_custom_resource_create_rolls_back_with_its_create_failed_id(moto_url):
    built()
    out = run_demo(moto_url, "--fail-create", "WebFolderAcl")
    assert out.returncode == 0, out.stdout + out.stderr
    steps = steps_of(out)
    assert ok_step(steps, "Create Custom::ShareAcl WebFolderAcl: a failure is injected here"), out.stdout
    assert ok_step(steps, "Delete Custom::ShareAcl WebFolderAcl (create-failed:"), out.stdout
    assert not any("Create Custom::WebContent" in line for line in steps), "nothing after the failure is created"
    assert ok_step(steps, "stack status after the rollback") and "ROLLBACK_COMPLETE" in out.stdout
    for text in ("no account or group of ours", "no SSM parameter under", "no ACE of ours on"):
        assert ok_step(steps, text), f"{text} not ok:\n{out.stdout}"
    assert "demo passed" in out.stdout


def test_a_rule_deleted_before_the_resource_that_needs_it_fails_the_delete(moto_url, tmp_path):
    """The gate works: with the DependsOn on the functions' ingress rule removed (the template before
    issue 13 section 4), CloudFormation deletes the rule in the first waves and the share ACL's
    Delete can no longer reach port 445: DELETE_FAILED, as on AWS."""
    built()
    template = __import__("yaml").load(TEMPLATE.read_text(), Loader=cfn_local.TemplateLoader)
    rules = {lid for lid, r in template["Resources"].items()
             if r.get("Type") in ("AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress")}
    for r in template["Resources"].values():
        deps = r.get("DependsOn")
        if deps is not None:
            kept = [d for d in ([deps] if isinstance(deps, str) else deps) if d not in rules]
            if kept:
                r["DependsOn"] = kept
            else:
                del r["DependsOn"]
    broken = tmp_path / "template-without-rule-dependencies.json"
    broken.write_text(json.dumps(template))
    out = run_demo(moto_url, "--template", str(broken), "--scenario", "create-delete")
    assert out.returncode == 1, out.stdout + out.stderr
    steps = steps_of(out)
    closed = next(i for i, line in enumerate(steps) if "network: functions -> file server closed" in line)
    failed = [line for line in steps if line.rstrip().endswith("FAILED")]
    assert any("Delete Custom::" in line for line in failed), out.stdout
    assert all(steps.index(line) > closed for line in failed), "the Delete fails after the rule went"
    assert "DELETE_FAILED" in out.stdout
    # The demo then deletes what is left as an operator would (rules back, Delete again): no litter.
    assert "left by the failed delete: Delete again -> SUCCESS" in out.stdout, out.stdout


# ── the template reader alone ────────────────────────────────────────────────────────────────

def load(text: str) -> dict:
    return __import__("yaml").load(textwrap.dedent(text), Loader=cfn_local.TemplateLoader)


def test_short_form_tags_become_the_long_form():
    t = load("""
        A: !Ref X
        B: !GetAtt Res.Attr
        C: !Sub "${AWS::StackName}-x"
        D: !Join [",", [a, !Ref X]]
        E: !If [Cond, 1, !Ref AWS::NoValue]
        F: !Select [0, !Split [",", "a,b"]]
        G: !Equals [!Ref X, y]
        H: !Not [!Condition Cond]
        I: !And [!Condition Cond, !Or [!Condition Cond, !Condition Cond]]
        J: !FindInMap [M, k1, k2]
        K: !ImportValue exported
        L: !Base64 text
        M: !GetAZs ""
    """)
    assert t["A"] == {"Ref": "X"} and t["B"] == {"Fn::GetAtt": ["Res", "Attr"]}
    assert t["D"] == {"Fn::Join": [",", ["a", {"Ref": "X"}]]}
    assert t["H"] == {"Fn::Not": [{"Condition": "Cond"}]}
    assert set(t["I"]) == {"Fn::And"} and t["M"] == {"Fn::GetAZs": ""}


def test_intrinsics_resolve_against_parameters_conditions_and_answers():
    template = load("""
        Parameters:
          X: {Type: String, Default: y}
          L: {Type: CommaDelimitedList, Default: "a,b"}
        Mappings:
          M: {k1: {k2: mapped}}
        Conditions:
          Cond: !Equals [!Ref X, y]
          Never: !Not [!Condition Cond]
        Resources:
          Fn: {Type: AWS::Serverless::Function, Properties: {}}
          R:
            Type: Custom::Thing
            Properties:
              ServiceToken: !GetAtt Fn.Arn
              Sub: !Sub "${AWS::StackName}/${X}/${Fn.Arn}/${!Literal}"
              SubVars: !Sub ["${A}-${B}", {A: !Ref X, B: !Select [1, !Ref L]}]
              Join: !Join ["+", !Ref L]
              Gone: !If [Never, x, !Ref AWS::NoValue]
              List: [a, !If [Never, x, !Ref AWS::NoValue], b]
              Map: !FindInMap [M, k1, k2]
              Import: !ImportValue shared
              B64: !Base64 hi
              Zone: !Select [0, !GetAZs ""]
              Num: 32
              Flag: true
    """)
    stack = cfn_local.Stack(template, {}, "s", imports={"shared": "imported"})
    stack.resources["Fn"] = cfn_local.Resolved("fn", {"Arn": "arn:fn"})
    props = cfn_local.as_cloudformation_sends(stack.resolve(template["Resources"]["R"]["Properties"]))
    assert props == {"ServiceToken": "arn:fn", "Sub": "s/y/arn:fn/${Literal}", "SubVars": "y-b", "Join": "a+b",
                     "List": ["a", "b"], "Map": "mapped", "Import": "imported", "B64": "aGk=", "Zone": "us-east-1a",
                     "Num": "32", "Flag": "true"}
    assert stack.conditions == {"Cond": True, "Never": False}


def demo_parameters() -> dict:
    """The parameters file with its placeholders filled as a run fills them."""
    text = (ROOT / "scripts" / "demo-parameters.json").read_text().replace("{run}", "abc123")
    text = text.replace("{file:FARGATE_SMB_CA}", "").replace("{env:FARGATE_SMB_OU}", "OU=fargate-smb,DC=example,DC=test")
    text = text.replace("{net:share}", "127.0.0.2").replace("{net:ldaps}", "127.0.0.1:1636")
    return json.loads(text)["Parameters"]


def test_a_reference_without_a_local_value_is_named():
    template = cfn_local.load_template(TEMPLATE)
    stack = cfn_local.Stack(template, demo_parameters(), "s")
    with pytest.raises(cfn_local.Unresolved, match=r"ServiceAccount\.Properties\.ServiceToken: Fn::GetAtt AdServiceAccountFunction\.Arn"):
        stack.resolve(template["Resources"]["ServiceAccount"]["Properties"], "ServiceAccount.Properties")
    with pytest.raises(cfn_local.Unresolved, match=r"TaskRole \(AWS::IAM::Role\)"):
        stack.resolve({"Ref": "TaskRole"}, "X")


def test_parameters_are_checked_as_cloudformation_checks_them():
    template = cfn_local.load_template(TEMPLATE)
    params = demo_parameters()
    with pytest.raises(cfn_local.Unresolved, match="ServiceAccountName.*AllowedPattern"):
        cfn_local.Stack(template, {**params, "ServiceAccountName": "bad*name"}, "s")
    with pytest.raises(cfn_local.Unresolved, match="exactly one of AdminSecretArn and AdminPasswordParameterName"):
        cfn_local.Stack(template, {**params, "AdminSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:x"}, "s")


def test_event_patterns_and_ordering():
    pattern = {"source": ["aws.s3"], "detail": {"object": {"key": [{"prefix": "site/"}]}}}
    assert cfn_local.pattern_matches(pattern, {"source": "aws.s3", "detail": {"object": {"key": "site/a"}}})
    assert not cfn_local.pattern_matches(pattern, {"source": "aws.s3", "detail": {"object": {"key": "other/a"}}})
    assert cfn_local.topological(["c", "b", "a"], {"c": {"b"}, "b": {"a"}}) == ["a", "b", "c"]
    with pytest.raises(cfn_local.Unresolved, match="circular"):
        cfn_local.topological(["a", "b"], {"a": {"b"}, "b": {"a"}})


def test_waves_follow_cloudformation_and_cfn_lint_s_graph():
    template = load("""
        Conditions:
          Never: !Equals [a, b]
        Resources:
          Group: {Type: AWS::EC2::SecurityGroup, Properties: {GroupDescription: g}}
          Rule: {Type: AWS::EC2::SecurityGroupIngress, Properties: {GroupId: !Ref Group, IpProtocol: tcp, FromPort: 445, ToPort: 445}}
          Fn: {Type: AWS::Serverless::Function, Properties: {VpcConfig: {SecurityGroupIds: [!Ref Group]}}}
          Acl: {Type: Custom::ShareAcl, DependsOn: Rule, Properties: {ServiceToken: !GetAtt Fn.Arn}}
          Other: {Type: AWS::SQS::Queue, Properties: {QueueName: !If [Never, !GetAtt Acl.Arn, plain]}}
          Off: {Type: AWS::SQS::Queue, Condition: Never}
    """)
    deps = cfn_local.dependency_graph(template, {"Never": False})
    assert "Off" not in deps, "a resource whose Condition is false is left out"
    assert deps["Other"] == set(), "an edge in an untaken Fn::If branch is dropped"
    assert deps["Acl"] == {"Rule", "Fn"}
    order = list(template["Resources"])
    assert cfn_local.creation_waves(deps, order) == [["Group", "Other"], ["Rule", "Fn"], ["Acl"]]
    assert cfn_local.deletion_waves(deps, order) == [["Acl", "Other"], ["Rule", "Fn"], ["Group"]]
    # Without the DependsOn, the rule is among the first to go, beside the resource that needs it.
    del deps["Acl"]
    deps["Acl"] = {"Fn"}
    assert cfn_local.deletion_waves(deps, order)[0] == ["Rule", "Acl", "Other"]


def test_generated_names_fit_the_service_limit_as_cloudformation_makes_them():
    short = cfn_local.generated_name("fargate-smb-demo-abc123", "SyncContentFunction", "0123abcd", 64)
    assert short == "fargate-smb-demo-abc123-SyncContentFunction-0123abcd"
    for stack_name in ("s" * 40, "s" * 128):
        for logical_id in ("AdServiceAccountFunction", "L" * 80):
            name = cfn_local.generated_name(stack_name, logical_id, "0123abcd", 64)
            assert len(name) == 64 and name.endswith("-0123abcd"), name
            head, lid, _ = name.rsplit("-", 2)
            assert stack_name.startswith(head) and logical_id.startswith(lid) and head and lid, name


def test_a_stack_name_of_cloudformations_full_128_characters_deploys_and_deletes(moto_url, tmp_path):
    # With FunctionNaming generated no name in the template is derived from the stack name with a
    # cap below 128 characters: the functions get no FunctionName (Lambda's limit is 64), and the
    # rest fits (tests/test_template.py).
    built()
    settings = json.loads((ROOT / "scripts" / "demo-parameters.json").read_text())
    settings["Parameters"]["FunctionNaming"] = "generated"
    settings["StackName"] = "fargate-smb-demo-".ljust(128 - len("-abc123"), "x") + "-{run}"  # {run}: 6 hex digits
    assert len(settings["StackName"].replace("{run}", "abc123")) == 128
    parameters = tmp_path / "parameters.json"
    parameters.write_text(json.dumps(settings))
    out = run_demo(moto_url, "--parameters", str(parameters), "--scenario", "create-delete")
    assert out.returncode == 0, out.stdout + out.stderr
    steps = steps_of(out)
    bad = [line for line in steps if not line.rstrip().endswith(" ok")]
    assert not bad, "\n".join(bad)
    assert ok_step(steps, "Create Custom::WebContent") and ok_step(steps, "stack status after the delete"), out.stdout
    assert "demo passed" in out.stdout


SM_PARAMETERS = ROOT / "scripts" / "demo-parameters-secrets-manager.json"


def test_plan_only_resolves_the_template_with_the_secret():
    out = run_demo("--plan-only", "--parameters", str(SM_PARAMETERS), timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    for resource in ("ServiceAccountSecret (stand-in)", "SecretRotationSchedule (stand-in)",
                     "RotatePasswordSecretsManagerPermission (stand-in)", "ServiceAccount (custom)"):
        assert resource in out.stdout, out.stdout
    assert "ServiceAccountParameters (custom)" not in out.stdout and "left out by their Condition" in out.stdout
    assert "demo passed" in out.stdout


def test_the_whole_lifecycle_with_the_credential_in_secrets_manager(moto_url):
    """CredentialStore secrets-manager: the secret as GenerateSecretString makes it, the account
    reading it, ECS's JSON-key injection and the task-role read, Secrets Manager's four rotation
    steps played against the real rotation function with smbclient as the witness of every stage,
    the update that writes a new value, the delete and rollback that remove the secret, and the
    leak check over every version the secret held."""
    built()
    out = run_demo(moto_url, "--parameters", str(SM_PARAMETERS))
    assert out.returncode == 0, out.stdout + out.stderr
    for phase in PHASES:
        assert phase in out.stdout, f"phase {phase!r} missing:\n{out.stdout}"
    steps = steps_of(out)
    bad = [line for line in steps if not line.rstrip().endswith(" ok")]
    assert not bad, "\n".join(bad)
    assert not any("Custom::SsmParameters" in line for line in steps), "no SSM parameters in this store"
    for text in ("witness (boto3): the secret as GenerateSecretString makes it", "Create Custom::AdServiceAccount",
                 "the active account logs on with the password from the secret's AWSCURRENT value",
                 "from the secret's JSON keys, <arn>:username:: and <arn>:password::",
                 "the entrypoint reads the secret itself (the template's SMB_CREDENTIAL_SECRET)"):
        assert ok_step(steps, text), f"{text} not ok:\n{out.stdout}"
    # The rotation phase: the four steps in Secrets Manager's order, each followed by its witnesses.
    rotation = out.stdout.split("── Password rotation")[1].split("── Stack update")[0]
    assert "Secrets Manager's rotation protocol" in rotation.splitlines()[0]
    rotation_steps = steps_of(subprocess.CompletedProcess([], 0, rotation, ""))
    assert ok_step(rotation_steps, "a Lambda permission lets secretsmanager.amazonaws.com invoke it for this secret only")
    invoked = [line for line in rotation_steps if "Secrets Manager invokes" in line]
    assert [s for line in invoked for s in ("createSecret", "setSecret", "testSecret", "finishSecret") if f"with Step {s} " in line] == \
        ["createSecret", "setSecret", "testSecret", "finishSecret"], rotation
    for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        assert ok_step(rotation_steps, f"AWSCURRENT logs on after {step}"), rotation
    for text in ("AWSPENDING is the token's version: the other account", "AWSPENDING logs on after setSecret",
                 "VersionIdsToStages: AWSCURRENT on the token's version, AWSPREVIOUS on the old one",
                 "the newly active account logs on with AWSCURRENT", "(AWSPREVIOUS) still logs on with its old password",
                 "finishSecret forced a new deployment of the ECS service stand-in"):
        assert ok_step(rotation_steps, text), f"{text} not ok:\n{rotation}"
    # The update writes a new value (PasswordVersion), the account follows it; delete and rollback remove the secret.
    for text in ("Update AWS::SecretsManager::Secret ServiceAccountSecret", "CloudFormation wrote a new value",
                 "Update Custom::AdServiceAccount", "the secret ServiceAccountSecret is gone", "stack status after the delete",
                 "stack status after the rollback", "no secret of ours", "no password in any log line or CloudFormation message"):
        assert ok_step(steps, text), f"{text} not ok:\n{out.stdout}"
    assert "DELETE_COMPLETE" in out.stdout and "ROLLBACK_COMPLETE" in out.stdout
    assert "every SSM value and secret version seen" in out.stdout
    assert "demo passed" in out.stdout

"""The local demo against the current template: scripts/demo.py resolves cloudformation/template.yaml
with scripts/demo-parameters.json and runs the whole lifecycle (create, the container's preflight,
content sync, rotation, update, delete, leak check) on the local stack. A template change the demo
cannot follow (a parameter without a value, a reference with no local stand-in, a property a
function rejects) fails here. Also the template reader alone (scripts/cfn_local.py), no stack."""

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
          "── Stack update", "── Stack delete", "── Leak check"]


def run_demo(*args, timeout=90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DEMO), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_plan_only_resolves_the_template():
    out = run_demo("--plan-only", timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    for resource in ("ServiceAccountParameters", "ServiceAccount", "WebFolderAcl", "WebContent"):
        assert f"custom    {resource} " in out.stdout, out.stdout
    assert "demo passed" in out.stdout


def test_the_whole_lifecycle_as_cloudformation_would(moto_url):
    for name in subprocess.run([sys.executable, str(DEMO), "--binaries"], capture_output=True, text=True,
                               check=True).stdout.split():
        binary(name)  # built (scripts/test builds everything first)
    out = run_demo(moto_url)
    assert out.returncode == 0, out.stdout + out.stderr
    for phase in PHASES:
        assert phase in out.stdout, f"phase {phase!r} missing:\n{out.stdout}"
    steps = [line for line in out.stdout.splitlines() if line[:3].strip().isdigit() and ". " in line[:6]]
    assert len(steps) >= 40, out.stdout
    # Every step ok: a step listed under KnownIssues in the parameters file fails this test too.
    bad = [line for line in steps if not line.rstrip().endswith(" ok")]
    assert not bad, "\n".join(bad)
    for request in ("Create Custom::SsmParameters", "Create Custom::AdServiceAccount", "Create Custom::ShareAcl",
                    "Create Custom::WebContent", "Update Custom::SsmParameters", "Update Custom::AdServiceAccount",
                    "Update Custom::ShareAcl", "Update Custom::WebContent", "Delete Custom::WebContent",
                    "Delete Custom::ShareAcl", "Delete Custom::AdServiceAccount", "Delete Custom::SsmParameters"):
        assert any(request in line and line.rstrip().endswith(" ok") for line in steps), f"{request} not ok:\n{out.stdout}"
    assert "no password in any log line or CloudFormation message" in out.stdout
    assert "demo passed" in out.stdout


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

"""The local demo's lifecycle: see scripts/demo."""

import hashlib
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import boto3  # noqa: E402

from lambda_harness import Bootstrap, CloudFormation, ResponseUrl, RuntimeApi, binary  # noqa: E402

GREEN, RED, DIM, BOLD, RESET = ("\033[32m", "\033[31m", "\033[2m", "\033[1m", "\033[0m") if sys.stdout.isatty() else ("",) * 5


def fingerprint(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


def main(moto_url: str) -> int:
    ssm = boto3.client("ssm", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    kms = boto3.client("kms", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    runtime, responses = RuntimeApi(), ResponseUrl()
    bootstrap = Bootstrap(binary("ssm-parameters"), runtime, {"AWS_ENDPOINT_URL": moto_url, "ALLOWED_PARAMETER_PATH": "/fargate-smb"})
    cfn = CloudFormation(runtime, responses, "Custom::SsmParameters", "ServiceAccountParameters")
    prefix = f"/fargate-smb/demo-{uuid.uuid4().hex[:6]}"
    passwords: set[str] = set()
    failures = 0
    step_no = 0

    print(f"{BOLD}fargate-smb local demo{RESET}: Custom::SsmParameters on moto at {moto_url}")
    print(f"{DIM}the real Lambda bootstrap (target/debug/ssm-parameters) is driven through a local Lambda Runtime API;")
    print(f"its answers arrive at a local stand-in for CloudFormation's ResponseURL; boto3 reads SSM as the witness{RESET}\n")

    def step(title: str, action, expect: str = "SUCCESS"):
        nonlocal failures, step_no
        step_no += 1
        started = time.monotonic()
        answer = action()
        ms = (time.monotonic() - started) * 1000
        status = answer.get("Status") if isinstance(answer, dict) else "done"
        ok = status == expect or (expect == "done")
        mark = f"{GREEN}ok{RESET}" if ok else f"{RED}FAILED{RESET}"
        print(f"{step_no}. {title:<58} {status:<8} {ms:7.0f} ms  {mark}")
        if isinstance(answer, dict) and answer.get("Reason"):
            print(f"     reason: {answer['Reason']}")
        failures += 0 if ok else 1
        return answer

    def show(note: str = ""):
        for leaf in ("username", "share", "password"):
            try:
                p = ssm.get_parameter(Name=f"{prefix}/{leaf}", WithDecryption=True)["Parameter"]
            except ssm.exceptions.ParameterNotFound:
                print(f"     {prefix}/{leaf:<9} (absent)")
                continue
            if p["Type"] == "SecureString":
                passwords.add(p["Value"])
                key = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [p["Name"]]}])["Parameters"][0]["KeyId"]
                shown = f"SecureString, {len(p['Value'])} chars, KMS key {key[:8]}…, v{p['Version']}, {fingerprint(p['Value'])} (value never printed)"
            else:
                shown = f"{p['Value']}  (String, v{p['Version']})"
            print(f"     {prefix}/{leaf:<9} = {shown}")
        if note:
            print(f"     {DIM}{note}{RESET}")

    key = step("KMS key for the SecureString (boto3)", lambda: {"Status": "done", "KeyId": kms.create_key(Description="fargate-smb demo")["KeyMetadata"]["KeyId"]}, "done")["KeyId"]
    props = {"ParameterPrefix": prefix, "Username": "EXAMPLE\\svc-web", "SharePath": "\\\\fsx.example.test\\share\\web", "KmsKeyId": key, "PasswordVersion": "1", "Tags": [{"Key": "app", "Value": "web"}]}
    created = step(f"Create {prefix}", lambda: cfn.create(props))
    for k, v in sorted(created.get("Data", {}).items()):
        print(f"     GetAtt {k:<26} {v}")
    show()

    renamed = dict(props, Username="EXAMPLE\\svc-web-b")
    step("Update: Username changed, PasswordVersion unchanged", lambda: cfn.update(prefix, renamed, props))
    show("the password is the same (same fingerprint): it is generated once")

    regenerated = dict(renamed, PasswordVersion="2")
    step("Update: PasswordVersion 1 -> 2", lambda: cfn.update(prefix, regenerated, renamed))
    show("a new password (new fingerprint, version 2)")

    bad = dict(regenerated, SharePath="fsx.example.test/share")
    step("Update with a bad SharePath (expected to fail)", lambda: cfn.update(prefix, bad, regenerated), "FAILED")

    step("Delete", lambda: cfn.delete(prefix, regenerated))
    show()
    step("Delete again (CloudFormation retries deletes)", lambda: cfn.delete(prefix, regenerated))

    output = bootstrap.output() + json.dumps(cfn.sent) + "".join(b.decode() for b in responses.raw)
    leaked = any(p in output for p in passwords)
    print(f"\nleak check: {len(passwords)} passwords generated; found in the function's logs or CloudFormation traffic: "
          + (f"{RED}YES{RESET}" if leaked else f"{GREEN}no{RESET}"))
    failures += int(leaked)
    bootstrap.stop()
    runtime.close()
    responses.close()
    print(f"{BOLD}{'demo passed' if failures == 0 else f'demo FAILED ({failures} step(s))'}{RESET}")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

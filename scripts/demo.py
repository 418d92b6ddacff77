"""The local demo's lifecycle: see scripts/demo. Usage: demo.py MOTO_URL."""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import boto3  # noqa: E402

from lambda_harness import Bootstrap, CloudFormation, ResponseUrl, RuntimeApi, binary, samba_env  # noqa: E402

TTY = sys.stdout.isatty()
GREEN, RED, DIM, BOLD, RESET = ("\033[32m", "\033[31m", "\033[2m", "\033[1m", "\033[0m") if TTY else ("",) * 5


def fingerprint(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


class Demo:
    def __init__(self, moto_url: str):
        creds = dict(endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
        self.ssm = boto3.client("ssm", **creds)
        self.kms = boto3.client("kms", **creds)
        self.samba = samba_env()
        self.runtime, self.responses = RuntimeApi(), ResponseUrl()
        env = {"AWS_ENDPOINT_URL": moto_url, "ALLOWED_PARAMETER_PATH": "/fargate-smb"}
        self.functions = [Bootstrap(binary("ssm-parameters"), self.runtime, env)]
        # One Runtime API per function, as Lambda gives each its own.
        self.ad_runtime = RuntimeApi()
        self.functions.append(Bootstrap(binary("ad-service-account"), self.ad_runtime, {"AWS_ENDPOINT_URL": moto_url}))
        self.params = CloudFormation(self.runtime, self.responses, "Custom::SsmParameters", "ServiceAccountParameters")
        self.account = CloudFormation(self.ad_runtime, self.responses, "Custom::AdServiceAccount", "ServiceAccount")
        self.passwords: set[str] = set()
        self.failures = 0
        self.step_no = 0

    def step(self, title: str, action, expect: str = "SUCCESS"):
        self.step_no += 1
        started = time.monotonic()
        answer = action()
        ms = (time.monotonic() - started) * 1000
        status = answer.get("Status", "done") if isinstance(answer, dict) else ("ok" if answer else "FAILED")
        ok = status == expect
        mark = f"{GREEN}ok{RESET}" if ok else f"{RED}FAILED{RESET}"
        print(f"{self.step_no:>2}. {title:<62} {status:<8} {ms:7.0f} ms  {mark}")
        if isinstance(answer, dict) and answer.get("Reason"):
            print(f"      reason: {answer['Reason']}")
        self.failures += 0 if ok else 1
        return answer

    def show_parameters(self, prefix: str, note: str = ""):
        for leaf in ("username", "share", "password"):
            try:
                p = self.ssm.get_parameter(Name=f"{prefix}/{leaf}", WithDecryption=True)["Parameter"]
            except self.ssm.exceptions.ParameterNotFound:
                print(f"      {prefix}/{leaf:<9} (absent)")
                continue
            if p["Type"] == "SecureString":
                self.passwords.add(p["Value"])
                shown = f"SecureString, {len(p['Value'])} chars, v{p['Version']}, {fingerprint(p['Value'])} (never printed)"
            else:
                shown = f"{p['Value']}  (String, v{p['Version']})"
            print(f"      {prefix}/{leaf:<9} = {shown}")
        if note:
            print(f"      {DIM}{note}{RESET}")

    def smb_logon(self, user: str, password_parameter: str) -> bool:
        """smbclient as the account, with the password from SSM, over encrypted SMB 3."""
        password = self.ssm.get_parameter(Name=password_parameter, WithDecryption=True)["Parameter"]["Value"]
        with tempfile.NamedTemporaryFile("w", delete=False) as auth:
            auth.write(f"username = {user}\npassword = {password}\ndomain = EXAMPLE\n")
        os.chmod(auth.name, 0o600)
        try:
            out = subprocess.run(["smbclient", "//127.0.0.1/share", "-A", auth.name, "-m", "SMB3", "--client-protection=encrypt", "-c", "ls"],
                                 capture_output=True, text=True, timeout=30)
        finally:
            os.unlink(auth.name)
        return out.returncode == 0

    def run(self) -> int:
        print(f"{BOLD}fargate-smb local demo{RESET}: the custom resources of a stack, driven as CloudFormation would drive them")
        print(f"{DIM}real Lambda bootstraps (target/debug/*) behind local Lambda Runtime APIs; AWS = moto, Active Directory +")
        print(f"SMB share = a Samba AD DC (EXAMPLE / example.test) on 127.0.0.1; smbclient and boto3 are the witnesses{RESET}\n")

        tag = uuid.uuid4().hex[:6]
        prefix = f"/fargate-smb/demo-{tag}"
        admin = f"{prefix}-admin/password"
        self.ssm.put_parameter(Name=admin, Value=open(self.samba["FARGATE_SMB_ADMIN_PASSWORD_FILE"]).read(), Type="SecureString")
        key = self.kms.create_key(Description="fargate-smb demo")["KeyMetadata"]["KeyId"]
        account = f"svc{tag}"
        group = f"web{tag}-share"

        params = {"ParameterPrefix": prefix, "Username": f"EXAMPLE\\{account}-a", "SharePath": "\\\\127.0.0.1\\share",
                  "KmsKeyId": key, "PasswordVersion": "1", "Tags": [{"Key": "app", "Value": "demo"}]}
        created = self.step(f"Create Custom::SsmParameters {prefix}", lambda: self.params.create(params))
        data = created.get("Data", {})
        for k in ("UsernameParameterArn", "PasswordParameterArn", "SharePathParameterArn"):
            print(f"      GetAtt {k:<24} {data.get(k)}")
        self.show_parameters(prefix)

        acct = {"Domain": "example.test", "AccountName": account, "Alternating": "true", "OrganizationalUnit": self.samba["FARGATE_SMB_OU"],
                "Group": group, "CreateGroup": "true", "PasswordParameter": data.get("PasswordParameterName", ""),
                "UsernameParameter": data.get("UsernameParameterName", ""), "PasswordParameterVersion": data.get("PasswordParameterVersion", ""),
                "Server": "ldaps://127.0.0.1", "CaBundle": open(self.samba["FARGATE_SMB_CA"]).read(),
                "AdminUsername": "Administrator@example.test", "AdminPasswordParameter": admin}
        made = self.step(f"Create Custom::AdServiceAccount {account}-a/-b in group {group}", lambda: self.account.create(acct))
        for k in ("Username", "SamAccountNames", "Sid", "GroupSid", "PrincipalSid"):
            print(f"      GetAtt {k:<24} {made.get('Data', {}).get(k)}")
        self.step(f"smbclient logs on as EXAMPLE\\{account}-a with the SSM password",
                  lambda: {"Status": "SUCCESS" if self.smb_logon(f"{account}-a", f"{prefix}/password") else "FAILED"})

        regenerated = dict(params, PasswordVersion="2")
        updated = self.step("Update SsmParameters: PasswordVersion 1 -> 2 (new password)", lambda: self.params.update(prefix, regenerated, params))
        self.show_parameters(prefix, "a new password (new fingerprint); AD does not know it yet")
        acct2 = dict(acct, PasswordParameterVersion=updated.get("Data", {}).get("PasswordParameterVersion", ""))
        self.step("Update AdServiceAccount: PasswordParameterVersion changed", lambda: self.account.update(made["PhysicalResourceId"], acct2, acct))
        self.step(f"smbclient logs on as EXAMPLE\\{account}-a with the new password",
                  lambda: {"Status": "SUCCESS" if self.smb_logon(f"{account}-a", f"{prefix}/password") else "FAILED"})

        bad = dict(acct2, AccountName="bad*name")
        self.step("Update with an invalid AccountName (expected to fail)", lambda: self.account.update(made["PhysicalResourceId"], bad, acct2), "FAILED")

        self.step("Delete AdServiceAccount (accounts and group)", lambda: self.account.delete(made["PhysicalResourceId"], acct2))
        self.step(f"smbclient as EXAMPLE\\{account}-a is refused now (expected)",
                  lambda: {"Status": "FAILED" if not self.smb_logon(f"{account}-a", f"{prefix}/password") else "SUCCESS"}, "FAILED")
        self.step("Delete SsmParameters", lambda: self.params.delete(prefix, regenerated))
        self.show_parameters(prefix)
        self.step("Delete SsmParameters again (CloudFormation retries deletes)", lambda: self.params.delete(prefix, regenerated))
        self.ssm.delete_parameter(Name=admin)

        admin_password = open(self.samba["FARGATE_SMB_ADMIN_PASSWORD_FILE"]).read()
        traffic = json.dumps(self.params.sent + self.account.sent) + "".join(b.decode() for b in self.responses.raw)
        output = "".join(f.output() for f in self.functions) + traffic
        leaked = any(p in output for p in self.passwords | {admin_password})
        print(f"\nleak check: {len(self.passwords)} generated passwords and the admin password, searched in every log line and "
              f"all CloudFormation traffic: " + (f"{RED}FOUND{RESET}" if leaked else f"{GREEN}not found{RESET}"))
        self.failures += int(leaked)
        for f in self.functions:
            f.stop()
        print(f"{BOLD}{'demo passed' if self.failures == 0 else f'demo FAILED ({self.failures} step(s))'}{RESET}")
        return 0 if self.failures == 0 else 1


if __name__ == "__main__":
    sys.exit(Demo(sys.argv[1]).run())

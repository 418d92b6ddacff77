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
        self.acl_runtime, self.web_runtime, self.rotation_runtime = RuntimeApi(), RuntimeApi(), RuntimeApi()
        self.functions.append(Bootstrap(binary("share-acl"), self.acl_runtime, {"AWS_ENDPOINT_URL": moto_url}))
        self.functions.append(Bootstrap(binary("web-content"), self.web_runtime, {"AWS_ENDPOINT_URL": moto_url}))
        self.moto_url = moto_url
        self.s3 = boto3.client("s3", **creds)
        self.params = CloudFormation(self.runtime, self.responses, "Custom::SsmParameters", "ServiceAccountParameters")
        self.account = CloudFormation(self.ad_runtime, self.responses, "Custom::AdServiceAccount", "ServiceAccount")
        self.acl = CloudFormation(self.acl_runtime, self.responses, "Custom::ShareAcl", "WebFolderAcl")
        self.web = CloudFormation(self.web_runtime, self.responses, "Custom::WebContent", "WebContent")
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
        print(f"{self.step_no:>2}. {title:<84} {status:<8} {ms:7.0f} ms  {mark}")
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

    def smbclient(self, user: str, password: str, command: str) -> subprocess.CompletedProcess:
        """smbclient as `user` (without domain), over encrypted SMB 3; the password via a 0600 file."""
        with tempfile.NamedTemporaryFile("w", delete=False) as auth:
            auth.write(f"username = {user}\npassword = {password}\ndomain = EXAMPLE\n")
        os.chmod(auth.name, 0o600)
        try:
            return subprocess.run(["smbclient", "//127.0.0.1/share", "-A", auth.name, "-m", "SMB3", "--client-protection=encrypt", "-c", command],
                                  capture_output=True, text=True, timeout=30)
        finally:
            os.unlink(auth.name)

    def smb_logon(self, user: str, password_parameter: str, command: str = "ls") -> bool:
        """smbclient as the account, with the password from SSM."""
        password = self.ssm.get_parameter(Name=password_parameter, WithDecryption=True)["Parameter"]["Value"]
        out = self.smbclient(user, password, command)
        return out.returncode == 0 and "NT_STATUS" not in out.stdout + out.stderr

    def active(self, prefix: str) -> str:
        return self.ssm.get_parameter(Name=f"{prefix}/username")["Parameter"]["Value"].split("\\")[-1]

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

        folder = f"demo-{tag}\\web"
        acl = {"ShareUnc": "\\\\127.0.0.1\\share", "Folder": folder, "Mode": "Merge",
               "Grants": [{"Principal": made.get("Data", {}).get("PrincipalSid", ""), "Rights": "Modify"}],
               "AdminUsername": "EXAMPLE\\Administrator", "AdminPasswordParameter": admin}
        acl_made = self.step(f"Create Custom::ShareAcl: group {group} may modify {folder}", lambda: self.acl.create(acl))
        print(f"      GetAtt {'Folder':<24} {acl_made.get('Data', {}).get('Folder')}   AceCount {acl_made.get('Data', {}).get('AceCount')}")
        probe = Path(tempfile.mkdtemp()) / "written-by-the-service-account.txt"
        probe.write_text("hello from the container's account\n")
        self.step(f"smbclient as EXAMPLE\\{account}-a writes into {folder} (the grant, enforced)",
                  lambda: {"Status": "SUCCESS" if self.smb_logon(f"{account}-a", f"{prefix}/password", f'put "{probe}" "{folder}\\{probe.name}"') else "FAILED"})

        bucket = f"demo-content-{tag}"
        self.s3.create_bucket(Bucket=bucket)
        site = {"site/index.html": b"<html><body><img src='img/logo.svg'></body></html>\n", "site/img/logo.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>\n",
                "site/css/site.css": b"body { font-family: sans-serif }\n", "site/../escape.txt": b"rejected by name"}
        for key, body in site.items():
            self.s3.put_object(Bucket=bucket, Key=key, Body=body)
        web = {"ShareUnc": "\\\\127.0.0.1\\share", "Folder": folder, "Bucket": bucket, "Prefix": "site", "FailOnRejectedKeys": "false",
               "AdminUsername": "EXAMPLE\\Administrator", "AdminPasswordParameter": admin}
        web_made = self.step(f"Create Custom::WebContent: s3://{bucket}/site/ -> {folder}", lambda: self.web.create(web))
        d = web_made.get("Data", {})
        print(f"      copied {d.get('Copied')}, skipped {d.get('Skipped')}, rejected {d.get('Rejected')} (site/../escape.txt), {d.get('Bytes')} bytes")
        again = self.step("Update Custom::WebContent with nothing changed (incremental)", lambda: self.web.update(web_made["PhysicalResourceId"], dict(web), web))
        print(f"      copied {again.get('Data', {}).get('Copied')}, skipped {again.get('Data', {}).get('Skipped')}")

        rotation_env = {"AWS_ENDPOINT_URL": self.moto_url, "PARAMETER_PREFIX": prefix, "ACCOUNTS": f"{account}-a,{account}-b",
                        "LDAPS_URL": "ldaps://127.0.0.1", "LDAPS_CA_BUNDLE": open(self.samba["FARGATE_SMB_CA"]).read(), "AD_DOMAIN": "example.test",
                        "ADMIN_USERNAME": "Administrator@example.test", "ADMIN_PASSWORD_PARAMETER": admin, "PROOF_DELAY_MS": "500"}
        rotator = Bootstrap(binary("rotate-password"), self.rotation_runtime, rotation_env)
        self.functions.append(rotator)
        before_rotation = self.ssm.get_parameter(Name=f"{prefix}/password", WithDecryption=True)["Parameter"]["Value"]
        self.step("Rotation, dry run (prints the plan, changes nothing)",
                  lambda: {"Status": "SUCCESS" if self.rotation_runtime.invoke({"dryRun": True})[1].get("outcome") == "dry-run" else "FAILED"})
        rotated = {}

        def rotate():
            kind, report = self.rotation_runtime.invoke({})
            rotated.update(report if isinstance(report, dict) else {})
            return {"Status": "SUCCESS" if kind == "response" and report.get("outcome") == "rotated" else "FAILED"}

        self.step(f"Rotation: reset {account}-b, prove it over SMB, switch SSM", rotate)
        self.show_parameters(prefix, f"the active account is now {self.active(prefix)}; {account}-a keeps its password until the next rotation")
        self.step(f"smbclient logs on as EXAMPLE\\{self.active(prefix)} with the rotated SSM password",
                  lambda: {"Status": "SUCCESS" if self.smb_logon(self.active(prefix), f"{prefix}/password") else "FAILED"})
        self.step(f"smbclient as EXAMPLE\\{account}-a with its old password still works (until the next rotation)",
                  lambda: {"Status": "SUCCESS" if self.smbclient(f"{account}-a", before_rotation, "ls").returncode == 0 else "FAILED"})

        regenerated = dict(params, PasswordVersion="2")
        updated = self.step("Update SsmParameters: PasswordVersion 1 -> 2 (new password)", lambda: self.params.update(prefix, regenerated, params))
        self.show_parameters(prefix, "a new password (new fingerprint); AD does not know it yet")
        acct2 = dict(acct, PasswordParameterVersion=updated.get("Data", {}).get("PasswordParameterVersion", ""))
        self.step("Update AdServiceAccount: PasswordParameterVersion changed", lambda: self.account.update(made["PhysicalResourceId"], acct2, acct))
        self.step(f"smbclient logs on as EXAMPLE\\{self.active(prefix)} (the active account) with the new password",
                  lambda: {"Status": "SUCCESS" if self.smb_logon(self.active(prefix), f"{prefix}/password") else "FAILED"})

        bad = dict(acct2, AccountName="bad*name")
        self.step("Update with an invalid AccountName (expected to fail)", lambda: self.account.update(made["PhysicalResourceId"], bad, acct2), "FAILED")

        self.step("Delete WebContent (the content stays: RemoveOnDelete is off)", lambda: self.web.delete(web_made["PhysicalResourceId"], web))
        self.step("Delete ShareAcl (removes exactly the ACE it added)", lambda: self.acl.delete(acl_made["PhysicalResourceId"], acl))
        self.step(f"smbclient as EXAMPLE\\{self.active(prefix)} may no longer write there (expected)",
                  lambda: {"Status": "SUCCESS" if self.smb_logon(self.active(prefix), f"{prefix}/password", f'put "{probe}" "{folder}\\again.txt"') else "FAILED"},
                  "FAILED")
        active_account = self.active(prefix)
        self.step("Delete AdServiceAccount (accounts and group)", lambda: self.account.delete(made["PhysicalResourceId"], acct2))
        self.step(f"smbclient as EXAMPLE\\{active_account} is refused now (expected)",
                  lambda: {"Status": "FAILED" if not self.smb_logon(active_account, f"{prefix}/password") else "SUCCESS"}, "FAILED")
        self.step("Delete SsmParameters", lambda: self.params.delete(prefix, regenerated))
        self.show_parameters(prefix)
        self.step("Delete SsmParameters again (CloudFormation retries deletes)", lambda: self.params.delete(prefix, regenerated))
        self.ssm.delete_parameter(Name=admin)

        admin_password = open(self.samba["FARGATE_SMB_ADMIN_PASSWORD_FILE"]).read()
        traffic = json.dumps(self.params.sent + self.account.sent + self.acl.sent + self.web.sent) + "".join(b.decode() for b in self.responses.raw)
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

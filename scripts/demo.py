"""The local demo (see scripts/demo): the stack's whole lifecycle, driven as CloudFormation would
drive it, with every custom resource's properties, every function's environment and the task
definition's container environment taken from cloudformation/template.yaml, resolved against
scripts/demo-parameters.json (scripts/cfn_local.py does the template work).

Usage: demo.py [MOTO_URL] [--template PATH] [--parameters PATH] [--plan-only | --binaries]

--plan-only loads and checks the template and prints the plan (what each resource resolves to
and in which order), touching nothing: the quick drift check.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

import boto3  # noqa: E402
import botocore.config  # noqa: E402

import cfn_local as cfn  # noqa: E402
from lambda_harness import Bootstrap, ResponseUrl, RuntimeApi, binary, samba_env  # noqa: E402

TTY = sys.stdout.isatty()
GREEN, RED, YELLOW, DIM, BOLD, RESET = ("\033[32m", "\033[31m", "\033[33m", "\033[2m", "\033[1m", "\033[0m") if TTY else ("",) * 6
REGION, ACCOUNT = "us-east-1", "123456789012"

# The resource types the local stack can stand in for, and the only parts of their Properties it
# reads (so a reference elsewhere in them, to a role or a security group, does not matter here).
STAND_INS = {
    "AWS::KMS::Key": ["Description"],
    "AWS::S3::Bucket": ["BucketName", "VersioningConfiguration"],
    "AWS::DynamoDB::Table": ["TableName", "AttributeDefinitions", "KeySchema"],
    "AWS::SQS::Queue": ["QueueName"],
    "AWS::ECS::Cluster": ["ClusterName"],
    "AWS::ECS::TaskDefinition": ["Family"],
    "AWS::ECS::Service": ["ServiceName", "Cluster", "TaskDefinition"],
    "AWS::Logs::LogGroup": ["LogGroupName"],
}
FUNCTION_PARTS = ["FunctionName", "Environment", "LoggingConfig", "Timeout", "MemorySize", "Events"]


def leaf_diff(old, new, path: str = "") -> list[str]:
    """The changed leaves between two property trees: `Grants[0].Rights: Read -> Modify`."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=lambda k: (k not in old, k))
                for d in leaf_diff(old.get(k), new.get(k), f"{path}.{k}" if path else k)]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in leaf_diff(a, b, f"{path}[{i}]")]
    if old == new:
        return []
    short = lambda v: "(none)" if v is None else (v if isinstance(v, str) else json.dumps(v))[:60]  # noqa: E731
    return [f"{path}: {short(old)} -> {short(new)}"]


def fingerprint(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


class Result:
    """What a step found: ok, the status word shown, detail lines."""

    def __init__(self, ok: bool, status: str | None = None, details: list[str] | None = None):
        self.ok, self.status, self.details = ok, status or ("ok" if ok else "FAILED"), details or []


def check(ok: bool, good: str, bad: str, details: list[str] | None = None) -> Result:
    return Result(ok, good if ok else bad, details)


class Report:
    def __init__(self, known_issues: dict[str, str]):
        self.step_no, self.failures, self.known = 0, 0, known_issues
        self.phase_no = 0
        self.timings: list[tuple[str, float]] = []
        self.xpassed: list[str] = []
        self.known_failed: list[str] = []
        self.phases: list[tuple[str, float, int]] = []

    def phase(self, title: str, explanation: str) -> None:
        self.phase_no += 1
        self.phases.append((title.split(" (")[0], time.monotonic(), self.step_no))
        print(f"\n{BOLD}── {title}{RESET}")
        for line in textwrap.wrap(" ".join(explanation.split()), 116):
            print(f"   {DIM}{line}{RESET}")

    def phase_summary(self) -> str:
        now, parts = time.monotonic(), []
        for i, (title, start, _) in enumerate(self.phases):
            end = self.phases[i + 1][1] if i + 1 < len(self.phases) else now
            parts.append(f"{title} {end - start:.1f} s")
        return "; ".join(parts)

    def info(self, text: str) -> None:
        print(f"      {DIM}{text}{RESET}")

    def step(self, title: str, action, key: str | None = None) -> Result:
        """Run one step; print its number, status, time and ok/FAILED; return the Result."""
        self.step_no += 1
        started = time.monotonic()
        try:
            result = action()
        except cfn.Unresolved as e:
            result = Result(False, "UNRESOLVED", [str(e)])
        except Exception as e:  # noqa: BLE001 - a demo step reports, it does not crash the run
            result = Result(False, "ERROR", [f"{type(e).__name__}: {e}"])
        ms = (time.monotonic() - started) * 1000
        self.timings.append((title, ms))
        issue = self.known.get(key) if key else None
        if result.ok:
            mark = f"{GREEN}ok{RESET}"
            if issue:
                self.xpassed.append(key)
                mark += f" {YELLOW}(listed under KnownIssues as {key!r}: it passes now, remove it){RESET}"
        elif issue:
            mark = f"{YELLOW}known issue{RESET}"
            self.known_failed.append(key)
        else:
            mark = f"{RED}FAILED{RESET}"
            self.failures += 1
        print(f"{self.step_no:>3}. {title:<98} {result.status:<11} {ms:6.0f} ms  {mark}")
        for line in result.details:
            for sub in str(line).splitlines():
                print(f"      {sub.strip()}")
        if issue and not result.ok:
            print(f"      {YELLOW}known issue {key!r}: {issue}{RESET}")
        return result


def placeholders(value, values: dict):
    """{run}, {moto}, {env:NAME}, {file:NAME} in the parameters file."""
    if isinstance(value, dict):
        return {k: v if k.startswith("_") else placeholders(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [placeholders(v, values) for v in value]
    if not isinstance(value, str):
        return value

    def one(m):
        key = m.group(1)
        if key.startswith("env:"):
            return values["env"][key[4:]]
        if key.startswith("file:"):
            return Path(values["env"][key[5:]]).read_text()
        return values[key]

    return re.sub(r"\{(run|moto|env:[A-Z0-9_]+|file:[A-Z0-9_]+)\}", one, value)


class Tee:
    """stdout, also kept for the leak check (the demo's own report is searched too)."""

    def __init__(self, stream):
        self.stream, self.chunks = stream, []

    def write(self, text):
        self.chunks.append(text)
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return self.stream.isatty()

    def text(self) -> str:
        return "".join(self.chunks)


class Function:
    """One Lambda function: its own Runtime API and the real bootstrap, started with the
    environment the template gives it."""

    def __init__(self, logical_id: str, binary_name: str, name: str, env: dict, timeout: float, memory: str, log: dict):
        self.logical_id, self.binary_name, self.name, self.env = logical_id, binary_name, name, env
        self.timeout = timeout
        self.runtime = RuntimeApi()
        lambda_env = {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": memory, **log, **env}
        self.bootstrap = Bootstrap(binary(binary_name), self.runtime, lambda_env, name=name)
        self.outputs: list[str] = []

    def invoke(self, payload, timeout: float | None = None):
        return self.runtime.invoke(payload, timeout=timeout or self.timeout + 5, deadline_s=self.timeout)

    def stop(self) -> None:
        self.bootstrap.stop()
        self.outputs.append(self.bootstrap.stdout_path.read_text(errors="replace") +
                            self.bootstrap.stderr_path.read_text(errors="replace"))
        for path in (self.bootstrap.stdout_path, self.bootstrap.stderr_path):
            path.unlink(missing_ok=True)  # kept in memory for the leak check; no litter in /tmp
        self.runtime.close()

    def output(self) -> str:
        return "".join(self.outputs) + (self.bootstrap.output() if self.bootstrap.alive() else "")


class LocalCloudFormation:
    """Creates, updates and deletes the template's resources the demo can run locally: custom
    resources through their functions' real bootstraps, functions as local bootstraps, and the
    AWS resources they reference as stand-ins in moto."""

    def __init__(self, template_path: Path, settings: dict, moto_url: str, report: Report):
        self.settings, self.moto_url, self.report = settings, moto_url, report
        self.template = cfn.load_template(template_path)
        self.stack = cfn.Stack(self.template, settings["Parameters"], settings["StackName"], REGION, ACCOUNT,
                               settings.get("Imports"))
        creds = dict(endpoint_url=moto_url, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
        self.aws = {s: boto3.client(s, **creds) for s in ("ssm", "kms", "dynamodb", "sqs", "ecs")}
        self.aws["s3"] = boto3.client("s3", config=botocore.config.Config(s3={"addressing_style": "path"}), **creds)
        self.responses = ResponseUrl()
        self.functions: dict[str, Function] = {}
        self.sent: list[dict] = []          # every request CloudFormation sent
        self.answers: dict[str, dict] = {}  # logical id -> last SUCCESS answer
        self.properties: dict[str, dict] = {}  # logical id -> the properties last applied
        self.stand_ins: dict[str, str] = {}  # logical id -> what it is in moto
        self.suffix = uuid.uuid4().hex[:8]

    # ── the plan ──
    def kind(self, logical_id: str) -> str:
        t = self.stack.resource(logical_id).get("Type", "")
        if t.startswith("Custom::") or t == "AWS::CloudFormation::CustomResource":
            return "custom"
        if t == "AWS::Serverless::Function":
            return "function"
        if t in STAND_INS:
            return "stand-in"
        return "unsupported"

    def used_part(self, logical_id: str) -> dict:
        r = self.stack.resource(logical_id)
        props = r.get("Properties") or {}
        kind = self.kind(logical_id)
        if kind == "custom":
            return props
        if kind == "function":
            return {k: props[k] for k in FUNCTION_PARTS if k in props}
        if kind == "stand-in":
            return {k: props[k] for k in STAND_INS[r["Type"]] if k in props}
        return props

    def plan(self) -> list[str]:
        """Every resource the demo drives (the custom resources, the functions, the task
        definition) and what they reference, in dependency order."""
        roots = [lid for lid in self.template["Resources"] if self.stack.included(lid)
                 and (self.kind(lid) in ("custom", "function") or self.stack.resource(lid)["Type"] == "AWS::ECS::TaskDefinition")]
        nodes, deps, queue = [], {}, list(roots)
        referenced_by: dict[str, str] = {}
        while queue:
            lid = queue.pop(0)
            if lid in nodes:
                continue
            if self.kind(lid) == "unsupported":
                raise cfn.Unresolved(f"{lid} ({self.stack.resource(lid)['Type']}) is referenced by {referenced_by.get(lid)} "
                                     f"but the local stack has no stand-in for that type")
            nodes.append(lid)
            deps[lid] = {d for d in self.stack.depends_on(lid, self.used_part(lid)) if d in self.template["Resources"]}
            for d in deps[lid]:
                # A DependsOn on something the demo does not run (a listener) only orders it.
                explicit = self.stack.resource(lid).get("DependsOn") or []
                explicit = [explicit] if isinstance(explicit, str) else explicit
                if self.kind(d) == "unsupported" and d in explicit and d not in cfn.references(self.used_part(lid), self.stack.conditions):
                    continue
                referenced_by.setdefault(d, lid)
                queue.append(d)
        order = list(self.template["Resources"])
        nodes.sort(key=order.index)
        return cfn.topological(nodes, deps)

    # ── resolution helpers ──
    def resolve_props(self, logical_id: str) -> dict:
        props = self.stack.resolve(self.stack.resource(logical_id).get("Properties") or {}, f"{logical_id}.Properties")
        return cfn.as_cloudformation_sends(props)

    def function_config(self, logical_id: str) -> dict:
        r = self.stack.resource(logical_id)
        part = self.stack.resolve(self.used_part(logical_id), f"{logical_id}.Properties")
        binary_name = ((r.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary")
        if not binary_name:
            raise cfn.Unresolved(f"{logical_id}: no Metadata.BuildProperties.Binary: which bootstrap is it?")
        env = {k: str(v) for k, v in ((part.get("Environment") or {}).get("Variables") or {}).items()}
        overrides = self.settings.get("FunctionEnvironment", {})
        env.update(overrides.get("*", {}))
        env.update(overrides.get(logical_id, {}))
        name = part.get("FunctionName") or f"{self.stack.stack_name}-{logical_id}-{self.suffix}"
        logging = part.get("LoggingConfig") or {}
        log = {"AWS_LAMBDA_LOG_FORMAT": logging.get("LogFormat", "Text")}
        if logging.get("ApplicationLogLevel"):
            log["AWS_LAMBDA_LOG_LEVEL"] = logging["ApplicationLogLevel"]
        if logging.get("LogGroup"):
            log["AWS_LAMBDA_LOG_GROUP_NAME"] = logging["LogGroup"]
        return {"binary": binary_name, "name": name, "env": env, "timeout": float(part.get("Timeout", 3)),
                "memory": str(part.get("MemorySize", 128)), "log": log}

    def function_for_token(self, token: str) -> Function:
        for f in self.functions.values():
            if self.stack.resources[f.logical_id].attrs.get("Arn") == token:
                return f
        raise cfn.Unresolved(f"ServiceToken {token} is not the ARN of a function the local stack runs")

    # ── creating ──
    def start_function(self, logical_id: str) -> Function:
        c = self.function_config(logical_id)
        f = Function(logical_id, c["binary"], c["name"], c["env"], c["timeout"], c["memory"], c["log"])
        self.functions[logical_id] = f
        arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{c['name']}"
        self.stack.resources[logical_id] = cfn.Resolved(c["name"], {"Arn": arn}, "function")
        return f

    def create_stand_in(self, logical_id: str) -> str:
        r = self.stack.resource(logical_id)
        t = r["Type"]
        p = self.stack.resolve(self.used_part(logical_id), f"{logical_id}.Properties")
        generated = f"{self.stack.stack_name}-{logical_id}-{self.suffix}"
        if t == "AWS::KMS::Key":
            meta = self.aws["kms"].create_key(Description=p.get("Description", ""))["KeyMetadata"]
            res, what = cfn.Resolved(meta["KeyId"], {"Arn": meta["Arn"], "KeyId": meta["KeyId"]}), f"moto KMS key {meta['KeyId']}"
        elif t == "AWS::S3::Bucket":
            name = p.get("BucketName") or generated.lower()[:63]
            self.aws["s3"].create_bucket(Bucket=name)
            if (p.get("VersioningConfiguration") or {}).get("Status") == "Enabled":
                self.aws["s3"].put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
            res = cfn.Resolved(name, {"Arn": f"arn:aws:s3:::{name}", "DomainName": f"{name}.s3.amazonaws.com",
                                      "RegionalDomainName": f"{name}.s3.{REGION}.amazonaws.com"})
            what = f"moto bucket {name}" + (" (versioned)" if (p.get("VersioningConfiguration") or {}).get("Status") == "Enabled" else "")
        elif t == "AWS::DynamoDB::Table":
            name = p.get("TableName") or generated
            desc = self.aws["dynamodb"].create_table(TableName=name, AttributeDefinitions=p["AttributeDefinitions"],
                                                     KeySchema=p["KeySchema"], BillingMode="PAY_PER_REQUEST")["TableDescription"]
            keys = "+".join(k["AttributeName"] for k in p["KeySchema"])
            res, what = cfn.Resolved(name, {"Arn": desc["TableArn"]}), f"moto DynamoDB table {name} (key {keys}, from the template)"
        elif t == "AWS::SQS::Queue":
            name = p.get("QueueName") or generated
            url = self.aws["sqs"].create_queue(QueueName=name)["QueueUrl"]
            res = cfn.Resolved(url, {"Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}", "QueueName": name, "QueueUrl": url})
            what = f"moto SQS queue {name}"
        elif t == "AWS::ECS::Cluster":
            name = p.get("ClusterName") or generated
            arn = self.aws["ecs"].create_cluster(clusterName=name)["cluster"]["clusterArn"]
            res, what = cfn.Resolved(name, {"Arn": arn}), f"moto ECS cluster {name}"
        elif t == "AWS::ECS::TaskDefinition":
            family = p.get("Family") or generated
            arn = self.aws["ecs"].register_task_definition(
                family=family, containerDefinitions=[{"name": "web", "image": "stand-in", "memory": 512}])["taskDefinition"]["taskDefinitionArn"]
            res, what = cfn.Resolved(arn, {"TaskDefinitionArn": arn}), f"moto task definition {family} (a stand-in; the container runs locally as a process)"
        elif t == "AWS::ECS::Service":
            name = p.get("ServiceName") or generated
            svc = self.aws["ecs"].create_service(cluster=p["Cluster"], serviceName=name, taskDefinition=p["TaskDefinition"],
                                                 desiredCount=0)["service"]
            res = cfn.Resolved(svc["serviceArn"], {"Name": name, "ServiceArn": svc["serviceArn"]})
            what = f"moto ECS service {name} (0 tasks: no Windows tasks run here)"
        elif t == "AWS::Logs::LogGroup":
            name = p.get("LogGroupName") or generated
            res = cfn.Resolved(name, {"Arn": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}:*"})
            what = f"log group name {name} (the bootstraps' output is captured locally)"
        else:
            raise cfn.Unresolved(f"{logical_id}: no stand-in for {t}")
        res.kind = "stand-in"
        self.stack.resources[logical_id] = res
        self.stand_ins[logical_id] = what
        return what

    def send(self, logical_id: str, request_type: str, props: dict, physical_id: str | None = None,
             old_props: dict | None = None) -> dict:
        """One custom resource request, as CloudFormation sends it; returns the response document."""
        fn = self.function_for_token(props.get("ServiceToken", ""))
        request_id = str(uuid.uuid4())
        event = {
            "RequestType": request_type, "ServiceToken": props["ServiceToken"],
            "ResponseURL": self.responses.url(request_id), "StackId": self.stack.stack_id, "RequestId": request_id,
            "LogicalResourceId": logical_id, "ResourceType": self.stack.resource(logical_id)["Type"],
            "ResourceProperties": props,
        }
        if physical_id is not None:
            event["PhysicalResourceId"] = physical_id
        if old_props is not None:
            event["OldResourceProperties"] = old_props
        self.sent.append(event)
        service_timeout = min(float(props.get("ServiceTimeout", 3600)), 300.0)
        fn.runtime.events.put((request_id + "-inv", event, int((time.time() + fn.timeout) * 1000)))
        document = json.loads(self.responses.wait(request_id, timeout=service_timeout))
        fn.runtime._result(request_id + "-inv").get(timeout=30)
        return document

    # ── updating ──
    def restart_if_changed(self, logical_id: str) -> list[str]:
        """Lambda's UpdateFunctionConfiguration: a new environment means new execution
        environments. Returns the changed variables."""
        f = self.functions[logical_id]
        c = self.function_config(logical_id)
        changed = sorted(k for k in set(c["env"]) | set(f.env) if c["env"].get(k) != f.env.get(k))
        if changed:
            f.stop()
            outputs = f.outputs
            self.start_function(logical_id).outputs = outputs
        return changed

    def stop(self) -> None:
        """Stop every bootstrap and Runtime API at once (each server takes up to 0.5 s to stop)."""
        import threading

        live = [f for f in self.functions.values() if f.bootstrap.alive()]
        for f in live:
            f.bootstrap.process.terminate()
        threads = [threading.Thread(target=f.stop) for f in live] + [threading.Thread(target=self.responses.close)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def all_output(self) -> str:
        return "".join(f.output() for f in self.functions.values())

    def remove_stand_ins(self) -> list[str]:
        gone = []
        for lid in reversed(list(self.stand_ins)):
            t = self.stack.resource(lid)["Type"]
            res = self.stack.resources[lid]
            try:
                if t == "AWS::S3::Bucket":
                    s3 = self.aws["s3"]
                    versions = s3.list_object_versions(Bucket=res.ref)
                    for v in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
                        s3.delete_object(Bucket=res.ref, Key=v["Key"], VersionId=v["VersionId"])
                    # Emptied, not deleted: moto keeps every object it ever made, and its
                    # /moto-api/data.json (the stack's readiness probe) fails on an object whose
                    # bucket is gone.
                    lid = f"{lid} (emptied)"
                elif t == "AWS::DynamoDB::Table":
                    self.aws["dynamodb"].delete_table(TableName=res.ref)
                elif t == "AWS::SQS::Queue":
                    self.aws["sqs"].delete_queue(QueueUrl=res.ref)
                elif t == "AWS::ECS::Service":
                    cluster = res.ref.split("/")[-2]
                    self.aws["ecs"].delete_service(cluster=cluster, service=res.ref, force=True)
                elif t == "AWS::ECS::Cluster":
                    self.aws["ecs"].delete_cluster(cluster=res.ref)
                elif t == "AWS::ECS::TaskDefinition":
                    self.aws["ecs"].deregister_task_definition(taskDefinition=res.ref)
                elif t == "AWS::KMS::Key":
                    self.aws["kms"].schedule_key_deletion(KeyId=res.ref, PendingWindowInDays=7)
                gone.append(lid)
            except Exception as e:  # noqa: BLE001
                gone.append(f"{lid} (not removed: {e})")
        return gone


class Witness:
    """Independent observers: boto3 on moto, smbclient and ldapsearch on the Samba DC."""

    def __init__(self, lcf: LocalCloudFormation, samba: dict):
        self.lcf, self.samba = lcf, samba
        self.admin_password = Path(samba["FARGATE_SMB_ADMIN_PASSWORD_FILE"]).read_text()
        self.passwords: set[str] = set()
        self.tmp = Path(tempfile.mkdtemp(prefix="fargate-smb-demo-"))

    def parameter(self, name: str, decrypt: bool = True) -> dict | None:
        try:
            p = self.lcf.aws["ssm"].get_parameter(Name=name, WithDecryption=decrypt)["Parameter"]
        except self.lcf.aws["ssm"].exceptions.ParameterNotFound:
            return None
        if p["Type"] == "SecureString" and decrypt:
            self.passwords.add(p["Value"])
        return p

    def show_parameters(self, prefix: str) -> list[str]:
        lines = []
        for leaf in ("username", "password", "share"):
            p = self.parameter(f"{prefix}/{leaf}")
            if p is None:
                lines.append(f"{prefix}/{leaf:<8} (absent)")
            elif p["Type"] == "SecureString":
                key = self.lcf.aws["ssm"].describe_parameters(
                    ParameterFilters=[{"Key": "Name", "Values": [p["Name"]]}])["Parameters"][0].get("KeyId", "")
                lines.append(f"{prefix}/{leaf:<8} SecureString v{p['Version']}, {len(p['Value'])} chars, {fingerprint(p['Value'])}, "
                             f"KMS {key.rsplit('/', 1)[-1][:8]}… (value never printed)")
            else:
                lines.append(f"{prefix}/{leaf:<8} = {p['Value']}   (String v{p['Version']})")
        return lines

    def smbclient(self, user: str, password: str, command: str, directory: str | None = None) -> subprocess.CompletedProcess:
        """smbclient as EXAMPLE\\user over encrypted SMB 3; the password through a 0600 file."""
        auth = self.tmp / f"{uuid.uuid4().hex}.auth"
        auth.write_text(f"username = {user}\npassword = {password}\ndomain = EXAMPLE\n")
        auth.chmod(0o600)
        args = ["smbclient", "//127.0.0.1/share", "-A", str(auth), "-m", "SMB3", "--client-protection=encrypt"]
        if directory:
            args += ["-D", directory]
        try:
            return subprocess.run(args + ["-c", command], capture_output=True, text=True, timeout=60, cwd=self.tmp)
        finally:
            auth.unlink()

    @staticmethod
    def smb_ok(out: subprocess.CompletedProcess) -> bool:
        return out.returncode == 0 and "NT_STATUS" not in out.stdout + out.stderr

    def service_credential(self, prefix: str) -> tuple[str, str]:
        user = self.parameter(f"{prefix}/username")["Value"]
        password = self.parameter(f"{prefix}/password")["Value"]
        return user.split("\\")[-1], password

    def download(self, user: str, password: str, folder: str, name: str) -> bytes | None:
        local = self.tmp / f"dl-{uuid.uuid4().hex}"
        out = self.smbclient(user, password, f'get "{name}" "{local}"', directory=folder)
        if not self.smb_ok(out) or not local.exists():
            return None
        data = local.read_bytes()
        local.unlink()
        return data

    def ldap(self, ou: str, names: list[str]) -> list[str]:
        """sAMAccountNames found under `ou` among `names` (ldapsearch over verified LDAPS)."""
        flt = "(|" + "".join(f"(sAMAccountName={n})" for n in names) + ")"
        out = subprocess.run(["ldapsearch", "-LLL", "-H", "ldaps://127.0.0.1", "-D", "Administrator@example.test",
                              "-y", self.samba["FARGATE_SMB_ADMIN_PASSWORD_FILE"], "-b", ou, flt, "sAMAccountName"],
                             capture_output=True, text=True, timeout=30,
                             env={**os.environ, "LDAPTLS_CACERT": self.samba["FARGATE_SMB_CA"]})
        if out.returncode not in (0, 32):
            raise RuntimeError(f"ldapsearch failed: {out.stderr.strip()}")
        return sorted(line.split(": ", 1)[1] for line in out.stdout.splitlines() if line.startswith("sAMAccountName: "))


class Demo:
    def __init__(self, args):
        self.args = args
        self.samba = samba_env() if not args.plan_only else {}
        self.run_tag = uuid.uuid4().hex[:6]
        raw = json.loads(Path(args.parameters).read_text())
        env = dict(self.samba) or {k: f"<{k}>" for k in ("FARGATE_SMB_OU",)}
        values = {"run": self.run_tag, "moto": args.moto or "http://127.0.0.1:5055", "env": env}
        if args.plan_only:
            values["env"] = _PlanOnlyEnv()
        self.settings = placeholders(raw, values)
        self.report = Report(self.settings.get("KnownIssues", {}))

    # ── the phases ──
    def run(self) -> int:
        started = time.monotonic()
        print(f"{BOLD}fargate-smb local demo{RESET}: cloudformation/template.yaml's stack lifecycle, driven as CloudFormation would")
        print(f"{DIM}parameters: {os.path.relpath(self.args.parameters, ROOT)}; the real Lambda bootstraps (target/debug/*) behind "
              f"local Runtime APIs;\nAWS = moto; Active Directory and the SMB share = a Samba AD DC (EXAMPLE / example.test, "
              f"\\\\127.0.0.1\\share); witnesses: boto3, smbclient, ldapsearch{RESET}")
        self.lcf = None
        try:
            self.lifecycle()
        finally:
            self.cleanup()
        return self.finish(started)

    def lifecycle(self) -> None:
        r = self.report
        r.phase("Template", """The template is read with CloudFormation's short-form tags, SAM's Globals applied to the
            functions, the parameters checked against AllowedPattern/AllowedValues/Rules and the Conditions
            evaluated; then the resources the demo runs are put in dependency order (DependsOn, Ref, GetAtt).""")
        if not r.step("load cloudformation/template.yaml with the parameters file", self.load).ok:
            return
        plan = r.step("plan: the custom resources, their functions and what they reference, in order", self.make_plan)
        if not plan.ok:
            return
        if self.args.plan_only:
            r.step("resolve each custom resource's properties (references to earlier answers stubbed)", self.dry_resolve)
            return
        self.witness = Witness(self.lcf, self.samba)
        if not self.create():
            self.rollback()
            return
        self.preflight()
        self.sync()
        self.rotate()
        self.update()
        self.delete()
        self.leak_check()

    def cleanup(self) -> None:
        r = self.report
        if not self.lcf:
            return
        if self.args.plan_only:
            self.lcf.stop()
            return
        r.phase("Cleanup", """The bootstraps are stopped, the stand-ins removed from moto, the admin parameter
            deleted and this run's folder removed from the share.""")
        self.lcf.stop()
        gone = self.lcf.remove_stand_ins()
        self.admin_cleanup()
        r.info(f"stand-ins removed from moto: {', '.join(gone) or 'none'}")
        self.share_cleanup()
        if hasattr(self, "witness"):
            import shutil

            shutil.rmtree(self.witness.tmp, ignore_errors=True)

    def finish(self, started: float) -> int:
        r = self.report
        total = time.monotonic() - started
        if r.phases:
            print(f"\n{DIM}time per phase: {r.phase_summary()}{RESET}")
        if r.known_failed:
            print(f"\n{YELLOW}{len(r.known_failed)} known issue(s) still failing (KnownIssues in the parameters file): "
                  f"{', '.join(r.known_failed)}{RESET}")
        if r.failures == 0:
            print(f"\n{BOLD}{GREEN}demo passed{RESET}{BOLD}: {r.step_no} steps in {total:.1f} s{RESET}")
        else:
            print(f"\n{BOLD}{RED}demo FAILED{RESET}{BOLD}: {r.failures} of {r.step_no} steps failed ({total:.1f} s){RESET}")
        return 0 if r.failures == 0 else 1

    # ── Template ──
    def load(self) -> Result:
        self.lcf = LocalCloudFormation(Path(self.args.template), self.settings, self.args.moto or "http://127.0.0.1:9", self.report)
        s = self.lcf.stack
        resources = s.template["Resources"]
        customs = [lid for lid in resources if self.lcf.kind(lid) == "custom"]
        functions = [lid for lid in resources if self.lcf.kind(lid) == "function"]
        true = [c for c, v in s.conditions.items() if v]
        return Result(True, details=[
            f"stack {s.stack_name}: {len(resources)} resources, {len(customs)} custom resources, {len(functions)} functions, "
            f"{len(s.parameters)} parameters",
            f"conditions true: {', '.join(true) or 'none'}"])

    def make_plan(self) -> Result:
        self.order = self.lcf.plan()
        kinds = {lid: self.lcf.kind(lid) for lid in self.order}
        lines = []
        for lid in self.order:
            t = self.lcf.stack.resource(lid)["Type"]
            deps = sorted(d for d in self.lcf.stack.depends_on(lid, self.lcf.used_part(lid)) if d in self.order)
            after = f"  after {', '.join(deps)}" if deps else ""
            lines.append(f"{kinds[lid]:<9} {lid} ({t}){after}")
        return Result(True, f"{len(self.order)} res", lines)

    def dry_resolve(self) -> Result:
        """--plan-only: resolve every custom resource's properties and every function's
        environment with placeholder answers for the resources the demo would create."""
        s = self.lcf.stack
        for lid in self.order:
            r = s.resource(lid)
            if self.lcf.kind(lid) == "function":
                self.lcf.function_config(lid)  # resolvable now (its references are earlier in the order)
                name = self.lcf.stack.resolve(r["Properties"].get("FunctionName", lid))
                s.resources[lid] = cfn.Resolved(name, {"Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"})
                continue
            attrs = _AnyAttrs(lid)
            s.resources[lid] = cfn.Resolved(f"<{lid}>", attrs)
            if self.lcf.kind(lid) == "custom":
                self.lcf.resolve_props(lid)
        task = self.task_container()
        return Result(True, details=[f"task definition container {task['Name']}: environment "
                                     f"{', '.join(e['Name'] for e in task.get('Environment', []))}; secrets "
                                     f"{', '.join(e['Name'] for e in task.get('Secrets', []))}"])

    # ── Create ──
    def create(self) -> bool:
        r, lcf = self.report, self.lcf
        r.phase("Create (CREATE_IN_PROGRESS)", """In the plan's order: stand-ins for the AWS resources the functions and custom resources
            reference are made in moto; each function starts as its real bootstrap with the environment the template
            gives it; each custom resource gets a Create request with its resolved properties, and its answer (physical
            id, Data) is what later !Ref / !GetAtt resolve to. Each step is then checked from outside.""")
        params = lcf.stack.parameters
        admin_param = params.get("AdminPasswordParameterName")
        if admin_param:
            lcf.aws["ssm"].put_parameter(Name=admin_param, Value=self.witness.admin_password, Type="SecureString", Overwrite=True)
            r.info(f"prerequisite: the Samba admin password put into moto SSM as {admin_param} (SecureString)")
        for lid in self.order:
            kind = lcf.kind(lid)
            if kind == "stand-in":
                what = lcf.create_stand_in(lid)
                if lcf.stack.resource(lid)["Type"] != "AWS::Logs::LogGroup":  # shown with its function
                    r.info(f"stand-in  {lid:<26} {what}")
                if lcf.stack.resource(lid)["Type"] == "AWS::S3::Bucket":
                    self.upload_site(lcf.stack.resources[lid].ref, params.get("ContentPrefix", "site"))
            elif kind == "function":
                f = lcf.start_function(lid)
                r.info(f"function  {lid:<26} target/debug/{f.binary_name} as {f.name} (timeout {f.timeout:.0f} s); environment: "
                       f"{', '.join(sorted(k for k in f.env if k != 'AWS_ENDPOINT_URL')) or '(none)'}")
            elif kind == "custom":
                if not self.create_custom(lid):
                    return False
        return True

    def rollback(self) -> None:
        """A failed Create: CloudFormation stops and deletes what it made, in reverse order."""
        r, lcf = self.report, self.lcf
        r.phase("Rollback (ROLLBACK_IN_PROGRESS)", """A resource failed to create: nothing after it is created, and the
            custom resources created so far get a Delete request in reverse order.""")
        for lid in reversed([x for x in self.order if lcf.kind(x) == "custom" and x in lcf.answers]):
            props, physical = lcf.properties[lid], lcf.answers[lid]["PhysicalResourceId"]
            r.step(f"Delete {lcf.stack.resource(lid)['Type']} {lid} (rollback)",
                   lambda: check(lcf.send(lid, "Delete", props, physical).get("Status") == "SUCCESS", "SUCCESS", "FAILED"))

    def upload_site(self, bucket: str, prefix: str) -> None:
        site = ROOT / "container" / "site" / "content"
        for path in sorted(site.rglob("*")):
            if path.is_file():
                self.lcf.aws["s3"].put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(site).as_posix()}", Body=path.read_bytes())
        self.lcf.aws["s3"].put_object(Bucket=bucket, Key=f"{prefix}/index.html", Body=b"<html><body><img src='fargate-smb.svg'></body></html>\n")
        self.report.info(f"content: container/site/content/ + index.html uploaded to s3://{bucket}/{prefix}/ (what the operator uploads)")

    def create_custom(self, lid: str) -> None:
        lcf, r = self.lcf, self.report
        t = lcf.stack.resource(lid)["Type"]
        answer = {}

        def go() -> Result:
            props = lcf.resolve_props(lid)
            answer.update(lcf.send(lid, "Create", props))
            ok = answer.get("Status") == "SUCCESS"
            if ok:
                lcf.properties[lid] = props
                lcf.answers[lid] = answer
                lcf.stack.resources[lid] = cfn.Resolved(answer["PhysicalResourceId"], answer.get("Data") or {}, "custom")
            details = [f"reason: {answer.get('Reason')}"] if not ok else [f"PhysicalResourceId {answer['PhysicalResourceId']}"]
            return Result(ok, answer.get("Status"), details)

        res = r.step(f"Create {t} {lid}", go)
        if res.ok:
            self.after(lid, "Create")
        return res.ok

    # witnesses after a custom resource's Create or Update, by type
    def after(self, lid: str, request: str) -> None:
        lcf, r, w = self.lcf, self.report, self.witness
        t = lcf.stack.resource(lid)["Type"]
        props, data = lcf.properties[lid], lcf.answers[lid].get("Data") or {}
        if t == "Custom::SsmParameters":
            for line in w.show_parameters(props["ParameterPrefix"]):
                r.info(line)
            r.step("  witness (boto3): the password is a SecureString under the template's KMS key (SecretsKey)",
                   lambda: self.password_key_ok(props))
        elif t == "Custom::AdServiceAccount":
            r.info(f"GetAtt Username {data.get('Username')}  SamAccountNames {data.get('SamAccountNames')}  PrincipalSid {data.get('PrincipalSid')}")
            names = data.get("SamAccountNames", "").split(",") + [data.get("GroupName", "")]
            ou = props.get("OrganizationalUnit") or self.samba["FARGATE_SMB_OU"]
            r.step(f"  witness (ldapsearch): {', '.join(names)} exist in {ou.split(',')[0]}",
                   lambda: check(w.ldap(ou, names) == sorted(names), "found", "missing", [f"found: {w.ldap(ou, names)}"]))
            r.step("  witness (smbclient): the active account logs on with the password from SSM", lambda: self.logon_ok(props))
        elif t == "Custom::ShareAcl":
            r.info(f"GetAtt Folder {data.get('Folder')}  AceCount {data.get('AceCount')}  (Rights {props['Grants'][0].get('Rights')})")
            self.acl_witness(props)
        elif t == "Custom::WebContent":
            r.info(f"Copied {data.get('Copied')}, Skipped {data.get('Skipped')}, Rejected {data.get('Rejected')}, Bytes {data.get('Bytes')}")
            r.step(f"  witness (smbclient): the service account reads fargate-smb.svg == s3 {props['Prefix']}/fargate-smb.svg",
                   lambda: self.content_ok(props, "fargate-smb.svg"))

    def password_key_ok(self, props: dict) -> Result:
        ssm = self.lcf.aws["ssm"]
        name = f"{props['ParameterPrefix']}/password"
        meta = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [name]}])["Parameters"][0]
        key = self.lcf.stack.resources.get("SecretsKey")
        want = props.get("KmsKeyId", "")
        ok = meta["Type"] == "SecureString" and (meta.get("KeyId") == want or (key and meta.get("KeyId") in (key.ref, key.attrs.get("Arn"))))
        return check(bool(ok), "ok", "wrong key", [] if ok else [f"KeyId {meta.get('KeyId')} != {want}"])

    def active(self) -> tuple[str, str]:
        return self.witness.service_credential(self.lcf.stack.parameters["ParameterPrefix"])

    def logon_ok(self, props: dict | None = None) -> Result:
        user, password = self.active()
        out = self.witness.smbclient(user, password, "ls")
        return check(self.witness.smb_ok(out), f"{user}", "refused", [] if self.witness.smb_ok(out) else [out.stdout.strip()[-200:]])

    def acl_witness(self, props: dict) -> None:
        w, r = self.witness, self.report
        folder = props["Folder"]
        rights = props["Grants"][0].get("Rights", "Read")
        probe = w.tmp / "written-by-the-service-account.txt"
        probe.write_text("hello from the container's account\n")

        def reads():
            user, password = self.active()
            out = w.smbclient(user, password, "ls", directory=folder)
            return check(w.smb_ok(out), "lists", "refused", [] if w.smb_ok(out) else [out.stdout.strip()[-200:]])

        def writes():
            user, password = self.active()
            out = w.smbclient(user, password, f'put "{probe}" "probe-{uuid.uuid4().hex[:6]}.txt"', directory=folder)
            can = w.smb_ok(out)
            if rights == "Read":
                return check(not can, "refused", "WROTE", ["Read must not allow writing"] if can else [])
            return check(can, "writes", "refused", [] if can else [out.stdout.strip()[-200:]])

        r.step(f"  witness (smbclient): the active account lists {folder} (the grant)", reads)
        r.step(f"  witness (smbclient): the active account {'may not write' if rights == 'Read' else 'writes'} in {folder} ({rights})", writes)

    def content_ok(self, props: dict, name: str, key: str | None = None) -> Result:
        user, password = self.active()
        key = key or f"{props['Prefix']}/{name}"
        want = self.lcf.aws["s3"].get_object(Bucket=props["Bucket"], Key=key)["Body"].read()
        got = self.witness.download(user, password, props["Folder"], name.replace("/", "\\"))
        return check(got == want, f"{len(want)} B", "differs" if got is not None else "missing")

    # ── the container's preflight ──
    def task_container(self) -> dict:
        for lid in self.order:
            if self.lcf.stack.resource(lid)["Type"] == "AWS::ECS::TaskDefinition":
                defs = self.lcf.stack.resource(lid)["Properties"]["ContainerDefinitions"]
                container = next(c for c in defs if c.get("Essential", True))
                part = {k: container[k] for k in ("Name", "EntryPoint", "Command", "Environment", "Secrets") if k in container}
                return self.lcf.stack.resolve(part, f"{lid}.ContainerDefinitions.{container.get('Name')}")
        raise cfn.Unresolved("the template has no AWS::ECS::TaskDefinition")

    def preflight(self) -> None:
        r, w, lcf = self.report, self.witness, self.lcf
        r.phase("The container's preflight (what a Fargate task would do first)", """The task definition's container Environment and Secrets,
            resolved from the template, are given to target/debug/fargate-smb-mount (the Linux build of the entrypoint):
            first as ECS gives them (the Secrets' SSM values injected as SMB_USERNAME/SMB_PASSWORD), then as the template
            gives them with CredentialDelivery=task-role (SMB_*_PARAMETER: the entrypoint reads SSM itself, the password
            never enters the container's environment); `doctor` runs the preflight, `--plan` prints the Windows
            commands a start would run (New-SmbGlobalMapping, the IIS virtual directory).""")
        container = {}

        def resolve():
            container.update(self.task_container())
            return Result(True, details=[f"{e['Name']}={e['Value']}" for e in container.get("Environment", [])] +
                          [f"secret {s['Name']} <- {s['ValueFrom']}" for s in container.get("Secrets", [])])

        if not r.step("resolve the task definition's container environment and secrets", resolve).ok:
            return
        base = {e["Name"]: str(e["Value"]) for e in container.get("Environment", [])}
        base.update(self.settings.get("ContainerEnvironment", {}))
        aws_env = {"AWS_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        self.preflight_outputs: list[str] = []

        def ssm_name(value_from: str) -> str:
            return "/" + value_from.split(":parameter/", 1)[1] if ":parameter/" in value_from else value_from

        def run(args, env) -> subprocess.CompletedProcess:
            out = subprocess.run([str(binary("fargate-smb-mount")), *args], env={"PATH": os.environ["PATH"], **env},
                                 capture_output=True, text=True, timeout=120)
            self.preflight_outputs.append(out.stdout + out.stderr)
            return out

        def ecs_secrets():
            env = dict(base)
            for s in container.get("Secrets", []):
                env[s["Name"]] = w.parameter(ssm_name(s["ValueFrom"]))["Value"]  # what the ECS agent does
            out = run(["doctor"], env)
            lines = [ln for ln in out.stdout.splitlines() if ln.strip()][-5:]
            return check(out.returncode == 0 and "every check passed" in out.stdout, "passed", f"exit {out.returncode}", lines)

        def task_role_container() -> dict:
            # The same template with CredentialDelivery=task-role: its Conditions drop the Secrets
            # and give the entrypoint the parameters' names instead.
            saved = dict(self.lcf.stack.parameters)
            self.lcf.stack.set_parameters({**saved, "CredentialDelivery": "task-role"})
            try:
                return self.task_container()
            finally:
                self.lcf.stack.set_parameters(saved)

        def ssm_parameters():
            alt = task_role_container()
            if alt.get("Secrets"):
                return Result(False, "Secrets", ["CredentialDelivery=task-role still gives the container Secrets"])
            env = {e["Name"]: str(e["Value"]) for e in alt.get("Environment", [])}
            env.update(self.settings.get("ContainerEnvironment", {}))
            env.update(aws_env)
            if "SMB_PASSWORD_PARAMETER" not in env:
                return Result(False, "no SMB_PASSWORD_PARAMETER", sorted(env))
            out = run(["doctor"], env)
            lines = [ln for ln in out.stdout.splitlines() if "SSM parameter" in ln or "passed" in ln][:3]
            return check(out.returncode == 0 and "every check passed" in out.stdout, "passed", f"exit {out.returncode}",
                         lines or out.stdout.splitlines()[-5:])

        def plan():
            env = {**base, **aws_env}
            for s in container.get("Secrets", []):
                env[f"{s['Name']}_PARAMETER"] = ssm_name(s["ValueFrom"])
            command = [c for c in container.get("Command", [])]
            out = run(["--plan", "--json", *command], env)
            if out.returncode != 0:
                return Result(False, f"exit {out.returncode}", out.stdout.splitlines()[-5:] + out.stderr.splitlines()[-5:])
            p = json.loads(out.stdout)
            maps = [f"{m['local']} -> {m.get('remote', '')}" for m in p.get("mappings", [])]
            vdirs = [" ".join(v["add_if_missing"]["args"]) for v in p.get("virtual_directories", [])]
            return check(bool(maps) and bool(vdirs), "planned", "empty",
                         [f"New-SmbGlobalMapping {', '.join(maps)} (-RequirePrivacy, credential via the child's environment only)",
                          f"appcmd {'; '.join(vdirs)}", f"then runs {' '.join(p.get('main_process', []))}"])

        r.step("doctor, credential as ECS injects the Secrets (SMB_USERNAME / SMB_PASSWORD)", ecs_secrets)
        r.step("doctor, CredentialDelivery=task-role: the entrypoint reads SSM itself (the template's SMB_*_PARAMETER)", ssm_parameters)
        r.step(f"--plan --json {' '.join(container.get('Command', []))}: the Windows commands a task start would run", plan)

    # ── content sync ──
    def sync(self) -> None:
        r, lcf, w = self.report, self.lcf, self.witness
        r.phase("Content sync (S3 -> EventBridge -> the share, between deployments)", """An object is put in the content bucket; the
            S3 "Object Created" event (shaped like events/sync-content/) is matched against the template's EventBridge
            rules and delivered the way the matching rule's target says: through the SQS queue (moto) as the Lambda SQS
            event source delivers it. Then the same event is also sent to the function directly, as an EventBridge
            target would. smbclient reads the file back from the share as the service account.""")
        bucket_lid = next((lid for lid in self.order if lcf.stack.resource(lid)["Type"] == "AWS::S3::Bucket"), None)
        sync_lid = next((lid for lid in self.order if lcf.kind(lid) == "function" and any(
            (e or {}).get("Type") in ("SQS", "EventBridgeRule", "S3") for e in (lcf.stack.resource(lid)["Properties"].get("Events") or {}).values())), None)
        if not bucket_lid or not sync_lid:
            r.step("find the content bucket and the sync function", lambda: Result(False, "missing"))
            return
        bucket = lcf.stack.resources[bucket_lid].ref
        env = lcf.functions[sync_lid].env
        prefix, folder = env["PREFIX"].strip("/"), env["FOLDER"]
        seq = [int(time.time() * 1000) << 20]

        def put(name: str, body: bytes) -> dict:
            key = f"{prefix}/{name}"
            etag = lcf.aws["s3"].put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')
            seq[0] += 1
            return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Object Created", "source": "aws.s3",
                    "account": ACCOUNT, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "region": REGION,
                    "resources": [f"arn:aws:s3:::{bucket}"],
                    "detail": {"version": "0", "bucket": {"name": bucket},
                               "object": {"key": urllib.parse.quote_plus(key, safe="/"), "size": len(body), "etag": etag,
                                          "sequencer": f"{seq[0]:018X}"},
                               "request-id": uuid.uuid4().hex[:16].upper(), "requester": ACCOUNT, "reason": "PutObject"}}

        def witness(name: str, body: bytes) -> Result:
            user, password = self.active()
            got = w.download(user, password, folder, name)
            return check(got == body, f"{len(body)} B", "missing" if got is None else "differs",
                         [] if got == body else [f"\\\\…\\{folder}\\{name} on the share is {'absent' if got is None else 'different'}"])

        # 1. as the template wires it
        body = f"<p>news written to S3 at {time.strftime('%H:%M:%S')}</p>\n".encode()
        event = put("news.html", body)
        routes = []

        def match() -> Result:
            for lid in lcf.template["Resources"]:
                res = lcf.stack.resource(lid)
                if res.get("Type") != "AWS::Events::Rule" or not lcf.stack.included(lid):
                    continue
                pattern = lcf.stack.resolve(res["Properties"].get("EventPattern", {}), f"{lid}.EventPattern")
                if cfn.pattern_matches(pattern, event):
                    for target in res["Properties"].get("Targets", []):
                        t = lcf.stack.resolve({k: target[k] for k in target if k in ("Arn", "Input", "InputPath", "InputTransformer")},
                                              f"{lid}.Targets.{target.get('Id')}")
                        routes.append((lid, t))
            return check(bool(routes), f"{len(routes)} target", "no rule", [f"{lid} -> {t['Arn']}" for lid, t in routes])

        r.step(f"put {prefix}/news.html in the content bucket; an EventBridge rule of the template matches its event", match)

        def deliver() -> Result:
            lid, target = routes[0]
            message = cfn.target_input(target, event)
            queue = next((q for q, res in lcf.stack.resources.items() if res.attrs.get("Arn") == target["Arn"] and
                          lcf.stack.resource(q)["Type"] == "AWS::SQS::Queue"), None)
            if queue:
                url = lcf.stack.resources[queue].ref
                lcf.aws["sqs"].send_message(QueueUrl=url, MessageBody=message)
                got = lcf.aws["sqs"].receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]).get("Messages", [])
                payload = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                                        "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
                                        "eventSource": "aws:sqs", "eventSourceARN": target["Arn"], "awsRegion": REGION} for m in got]}
                status, answer = lcf.functions[sync_lid].invoke(payload)
                for m in got:
                    if not any(f.get("itemIdentifier") == m["MessageId"] for f in (answer or {}).get("batchItemFailures", [])):
                        lcf.aws["sqs"].delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                how = f"SQS batch of {len(got)} from {queue}"
            else:
                status, answer = lcf.functions[sync_lid].invoke(json.loads(message))
                how = "direct invocation"
            seen = witness("news.html", body)
            tail = [ln for ln in lcf.functions[sync_lid].bootstrap.stdout_lines()[-3:] if "reject" in ln or "error" in ln.lower()]
            return Result(seen.ok, seen.status if seen.ok else f"{status}", [f"{how}: function answered {json.dumps(answer)[:200]}"] +
                          seen.details + [f"log: {ln[:300]}" for ln in tail])

        if routes:
            r.step(f"deliver it as {routes[0][0]}'s target says; witness (smbclient): news.html on the share", deliver,
                   key="sync-through-the-template-queue")

        # 2. straight to the function, as an EventBridge target would
        body2 = b"<p>a second change, delivered as an EventBridge event</p>\n"
        event2 = put("direct.html", body2)

        def direct() -> Result:
            status, answer = lcf.functions[sync_lid].invoke(event2)
            seen = witness("direct.html", body2)
            return Result(status == "response" and seen.ok, seen.status, [f"answer {json.dumps(answer)[:200]}"] + seen.details)

        r.step("send an EventBridge event to sync-content directly; witness (smbclient): direct.html on the share", direct)

        # 3. a delete: a delete marker in the versioned bucket, the "Object Deleted" rule, direct delivery
        def delete() -> Result:
            key = f"{prefix}/direct.html"
            marker = lcf.aws["s3"].delete_object(Bucket=bucket, Key=key).get("DeleteMarker", False)
            seq[0] += 1
            gone = {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Object Deleted", "source": "aws.s3",
                    "account": ACCOUNT, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "region": REGION,
                    "resources": [f"arn:aws:s3:::{bucket}"],
                    "detail": {"version": "0", "bucket": {"name": bucket},
                               "object": {"key": key, "sequencer": f"{seq[0]:018X}"}, "reason": "DeleteObject",
                               "deletion-type": "Delete Marker Created" if marker else "Permanently Deleted"}}
            rules = [lid for lid in lcf.template["Resources"] if lcf.stack.resource(lid).get("Type") == "AWS::Events::Rule"
                     and lcf.stack.included(lid) and cfn.pattern_matches(
                         lcf.stack.resolve(lcf.stack.resource(lid)["Properties"].get("EventPattern", {}), lid), gone)]
            status, answer = lcf.functions[sync_lid].invoke(gone)
            user, password = self.active()
            still = w.download(user, password, folder, "direct.html")
            ok = bool(rules) and status == "response" and still is None
            return check(ok, "removed", "no rule" if not rules else "still there",
                         [f"delete marker: {marker}; matching rule: {', '.join(rules) or 'none'}; answer {json.dumps(answer)[:120]}"])

        r.step("delete direct.html (delete marker); the Object Deleted rule matches; witness: the file is gone", delete)

    # ── rotation ──
    def rotate(self) -> None:
        r, lcf, w = self.report, self.lcf, self.witness
        r.phase("Password rotation (the EventBridge Scheduler schedule)", """The schedule's target (resolved from the template) is invoked
            with the schedule's Input: the function resets the inactive account of the pair, proves the new password with
            an SMB logon, switches SSM (password, then username) and forces a new deployment of the ECS service (a moto
            stand-in). A dry run first prints the plan and changes nothing.""")
        schedule = None
        for lid in lcf.template["Resources"]:
            res = lcf.stack.resource(lid)
            if res.get("Type") == "AWS::Scheduler::Schedule" and lcf.stack.included(lid):
                target = lcf.stack.resolve({k: v for k, v in res["Properties"]["Target"].items() if k in ("Arn", "Input")}, f"{lid}.Target")
                fn = next((f for f in lcf.functions.values() if lcf.stack.resources[f.logical_id].attrs["Arn"] == target["Arn"]), None)
                if fn and fn.binary_name == "rotate-password":
                    schedule = (lid, target, fn)
        if schedule is None:
            r.step("find the rotation schedule", lambda: Result(False, "missing"))
            return
        lid, target, fn = schedule
        prefix = lcf.stack.parameters["ParameterPrefix"]
        before_user, before_password = self.active()
        service = next((x for x in self.order if lcf.stack.resource(x)["Type"] == "AWS::ECS::Service"), None)

        def deployment() -> str | None:
            if not service:
                return None
            res = lcf.stack.resources[service]
            svc = lcf.aws["ecs"].describe_services(cluster=res.ref.split("/")[-2], services=[res.ref])["services"][0]
            return svc["deployments"][0]["id"] if svc.get("deployments") else None

        deployment_before = deployment()

        def dry() -> Result:
            status, answer = fn.invoke({"dryRun": True})
            ok = status == "response" and answer.get("outcome") == "dry-run" and self.active() == (before_user, before_password)
            plan = answer.get("plan") if isinstance(answer, dict) else None
            return check(ok, "dry-run", str(answer)[:80], [f"plan: {p}" for p in (plan or [])][:4])

        r.step(f"{lid}: dry run {{\"dryRun\": true}} (prints the plan, SSM unchanged)", dry)

        def rotate() -> Result:
            status, answer = fn.invoke(json.loads(target.get("Input") or "{}"))
            ok = status == "response" and isinstance(answer, dict) and answer.get("outcome") == "rotated"
            return check(ok, "rotated", str(answer)[:80], [f"Input {target.get('Input')}"])

        r.step(f"{lid}: invoke {fn.name} with the schedule's Input", rotate)
        for line in w.show_parameters(prefix):
            r.info(line)
        r.step("  witness (smbclient): the newly active account logs on with the rotated SSM password",
               lambda: check(self.active()[0] != before_user and self.logon_ok().ok, self.active()[0], "not switched"))
        r.step(f"  witness (smbclient): {before_user} still logs on with its old password (until the next rotation)",
               lambda: check(w.smb_ok(w.smbclient(before_user, before_password, "ls")), "ok", "refused"))
        if service:
            r.step(f"  witness (boto3): a new deployment of the ECS service stand-in {service} was forced",
                   lambda: check(deployment() != deployment_before, "forced", "no deployment"))

    # ── update ──
    def update(self) -> None:
        r, lcf = self.report, self.lcf
        changes = self.settings.get("Update", {})
        r.phase("Stack update (UPDATE_IN_PROGRESS)", f"""The parameters file's Update values are applied: {', '.join(f'{k}={v}' for k, v in changes.items())}.
            As CloudFormation does, every resource is resolved again in order; a function whose environment changed is
            restarted (a configuration update), and a custom resource whose resolved properties changed gets an Update
            request with OldResourceProperties - the others get nothing. A new physical id would be a replacement: the
            old one is deleted at the end (cleanup).""")
        prefix = lcf.stack.parameters.get("ContentPrefix", "site")
        new_prefix = changes.get("ContentPrefix", prefix)
        if new_prefix != prefix:
            bucket = next(lcf.stack.resources[x].ref for x in self.order if lcf.stack.resource(x)["Type"] == "AWS::S3::Bucket")
            svg = (ROOT / "container" / "site" / "content" / "fargate-smb.svg").read_bytes().replace(b"#ff9900", b"#1d8102")
            lcf.aws["s3"].put_object(Bucket=bucket, Key=f"{new_prefix}/fargate-smb.svg", Body=svg)
            lcf.aws["s3"].put_object(Bucket=bucket, Key=f"{new_prefix}/index.html", Body=b"<html><body>v2 <img src='fargate-smb.svg'></body></html>\n")
            r.info(f"content: a v2 site (green logo) uploaded to s3://{bucket}/{new_prefix}/")
        old_params = dict(self.settings["Parameters"])

        def refused() -> Result:
            bad = {**old_params, **changes, "ServiceAccountName": "bad*name"}
            try:
                lcf.stack.set_parameters(bad)
            except cfn.Unresolved as e:
                lcf.stack.set_parameters(old_params)
                return Result(True, "refused", [str(e).splitlines()[-1].strip()])
            lcf.stack.set_parameters(old_params)
            return Result(False, "accepted")

        r.step("an invalid parameter (ServiceAccountName bad*name) is refused before any request is sent", refused)
        if not r.step("apply the Update parameters (AllowedPattern, Rules, Conditions checked again)",
                      lambda: (lcf.stack.set_parameters({**old_params, **changes}), Result(True))[1]).ok:
            return
        self.settings["Parameters"] = {**old_params, **changes}
        replaced = []
        for lid in self.order:
            kind = lcf.kind(lid)
            if kind == "function":
                changed = lcf.restart_if_changed(lid)
                if changed:
                    f = lcf.functions[lid]
                    r.info(f"function  {lid}: environment changed ({', '.join(f'{k}={f.env[k]}' for k in changed if k in f.env)}): restarted")
            elif kind == "custom":
                replaced += self.update_custom(lid)
        for lid, physical, props in replaced:
            r.step(f"cleanup: Delete the replaced {lid} {physical}",
                   lambda: check(lcf.send(lid, "Delete", props, physical).get("Status") == "SUCCESS", "SUCCESS", "FAILED"))

    def update_custom(self, lid: str) -> list:
        lcf, r = self.lcf, self.report
        t = lcf.stack.resource(lid)["Type"]
        old = lcf.properties.get(lid)
        if old is None:
            return []
        new = lcf.resolve_props(lid)
        diff = sorted(k for k in set(new) | set(old) if new.get(k) != old.get(k))
        if not diff:
            r.info(f"unchanged {lid} ({t}): its resolved properties are the same, no request")
            return []
        physical = lcf.answers[lid]["PhysicalResourceId"]
        answer = {}

        def go() -> Result:
            answer.update(lcf.send(lid, "Update", new, physical, old))
            ok = answer.get("Status") == "SUCCESS"
            details = ["changed: " + "; ".join(leaf_diff(old, new))]
            if ok:
                lcf.properties[lid] = new
                lcf.answers[lid] = answer
                lcf.stack.resources[lid] = cfn.Resolved(answer["PhysicalResourceId"], answer.get("Data") or {}, "custom")
            else:
                details.append(f"reason: {answer.get('Reason')}")
            return Result(ok, answer.get("Status"), details)

        res = r.step(f"Update {t} {lid}", go)
        if not res.ok:
            return []
        self.after(lid, "Update")
        if answer["PhysicalResourceId"] != physical:
            return [(lid, physical, old)]
        return []

    # ── delete ──
    def delete(self) -> None:
        r, lcf, w = self.report, self.lcf, self.witness
        r.phase("Stack delete (DELETE_IN_PROGRESS)", """Delete requests in the reverse of the creation order, each with the
            resource's last properties and physical id; then the witnesses: the content stays (RemoveOnDelete false), the
            grant is gone, the accounts are gone (logon refused, ldapsearch finds nothing), the parameters are gone.""")
        customs = [lid for lid in self.order if lcf.kind(lid) == "custom" and lid in lcf.answers]
        user, password = self.active()
        account_data = {}
        for lid in reversed(customs):
            t = lcf.stack.resource(lid)["Type"]
            props, physical = lcf.properties[lid], lcf.answers[lid]["PhysicalResourceId"]
            if t == "Custom::AdServiceAccount":
                account_data = dict(lcf.answers[lid].get("Data") or {}, ou=props.get("OrganizationalUnit") or self.samba["FARGATE_SMB_OU"])
            res = r.step(f"Delete {t} {lid}", lambda: check(lcf.send(lid, "Delete", props, physical).get("Status") == "SUCCESS", "SUCCESS", "FAILED"))
            if not res.ok:
                continue
            if t == "Custom::WebContent":
                r.step("  witness (smbclient): the copied content stays on the share (RemoveOnDelete: false)",
                       lambda: check(w.download(user, password, props["Folder"], "fargate-smb.svg") is not None, "stays", "gone"))
            elif t == "Custom::ShareAcl":
                probe = w.tmp / "after-delete.txt"
                probe.write_text("x")
                r.step(f"  witness (smbclient): {user} may no longer write in {props['Folder']}",
                       lambda: check(not w.smb_ok(w.smbclient(user, password, f'put "{probe}" after-delete.txt', directory=props["Folder"])),
                                     "refused", "WROTE"))
            elif t == "Custom::AdServiceAccount":
                names = account_data.get("SamAccountNames", "").split(",") + [account_data.get("GroupName", "")]
                r.step(f"  witness (smbclient + ldapsearch): {user} is refused, {', '.join(names)} are gone",
                       lambda: check(not w.smb_ok(w.smbclient(user, password, "ls")) and w.ldap(account_data["ou"], names) == [],
                                     "gone", "still there"))
            elif t == "Custom::SsmParameters":
                lines = w.show_parameters(props["ParameterPrefix"])
                r.step("  witness (boto3): the parameters are gone",
                       lambda: check(all("(absent)" in ln for ln in lines), "gone", "still there", lines))
                r.step("Delete Custom::SsmParameters again (CloudFormation may repeat a Delete): still SUCCESS",
                       lambda: check(lcf.send(lid, "Delete", props, physical).get("Status") == "SUCCESS", "SUCCESS", "FAILED"))

    def share_cleanup(self) -> None:
        """The content stays after Delete (RemoveOnDelete: false); this run's folder is removed
        afterwards so that runs do not pile up on the share."""
        top = self.lcf.stack.parameters.get("ContentFolder", "").split("\\")[0]
        if self.run_tag in top and hasattr(self, "witness"):
            out = self.witness.smbclient("Administrator", self.witness.admin_password, f'deltree "{top}"')
            if self.witness.smb_ok(out):
                self.report.info(f"share: this run's folder {top} removed")
            elif "NO_SUCH_FILE" not in out.stdout + out.stderr:
                self.report.info(f"share: could not remove {top}: {out.stdout.strip()[-200:]}")

    def admin_cleanup(self) -> None:
        name = self.lcf.stack.parameters.get("AdminPasswordParameterName") if self.lcf else None
        if name:
            try:
                self.lcf.aws["ssm"].delete_parameter(Name=name)
            except Exception:  # noqa: BLE001 - already gone
                pass

    def leak_check(self) -> None:
        r, lcf, w = self.report, self.lcf, self.witness
        r.phase("Leak check", """Every password seen in SSM (generated, rotated, regenerated) and the admin password are searched
            for in every line the bootstraps and the entrypoint wrote and in all CloudFormation traffic (requests and
            responses). Only fingerprints are ever printed.""")

        def search() -> Result:
            traffic = json.dumps(lcf.sent) + "".join(b.decode(errors="replace") for b in lcf.responses.raw)
            printed = sys.stdout.text() if isinstance(sys.stdout, Tee) else ""
            text = lcf.all_output() + traffic + "".join(getattr(self, "preflight_outputs", [])) + printed
            secrets = w.passwords | {w.admin_password, w.admin_password.strip()}
            leaked = [fingerprint(p) for p in secrets if p and p in text]
            return check(not leaked, "not found", "FOUND",
                         [f"{len(w.passwords)} service-account passwords + the admin password; {len(text):,} characters searched "
                          f"(bootstrap and entrypoint output, requests and responses, this report)"] +
                         ([f"leaked: {', '.join(leaked)}"] if leaked else []))

        r.step("no password in any log line or CloudFormation message", search)


class _PlanOnlyEnv(dict):
    """--plan-only: the stack's values are not needed; stand-in text that passes the patterns."""

    def __getitem__(self, key):
        return {"FARGATE_SMB_OU": "OU=fargate-smb,DC=example,DC=test"}.get(key, "/dev/null")


class _AnyAttrs(dict):
    def __init__(self, lid):
        super().__init__()
        self.lid = lid

    def __contains__(self, key):
        return True

    def __getitem__(self, key):
        return f"<{self.lid}.{key}>"

    def get(self, key, default=None):
        return self[key]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("moto_url", nargs="?", help="moto's URL (default: .local/stack/moto.url)")
    parser.add_argument("--moto", help=argparse.SUPPRESS)
    parser.add_argument("--template", default=str(ROOT / "cloudformation" / "template.yaml"))
    parser.add_argument("--parameters", default=str(ROOT / "scripts" / "demo-parameters.json"))
    parser.add_argument("--plan-only", action="store_true", help="resolve and order the template; run nothing")
    parser.add_argument("--binaries", action="store_true", help="print the binaries the demo runs (for cargo build --bin)")
    args = parser.parse_args()
    if args.binaries:
        template = cfn.load_template(Path(args.template))
        names = {((r.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary")
                 for r in template["Resources"].values() if r.get("Type") == "AWS::Serverless::Function"}
        print("\n".join(sorted(n for n in names if n) + ["fargate-smb-mount"]))
        return 0
    args.moto = args.moto or args.moto_url
    if not args.moto and not args.plan_only:
        url_file = ROOT / ".local" / "stack" / "moto.url"
        if not url_file.exists():
            parser.error("moto is not running: start the stack (scripts/stack start) or give its URL")
        args.moto = url_file.read_text().strip()
    sys.stdout = Tee(sys.stdout)
    return Demo(args).run()


if __name__ == "__main__":
    sys.exit(main())

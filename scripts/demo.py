"""The local demo (see scripts/demo): the stack's whole lifecycle, driven as CloudFormation would
drive it, with every custom resource's properties, every function's environment and the task
definition's container environment taken from cloudformation/template.yaml, resolved against
scripts/demo-parameters.json (scripts/cfn_local.py does the template work).

Usage: demo.py [MOTO_URL] [--template PATH] [--parameters PATH] [--scenario all|create-delete]
               [--fail-create LOGICAL_ID] [--plan-only | --binaries]

--plan-only loads and checks the template and prints the plan (every resource in its creation
wave), touching nothing: the quick drift check. --fail-create plays only a create that fails at
that resource and CloudFormation's rollback (the default run plays one at the ECS service too).
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
import local_network as net  # noqa: E402
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
    # CredentialStore secrets-manager: the secret as GenerateSecretString makes it; the rotation
    # schedule and the Lambda permission are recorded with their resolved properties (the demo
    # plays Secrets Manager's rotation from them).
    "AWS::SecretsManager::Secret": ["Name", "Description", "KmsKeyId", "GenerateSecretString", "SecretString", "Tags"],
    "AWS::SecretsManager::RotationSchedule": ["SecretId", "RotationLambdaARN", "RotationRules", "RotateImmediatelyOnUpdate"],
    "AWS::Lambda::Permission": ["FunctionName", "Action", "Principal", "SourceArn", "SourceAccount"],
}
# Secrets Manager's rotation protocol, in the order the service invokes the steps.
ROTATION_STEPS = ["createSecret", "setSecret", "testSecret", "finishSecret"]
FUNCTION_PARTS = ["FunctionName", "Environment", "LoggingConfig", "Timeout", "MemorySize", "Events"]
# Security groups and their rules: stand-ins that open and close the loopback forwarders
# (scripts/local_network.py) the functions reach the share and the DC through.
NETWORK = ("AWS::EC2::SecurityGroup", "AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress")


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

    return re.sub(r"\{(run|moto|net:[a-z]+|env:[A-Z0-9_]+|file:[A-Z0-9_]+)\}", one, value)


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
        self.stopped = False

    def invoke(self, payload, timeout: float | None = None):
        return self.runtime.invoke(payload, timeout=timeout or self.timeout + 5, deadline_s=self.timeout)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.bootstrap.stop()
        self.outputs.append(self.bootstrap.stdout_path.read_text(errors="replace") +
                            self.bootstrap.stderr_path.read_text(errors="replace"))
        for path in (self.bootstrap.stdout_path, self.bootstrap.stderr_path):
            path.unlink(missing_ok=True)  # kept in memory for the leak check; no litter in /tmp
        self.runtime.close()

    def output(self) -> str:
        return "".join(self.outputs) + ("" if self.stopped else self.bootstrap.output())


class LocalCloudFormation:
    """Creates, updates and deletes every resource of the template, in CloudFormation's dependency
    waves: custom resources through their functions' real bootstraps, functions as local
    bootstraps, the AWS resources they use as stand-ins in moto, the security groups and their
    rules as the loopback forwarders they open (local_network), and the rest (roles, policies,
    rules, the load balancer...) recorded with a made-up physical id."""

    def __init__(self, template_path: Path, settings: dict, moto_url: str, report: Report, network: net.Network | None = None):
        self.settings, self.moto_url, self.report = settings, moto_url, report
        self.template_path = template_path
        self.template = cfn.load_template(template_path)
        self.stack = cfn.Stack(self.template, settings["Parameters"], settings["StackName"], REGION, ACCOUNT,
                               settings.get("Imports"))
        creds = dict(endpoint_url=moto_url, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
        self.aws = {s: boto3.client(s, **creds) for s in ("ssm", "kms", "dynamodb", "sqs", "ecs", "secretsmanager")}
        self.aws["s3"] = boto3.client("s3", config=botocore.config.Config(s3={"addressing_style": "path"}), **creds)
        self.responses = ResponseUrl()
        self.network = network or net.Network()
        self.functions: dict[str, Function] = {}
        self.sent: list[dict] = []          # every request CloudFormation sent
        self.answers: dict[str, dict] = {}  # logical id -> last answer (SUCCESS, or a failed Create's)
        self.properties: dict[str, dict] = {}  # logical id -> the properties last applied
        self.stand_ins: dict[str, str] = {}  # logical id -> what it is in moto
        self.stand_in_props: dict[str, dict] = {}  # logical id -> the properties it was made (or updated) with
        self.exists: list[str] = []          # what the stack holds now, in creation order
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
        if t in NETWORK:
            return "network"
        return "recorded"

    def used_part(self, logical_id: str) -> dict:
        r = self.stack.resource(logical_id)
        props = r.get("Properties") or {}
        kind = self.kind(logical_id)
        if kind in ("custom", "network"):
            return props
        if kind == "function":
            return {k: props[k] for k in FUNCTION_PARTS if k in props}
        if kind == "stand-in":
            return {k: props[k] for k in STAND_INS[r["Type"]] if k in props}
        return {}

    def plan(self) -> list[list[str]]:
        """Every resource the Conditions include, in CloudFormation's creation waves, ordered by
        cfn-lint's template graph (cfn_local.dependency_graph)."""
        self.deps = cfn.dependency_graph(self.template, self.stack.conditions, str(self.template_path))
        self.waves = cfn.creation_waves(self.deps, list(self.template["Resources"]))
        self.function_groups = set()
        for lid in self.deps:
            if self.kind(lid) == "function":
                vpc = (self.stack.resource(lid).get("Properties") or {}).get("VpcConfig") or {}
                self.function_groups |= cfn.references(vpc.get("SecurityGroupIds") or [], self.stack.conditions)
        return self.waves

    def deletion_waves(self, logical_ids: list[str]) -> list[list[str]]:
        return cfn.deletion_waves({lid: self.deps.get(lid, set()) for lid in logical_ids}, list(self.template["Resources"]))

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
        # The template sets no FunctionName (it would cap the stack name): CloudFormation's name.
        name = part.get("FunctionName") or cfn.generated_name(self.stack.stack_name, logical_id, self.suffix, 64)
        if len(name) > 64:  # Lambda's CreateFunction refuses it: the stack create fails here
            raise cfn.Unresolved(f"{logical_id}: FunctionName {name!r} has {len(name)} characters; Lambda takes at most 64")
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
        # A name the template does not set is CloudFormation's, within the service's limit.
        limit = {"AWS::S3::Bucket": 63, "AWS::SQS::Queue": 80}.get(t, 255)
        generated = cfn.generated_name(self.stack.stack_name, logical_id, self.suffix, limit)
        if t == "AWS::KMS::Key":
            meta = self.aws["kms"].create_key(Description=p.get("Description", ""))["KeyMetadata"]
            res, what = cfn.Resolved(meta["KeyId"], {"Arn": meta["Arn"], "KeyId": meta["KeyId"]}), f"moto KMS key {meta['KeyId']}"
        elif t == "AWS::S3::Bucket":
            name = p.get("BucketName") or generated.lower()
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
        elif t == "AWS::SecretsManager::Secret":
            name = p.get("Name") or cfn.generated_name(self.stack.stack_name, logical_id, self.suffix, 512)
            args = {"Name": name, "SecretString": self.secret_string(p), "Description": p.get("Description", "")}
            if p.get("KmsKeyId"):
                args["KmsKeyId"] = p["KmsKeyId"]
            if p.get("Tags"):
                args["Tags"] = p["Tags"]
            arn = self.aws["secretsmanager"].create_secret(**args)["ARN"]
            # Ref and Id: the secret's ARN, as CloudFormation answers.
            res = cfn.Resolved(arn, {"Id": arn})
            what = f"moto secret {name} ({'GenerateSecretString' if 'SecretString' not in p else 'SecretString'}; " \
                   f"KMS key {str(p.get('KmsKeyId', 'aws/secretsmanager')).rsplit('/', 1)[-1][:8]}…)"
        elif t == "AWS::SecretsManager::RotationSchedule":
            fn = next((f for f in self.functions.values() if self.stack.resources[f.logical_id].attrs.get("Arn") == p.get("RotationLambdaARN")), None)
            if fn is None:
                raise cfn.Unresolved(f"{logical_id}: RotationLambdaARN {p.get('RotationLambdaARN')} is not a function the local stack runs")
            res = cfn.Resolved(f"{p['SecretId']}", {})
            what = (f"recorded: Secrets Manager rotates {str(p['SecretId']).rsplit(':', 1)[-1]} with {fn.name}, "
                    f"{json.dumps(p.get('RotationRules'))}, RotateImmediatelyOnUpdate {p.get('RotateImmediatelyOnUpdate')} "
                    f"(the demo's rotation phase invokes the steps as the service does)")
        elif t == "AWS::Lambda::Permission":
            res = cfn.Resolved(f"{self.stack.stack_name}-{logical_id}-{self.suffix}", {})
            what = f"recorded: {p.get('Principal')} may {p.get('Action')} {str(p.get('FunctionName')).rsplit(':', 1)[-1]}" + \
                   (f" for {str(p['SourceArn']).rsplit(':', 1)[-1]}" if p.get("SourceArn") else "")
        else:
            raise cfn.Unresolved(f"{logical_id}: no stand-in for {t}")
        res.kind = "stand-in"
        self.stack.resources[logical_id] = res
        self.stand_ins[logical_id] = what
        self.stand_in_props[logical_id] = p
        return what

    def secret_string(self, p: dict) -> str:
        """What CloudFormation stores for an AWS::SecretsManager::Secret: SecretString, or
        GenerateSecretString's SecretStringTemplate with a password from GetRandomPassword (moto's,
        with the template's length, exclusions and classes) under GenerateStringKey."""
        if "SecretString" in p:
            return p["SecretString"]
        g = p.get("GenerateSecretString") or {}
        options = {"PasswordLength": int(g.get("PasswordLength", 32))}
        for key in ("ExcludeCharacters",):
            if g.get(key):
                options[key] = g[key]
        for key in ("ExcludeNumbers", "ExcludePunctuation", "ExcludeUppercase", "ExcludeLowercase", "IncludeSpace",
                    "RequireEachIncludedType"):
            if key in g:
                options[key] = g[key] in (True, "true")
        password = self.aws["secretsmanager"].get_random_password(**options)["RandomPassword"]
        if "GenerateStringKey" not in g:
            return password
        value = json.loads(g.get("SecretStringTemplate") or "{}")
        value[g["GenerateStringKey"]] = password
        return json.dumps(value)

    def write_current(self, arn: str, value: str) -> str:
        """A new value that becomes AWSCURRENT, as Secrets Manager's PutSecretValue does on AWS: the
        version that held AWSCURRENT gets AWSPREVIOUS, every other label stays where it is (an
        AWSPENDING left on that version by a finished rotation too). moto's PutSecretValue moves the
        label from its stale default version instead (LOCAL-STACK.md: its default read lags after
        UpdateSecretVersionStage), leaving two AWSCURRENT versions: so the value is put under a
        label of the demo's own, then AWSCURRENT is moved explicitly. Returns the new version id."""
        sm = self.aws["secretsmanager"]
        stages = sm.describe_secret(SecretId=arn).get("VersionIdsToStages", {})
        current = next(v for v, s in stages.items() if "AWSCURRENT" in s)
        version = str(uuid.uuid4())
        sm.put_secret_value(SecretId=arn, SecretString=value, ClientRequestToken=version, VersionStages=["DEMOWRITE"])
        sm.update_secret_version_stage(SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=version, RemoveFromVersionId=current)
        sm.update_secret_version_stage(SecretId=arn, VersionStage="DEMOWRITE", RemoveFromVersionId=version)
        return version

    def update_stand_in(self, logical_id: str) -> list[str]:
        """A stack update of a stand-in whose properties changed (the secret only: the other
        stand-ins' names and keys do not change in the demo). A changed GenerateSecretString makes
        CloudFormation write a whole new value, which becomes AWSCURRENT. Returns the changes."""
        if self.stack.resource(logical_id)["Type"] != "AWS::SecretsManager::Secret":
            return []
        old = self.stand_in_props.get(logical_id, {})
        new = self.stack.resolve(self.used_part(logical_id), f"{logical_id}.Properties")
        changes = leaf_diff(old, new)
        if not changes:
            return []
        sm, arn = self.aws["secretsmanager"], self.stack.resources[logical_id].ref
        if old.get("GenerateSecretString") != new.get("GenerateSecretString") or old.get("SecretString") != new.get("SecretString"):
            self.write_current(arn, self.secret_string(new))
        update = {k: new[k] for k in ("Description", "KmsKeyId") if k in new and new.get(k) != old.get(k)}
        if update:
            sm.update_secret(SecretId=arn, **update)
        self.stand_in_props[logical_id] = new
        return changes

    def create_network(self, logical_id: str) -> tuple[str, list]:
        """A security group or a rule: recorded with its resolved rules; the forwarders open for
        the paths the rules now allow. Returns what it is and the paths that changed."""
        t = self.stack.resource(logical_id)["Type"]
        props = self.stack.resolve(self.stack.resource(logical_id).get("Properties") or {}, f"{logical_id}.Properties")
        if t == "AWS::EC2::SecurityGroup":
            ref = "sg-" + hashlib.sha256(f"{self.stack.stack_name}/{logical_id}/{self.suffix}".encode()).hexdigest()[:17]
            res = cfn.Resolved(ref, {"GroupId": ref, "VpcId": props.get("VpcId", "")}, "network")
            if logical_id in self.function_groups:
                self.network.source_groups.add(ref)
        else:
            ref = f"sgr-{uuid.uuid4().hex[:17]}"
            res = cfn.Resolved(ref, {"Id": ref}, "network")
        rules = net.rules_of(logical_id, t, props, res.ref)
        self.stack.resources[logical_id] = res
        self.network.add(self.stack.stack_name, logical_id, rules)
        what = ", ".join(f"{r.direction} {r.protocol} {r.from_port}" + (f"-{r.to_port}" if r.to_port != r.from_port else "") +
                         f" {'from' if r.direction == 'ingress' else 'to'} {r.cidr or r.peer_group}" for r in rules)
        return f"{ref}: {what or 'no rules'}", self.network.evaluate()

    def record(self, logical_id: str) -> None:
        """A resource the local stack has nothing to run for (a role, a policy, a rule, the load
        balancer): it exists with a made-up id, so that references to it resolve."""
        t = self.stack.resource(logical_id)["Type"]
        service = t.split("::")[1].lower() if t.count("::") >= 2 else "cloudformation"
        name = f"{self.stack.stack_name}-{logical_id}-{self.suffix}"
        self.stack.resources[logical_id] = cfn.Resolved(name, _RecordedAttrs(f"arn:aws:{service}:{REGION}:{ACCOUNT}:{name}"), "recorded")

    def delete_resource(self, logical_id: str) -> tuple[str, list]:
        """Delete one resource that is not a custom resource. Returns what happened and the
        network paths that changed."""
        kind, changed = self.kind(logical_id), []
        what = "deleted"
        if kind == "function":
            f = self.functions[logical_id]
            if f.bootstrap.alive():
                f.bootstrap.process.terminate()
                f.bootstrap.process.wait(timeout=10)
            what = f"bootstrap {f.name} stopped"
        elif kind == "stand-in":
            what = self.remove_stand_in(logical_id)
        elif kind == "network":
            ref = self.stack.resources[logical_id].ref
            self.network.remove(self.stack.stack_name, logical_id)
            self.network.source_groups.discard(ref)
            changed = self.network.evaluate()
        self.exists.remove(logical_id)
        return what, changed

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

        live = [f for f in self.functions.values() if not f.stopped]
        for f in live:
            if f.bootstrap.alive():
                f.bootstrap.process.terminate()
        threads = [threading.Thread(target=f.stop) for f in live] + [threading.Thread(target=self.responses.close)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def all_output(self) -> str:
        return "".join(f.output() for f in self.functions.values())

    def remove_stand_in(self, lid: str) -> str:
        """Remove one stand-in from moto; says what was done."""
        t = self.stack.resource(lid)["Type"]
        res = self.stack.resources[lid]
        what = self.stand_ins.pop(lid, lid)
        if t == "AWS::S3::Bucket":
            s3 = self.aws["s3"]
            versions = s3.list_object_versions(Bucket=res.ref)
            for v in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
                s3.delete_object(Bucket=res.ref, Key=v["Key"], VersionId=v["VersionId"])
            # Emptied, not deleted: moto keeps every object it ever made, and its
            # /moto-api/data.json (the stack's readiness probe) fails on an object whose
            # bucket is gone.
            return "emptied (moto keeps its buckets)"
        if t == "AWS::DynamoDB::Table":
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
        elif t == "AWS::SecretsManager::Secret":
            # Gone at once, every version with it (moto would otherwise keep it in its recovery
            # window, and a run's secrets would pile up).
            self.aws["secretsmanager"].delete_secret(SecretId=res.ref, ForceDeleteWithoutRecovery=True)
            return "deleted from moto (ForceDeleteWithoutRecovery)"
        elif t in ("AWS::SecretsManager::RotationSchedule", "AWS::Lambda::Permission"):
            return "removed (recorded only)"
        return "removed from moto"

    def remove_stand_ins(self) -> list[str]:
        """What is left in moto (a retained or never deleted stand-in), removed so that runs do
        not pile up."""
        gone = []
        for lid in reversed(list(self.stand_ins)):
            try:
                self.remove_stand_in(lid)
                gone.append(lid)
            except Exception as e:  # noqa: BLE001
                gone.append(f"{lid} (not removed: {e})")
        return gone


class _RecordedAttrs(dict):
    """GetAtt on a recorded resource: any attribute, an ARN-shaped made-up value."""

    def __init__(self, arn: str):
        super().__init__()
        self.arn = arn

    def __contains__(self, key):
        return True

    def __getitem__(self, key):
        return self.arn if key.endswith("Arn") or key == "Arn" else f"{self.arn}/{key}"

    def get(self, key, default=None):
        return self[key]


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

    def secret(self, arn: str, stage: str | None = "AWSCURRENT", version_id: str | None = None) -> dict:
        """One version of the credential secret, its JSON value. The stage is always named: moto
        answers a GetSecretValue without one with the old version after AWSCURRENT moved
        (LOCAL-STACK.md), where AWS answers the new one."""
        args = {"SecretId": arn}
        if version_id:
            args["VersionId"] = version_id
        if stage:
            args["VersionStage"] = stage
        value = json.loads(self.lcf.aws["secretsmanager"].get_secret_value(**args)["SecretString"])
        if value.get("password"):
            self.passwords.add(value["password"])
        return value

    def versions(self, arn: str) -> dict[str, list[str]]:
        """DescribeSecret's VersionIdsToStages."""
        return self.lcf.aws["secretsmanager"].describe_secret(SecretId=arn).get("VersionIdsToStages", {})

    def harvest(self, arn: str) -> int:
        """Every version the secret holds, read by id: their passwords join the leak check."""
        sm = self.lcf.aws["secretsmanager"]
        ids = [v["VersionId"] for v in sm.list_secret_version_ids(SecretId=arn, IncludeDeprecated=True)["Versions"]]
        for version_id in ids:
            self.secret(arn, stage=None, version_id=version_id)
        return len(ids)

    def show_secret(self, arn: str) -> list[str]:
        lines = []
        for version_id, stages in sorted(self.versions(arn).items(), key=lambda kv: "AWSCURRENT" not in kv[1]):
            v = self.secret(arn, stage=None, version_id=version_id)
            lines.append(f"version {version_id[:8]}… {','.join(stages):<24} username {v.get('username')}  share {v.get('share')}  "
                         f"password {len(v.get('password', ''))} chars, {fingerprint(v.get('password', ''))} (value never printed)")
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

    def smbcacls(self, folder: str) -> list[str]:
        """The folder's ACEs as smbcacls shows them (numeric SIDs), as Administrator; on an error
        its one line (which names no SID)."""
        auth = self.tmp / f"{uuid.uuid4().hex}.auth"
        auth.write_text(f"username = Administrator\npassword = {self.admin_password.strip()}\ndomain = EXAMPLE\n")
        auth.chmod(0o600)
        try:
            out = subprocess.run(["smbcacls", "//127.0.0.1/share", folder, "-A", str(auth), "--numeric",
                                  "-s", self.samba["FARGATE_SMB_SMB_CONF"], "-m", "SMB3", "--client-protection=encrypt"],
                                 capture_output=True, text=True, timeout=60, cwd=self.tmp)
        finally:
            auth.unlink()
        aces = [ln.strip() for ln in out.stdout.splitlines() if ln.startswith("ACL:")]
        return aces if out.returncode == 0 else [(out.stdout + out.stderr).strip().splitlines()[-1:] or ["smbcacls failed"]][0]

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
        self.raw = json.loads(Path(args.parameters).read_text())
        self.network = net.Network()
        if args.plan_only:
            self.net_values = {"net:share": "127.0.0.2", "net:ldaps": "127.0.0.1:1636"}
        else:
            # Reserved now (bound, refusing), opened when the template's rules allow the path.
            self.share_forwarder = net.Forwarder.reserve("share", [f"127.0.0.{i}" for i in range(2, 255)], 445, ("127.0.0.1", 445))
            self.ldaps_forwarder = net.Forwarder.reserve("ldaps", ["127.0.0.1"], 0, ("127.0.0.1", 636))
            self.net_values = {"net:share": self.share_forwarder.host, "net:ldaps": self.ldaps_forwarder.address}
        self.tags = [self.run_tag]
        self.settings = self.fill(self.run_tag)
        self.report = Report(self.settings.get("KnownIssues", {}))
        self.stacks: list[LocalCloudFormation] = []
        self.failed: str | None = None
        self.failed_stack: LocalCloudFormation | None = None

    def fill(self, run_tag: str) -> dict:
        env = dict(self.samba) or {k: f"<{k}>" for k in ("FARGATE_SMB_OU",)}
        values = {"run": run_tag, "moto": self.args.moto or "http://127.0.0.1:5055", "env": env, **self.net_values}
        if self.args.plan_only:
            values["env"] = _PlanOnlyEnv()
        return placeholders(self.raw, values)

    # ── the phases ──
    def run(self) -> int:
        started = time.monotonic()
        print(f"{BOLD}fargate-smb local demo{RESET}: cloudformation/template.yaml's stack lifecycle, driven as CloudFormation would")
        print(f"{DIM}parameters: {os.path.relpath(self.args.parameters, ROOT)}; the real Lambda bootstraps (target/debug/*) behind "
              f"local Runtime APIs;\nAWS = moto; Active Directory and the SMB share = a Samba AD DC (EXAMPLE / example.test, "
              f"\\\\127.0.0.1\\share); witnesses: boto3, smbclient, smbcacls, ldapsearch{RESET}")
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
            evaluated; then every resource the Conditions include is put in CloudFormation's creation waves, from
            cfn-lint's template graph (Ref, GetAtt, Sub, DependsOn; edges in untaken Fn::If branches dropped).""")
        if not r.step("load cloudformation/template.yaml with the parameters file", self.load).ok:
            return
        plan = r.step("plan: every resource in creation waves (a resource starts when what it references exists)", self.make_plan)
        if not plan.ok:
            return
        if self.args.plan_only:
            r.step("resolve each custom resource's properties (references to earlier answers stubbed)", self.dry_resolve)
            return
        self.witness = Witness(self.lcf, self.samba)
        self.define_paths()
        if self.args.fail_create:
            self.rollback_scenario(self.args.fail_create, fresh=False)
            self.leak_check()
            return
        if not self.create():
            self.rollback()
            return
        full = self.args.scenario == "all"
        if full:
            self.preflight()
            self.sync()
            self.rotate()
            self.update("Update", "Stack update (UPDATE_IN_PROGRESS)")
            self.replacement()
            self.other_version_deletes()
        self.delete()
        if full:
            self.rollback_scenario("WebService", fresh=True)
        self.leak_check()

    def define_paths(self) -> None:
        """The network paths the functions need, gated by the template's rules (local_network)."""
        p = self.lcf.stack.parameters
        self.network.paths = [
            net.Path("functions -> file server", 445, self.share_forwarder, peer_group=p["FileServerSecurityGroupId"]),
            net.Path("functions -> domain controller", 636, self.ldaps_forwarder, peer_ip=self.first_dc(p["DomainControllerIps"])),
        ]

    @staticmethod
    def first_dc(value) -> str:
        """DomainControllerIps: a CommaDelimitedList or a comma-separated String, by template version."""
        return (value if isinstance(value, list) else str(value).split(","))[0].strip()

    def cleanup(self) -> None:
        r = self.report
        if not self.stacks:
            return
        if self.args.plan_only:
            for lcf in self.stacks:
                lcf.stop()
            return
        r.phase("Cleanup", """What a failed delete or rollback left is deleted as an operator would after fixing it (the
            network rules put back, each custom resource deleted again); the bootstraps are stopped, the stand-ins
            removed from moto, the admin parameter deleted and this run's folders removed from the share.""")
        for lcf in self.stacks:
            left = [lid for lid in reversed(lcf.exists) if lcf.kind(lid) == "custom"]
            if left:
                self.network.open_all()
                for lid in left:
                    answer = lcf.send(lid, "Delete", lcf.properties[lid], lcf.answers[lid]["PhysicalResourceId"])
                    r.info(f"{lcf.stack.stack_name}: {lid} left by the failed delete: Delete again -> {answer.get('Status')}")
            lcf.stop()
            gone = lcf.remove_stand_ins()
            if gone:
                r.info(f"{lcf.stack.stack_name}: stand-ins still in moto removed: {', '.join(gone)}")
        self.network.shutdown()
        self.admin_cleanup()
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
        self.lcf = LocalCloudFormation(Path(self.args.template), self.settings, self.args.moto or "http://127.0.0.1:9", self.report,
                                       self.network)
        self.stacks.append(self.lcf)
        s = self.lcf.stack
        resources = s.template["Resources"]
        customs = [lid for lid in resources if self.lcf.kind(lid) == "custom"]
        functions = [lid for lid in resources if self.lcf.kind(lid) == "function"]
        true = [c for c, v in s.conditions.items() if v]
        return Result(True, details=[
            f"stack {s.stack_name}: {len(resources)} resources, {len(customs)} custom resources, {len(functions)} functions, "
            f"{len(s.parameters)} parameters",
            f"conditions true: {', '.join(true) or 'none'}"])

    def wave_lines(self, waves: list[list[str]], lcf: LocalCloudFormation | None = None) -> list[str]:
        lcf = lcf or self.lcf
        lines = []
        for n, wave in enumerate(waves, 1):
            text = f"wave {n}: " + ", ".join(f"{lid}" + ("" if lcf.kind(lid) == "recorded" else f" ({lcf.kind(lid)})") for lid in wave)
            lines += textwrap.wrap(text, 150, subsequent_indent="        ")
        return lines

    def make_plan(self) -> Result:
        waves = self.lcf.plan()
        self.order = [lid for wave in waves for lid in wave]
        kinds: dict[str, int] = {}
        for lid in self.order:
            kinds[self.lcf.kind(lid)] = kinds.get(self.lcf.kind(lid), 0) + 1
        left_out = [lid for lid in self.lcf.template["Resources"] if lid not in self.lcf.deps]
        return Result(True, f"{len(waves)} waves", [
            f"{len(self.order)} resources: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) +
            (f"; left out by their Condition: {', '.join(left_out)}" if left_out else "")] + self.wave_lines(waves))

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
            if self.lcf.kind(lid) == "custom":
                self.lcf.resolve_props(lid)
            s.resources[lid] = cfn.Resolved(f"<{lid}>", _AnyAttrs(lid))
        task = self.task_container()
        return Result(True, details=[f"task definition container {task['Name']}: environment "
                                     f"{', '.join(e['Name'] for e in task.get('Environment', []))}; secrets "
                                     f"{', '.join(e['Name'] for e in task.get('Secrets', []))}"])

    # ── Create ──
    def create(self, fail: str | None = None) -> bool:
        r, lcf = self.report, self.lcf
        r.phase(f"Create {lcf.stack.stack_name} (CREATE_IN_PROGRESS)", """Wave by wave: stand-ins for the AWS resources are
            made in moto; each security group or rule is recorded and opens the loopback forwarder of every path it
            completes (the functions reach the share at the forwarder's address only); each function starts as its real
            bootstrap with the environment the template gives it; each custom resource gets a Create request with its
            resolved properties, and its answer (physical id, Data) is what later !Ref / !GetAtt resolve to. Each step is
            then checked from outside.""")
        params = lcf.stack.parameters
        admin_param = params.get("AdminPasswordParameterName")
        if admin_param:
            lcf.aws["ssm"].put_parameter(Name=admin_param, Value=self.witness.admin_password, Type="SecureString", Overwrite=True)
            r.info(f"prerequisite: the Samba admin password put into moto SSM as {admin_param} (SecureString)")
        for n, wave in enumerate(lcf.waves, 1):
            for line in textwrap.wrap(f"wave {n}: {', '.join(wave)}", 140, subsequent_indent="        "):
                r.info(line)
            for lid in wave:
                if not self.create_one(lid, fail):
                    self.failed, self.failed_stack = lid, lcf
                    return False
        return True

    def create_one(self, lid: str, fail: str | None) -> bool:
        r, lcf = self.report, self.lcf
        kind, t = lcf.kind(lid), lcf.stack.resource(lid)["Type"]
        if kind == "custom":
            return self.create_custom(lid, inject=lid == fail)
        if lid == fail:
            r.step(f"Create {t} {lid}: a failure is injected here (e.g. the ECS deployment circuit breaker)",
                   lambda: Result(True, "CREATE_FAILED", ["injected by --fail-create: nothing was made"]))
            return False
        try:
            if kind == "stand-in":
                what = lcf.create_stand_in(lid)
                if t != "AWS::Logs::LogGroup":  # shown with its function
                    r.info(f"stand-in  {lid:<26} {what}")
                if t == "AWS::SecretsManager::Secret":
                    r.step("  witness (boto3): the secret as GenerateSecretString makes it (template keys, password.rs's alphabet, "
                           "every class, the stack's key)", lambda: self.secret_ok(lid))
                if t == "AWS::S3::Bucket":
                    self.upload_site(lcf.stack.resources[lid].ref, lcf.stack.parameters.get("ContentPrefix", "site"))
            elif kind == "function":
                f = lcf.start_function(lid)
                r.info(f"function  {lid:<26} target/debug/{f.binary_name} as {f.name} (timeout {f.timeout:.0f} s); environment: "
                       f"{', '.join(sorted(k for k in f.env if k != 'AWS_ENDPOINT_URL')) or '(none)'}")
            elif kind == "network":
                what, changed = lcf.create_network(lid)
                r.info(f"network   {lid:<26} {what}")
                self.paths_changed(changed)
            else:
                lcf.record(lid)
        except Exception as e:  # noqa: BLE001 - reported as CloudFormation would: CREATE_FAILED
            r.step(f"Create {t} {lid}", lambda: Result(False, "CREATE_FAILED", [f"{type(e).__name__}: {e}"]))
            return False
        lcf.exists.append(lid)
        return True

    def paths_changed(self, changed: list) -> None:
        for path, opened in changed:
            rules = f"allowed by {', '.join(path.rules)}" if opened else "no rule allows it now"
            title = f"  network: {path.name} {'open' if opened else 'closed'}; witness (TCP connect {path.forwarder.address})"
            self.report.step(title, lambda p=path, o=opened, why=rules: check(
                p.forwarder.accepts() == o, "accepts" if o else "refused", "refused" if o else "ACCEPTS", [f"{p.describe()}: {why}"]))

    def rollback(self) -> bool:
        """A failed Create: CloudFormation deletes what it made (the failed resource too), in
        deletion waves; a custom resource whose Create failed gets a Delete with the physical id
        its FAILED answer gave."""
        r, lcf = self.report, self.lcf
        r.phase(f"Rollback {lcf.stack.stack_name} (ROLLBACK_IN_PROGRESS)", f"""{self.failed} failed to create: nothing after it
            is started, and everything made so far is deleted in CloudFormation's deletion waves (a resource goes when
            nothing that depends on it is left), the failed custom resource included (CloudFormation sends it a Delete
            with the physical id of its FAILED answer).""")
        try:
            self.delete_credential = self.active()
        except Exception:  # noqa: BLE001 - the parameters were not made
            self.delete_credential = (None, None)
        existing = list(lcf.exists)
        if self.failed and lcf.kind(self.failed) == "custom" and self.failed in lcf.answers:
            existing.append(self.failed)
            lcf.exists.append(self.failed)
        ok = self.delete_waves(lcf.deletion_waves(existing))
        r.step("stack status after the rollback", lambda: check(ok, "ROLLBACK_COMPLETE", "ROLLBACK_FAILED",
                                                                 [] if ok else [f"left: {', '.join(lcf.exists)}"]))
        return ok

    def upload_site(self, bucket: str, prefix: str) -> None:
        site = ROOT / "container" / "site" / "content"
        for path in sorted(site.rglob("*")):
            if path.is_file():
                self.lcf.aws["s3"].put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(site).as_posix()}", Body=path.read_bytes())
        self.lcf.aws["s3"].put_object(Bucket=bucket, Key=f"{prefix}/index.html", Body=b"<html><body><img src='fargate-smb.svg'></body></html>\n")
        self.report.info(f"content: container/site/content/ + index.html uploaded to s3://{bucket}/{prefix}/ (what the operator uploads)")

    def create_custom(self, lid: str, inject: bool = False) -> bool:
        lcf, r = self.lcf, self.report
        t = lcf.stack.resource(lid)["Type"]
        answer, sent = {}, {}

        def go() -> Result:
            props = lcf.resolve_props(lid)
            if inject:  # the injected failure: a Create the function must reject (no properties but the token)
                props = {k: props[k] for k in ("ServiceToken", "ServiceTimeout") if k in props}
            sent.update(props)
            answer.update(lcf.send(lid, "Create", props))
            ok = answer.get("Status") == "SUCCESS"
            lcf.properties[lid] = props
            lcf.answers[lid] = answer
            if ok:
                lcf.stack.resources[lid] = cfn.Resolved(answer["PhysicalResourceId"], answer.get("Data") or {}, "custom")
            details = [f"reason: {answer.get('Reason')}"] if not ok else [f"PhysicalResourceId {answer['PhysicalResourceId']}"]
            if inject:
                failed_id = str(answer.get("PhysicalResourceId", ""))
                return Result(not ok and failed_id.startswith("create-failed:"), "CREATE_FAILED" if not ok else "SUCCESS",
                              ["injected: sent with only its ServiceToken"] + details + [f"PhysicalResourceId {failed_id}"])
            return Result(ok, answer.get("Status"), details)

        title = f"Create {t} {lid}" + (": a failure is injected here (its properties left out)" if inject else "")
        res = r.step(title, go)
        if res.ok and not inject:
            lcf.exists.append(lid)
            self.after(lid, "Create")
            return True
        return False

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
            arn = self.credential_secret()
            if arn:
                for line in w.show_secret(arn):
                    r.info(line)
            r.step(f"  witness (smbclient): the active account logs on with the password from {self.store()}", lambda: self.logon_ok(props))
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

    def credential_secret(self, lcf: LocalCloudFormation | None = None) -> str | None:
        """The ARN of the stack's credential secret (CredentialStore secrets-manager), else None."""
        lcf = lcf or self.lcf
        for lid, res in lcf.stack.resources.items():
            if res.kind == "stand-in" and lcf.stack.resource(lid)["Type"] == "AWS::SecretsManager::Secret":
                return res.ref
        return None

    def store(self) -> str:
        return "the secret's AWSCURRENT value" if self.credential_secret() else "SSM"

    def active(self) -> tuple[str, str]:
        arn = self.credential_secret()
        if arn:
            value = self.witness.secret(arn)
            return value["username"].split("\\")[-1], value["password"]
        return self.witness.service_credential(self.lcf.stack.parameters["ParameterPrefix"])

    def secret_ok(self, lid: str) -> Result:
        """The secret stand-in as GenerateSecretString made it: the template string's keys, a
        password of the template's length from its alphabet with every class, the stack's key."""
        lcf, w = self.lcf, self.witness
        arn = lcf.stack.resources[lid].ref
        props = lcf.stand_in_props[lid]
        g = props.get("GenerateSecretString") or {}
        value = w.secret(arn)
        password = value.get(g.get("GenerateStringKey", "password"), "")
        expected = set(json.loads(g.get("SecretStringTemplate") or "{}")) | {g.get("GenerateStringKey", "password")}
        excluded = set(g.get("ExcludeCharacters", ""))
        classes = [str.isupper, str.islower, str.isdigit, lambda c: not c.isalnum()]
        meta = lcf.aws["secretsmanager"].describe_secret(SecretId=arn)
        problems = []
        if set(value) != expected:
            problems.append(f"keys {sorted(value)} != {sorted(expected)}")
        if len(password) != int(g.get("PasswordLength", 32)):
            problems.append(f"password has {len(password)} characters")
        if set(password) & excluded:
            problems.append(f"{len(set(password) & excluded)} excluded character(s) in the password")
        if g.get("RequireEachIncludedType") and not all(any(f(c) for c in password) for f in classes):
            problems.append("a character class is missing")
        key = lcf.stack.resources.get("SecretsKey")
        if props.get("KmsKeyId") and meta.get("KmsKeyId") != props["KmsKeyId"]:
            problems.append(f"KmsKeyId {meta.get('KmsKeyId')} != {props['KmsKeyId']}")
        return check(not problems, "generated", "wrong", [
            f"keys {', '.join(sorted(value))}; username {value.get('username')}; share {value.get('share')}; "
            f"password {len(password)} chars, {fingerprint(password)}; KMS {str(meta.get('KmsKeyId', '')).rsplit('/', 1)[-1][:8]}…"
            + (" (SecretsKey)" if key and meta.get("KmsKeyId") == key.attrs.get("Arn") else "")] + problems)

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
            first as ECS gives them (the Secrets' values injected as SMB_USERNAME/SMB_PASSWORD: the SSM parameters, or
            the secret's username and password JSON keys read from moto as ECS reads them), then as the template gives
            them with CredentialDelivery=task-role (SMB_*_PARAMETER or SMB_CREDENTIAL_SECRET: the entrypoint reads the
            store itself, the password never enters the container's environment); `doctor` runs the preflight, `--plan` prints the Windows
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

        def secret_parts(value_from: str) -> tuple[str, str, str, str] | None:
            """ECS's Secrets Manager valueFrom: <secret ARN>:<json-key>:<version-stage>:<version-id>
            (the ARN has 7 colon-separated fields; empty parts: the whole value, AWSCURRENT)."""
            if ":secretsmanager:" not in value_from:
                return None
            fields = value_from.split(":")
            arn, rest = ":".join(fields[:7]), fields[7:] + ["", "", ""]
            return arn, rest[0], rest[1], rest[2]

        def ecs_value(value_from: str) -> str:
            """What the ECS agent puts in the container's environment for one secret."""
            parts = secret_parts(value_from)
            if parts is None:
                return w.parameter(ssm_name(value_from))["Value"]
            arn, key, stage, version_id = parts
            value = w.secret(arn, stage=stage or (None if version_id else "AWSCURRENT"), version_id=version_id or None)
            if key not in value:
                raise KeyError(f"{value_from}: the secret has no JSON key {key!r} (ECS would fail the task: ResourceInitializationError)")
            return value[key]

        def run(args, env) -> subprocess.CompletedProcess:
            out = subprocess.run([str(binary("fargate-smb-mount")), *args], env={"PATH": os.environ["PATH"], **env},
                                 capture_output=True, text=True, timeout=120)
            self.preflight_outputs.append(out.stdout + out.stderr)
            return out

        def ecs_secrets():
            env = dict(base)
            for s in container.get("Secrets", []):
                env[s["Name"]] = ecs_value(s["ValueFrom"])  # what the ECS agent does
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
            source = "SMB_CREDENTIAL_SECRET" if self.credential_secret() else "SMB_PASSWORD_PARAMETER"
            if source not in env:
                return Result(False, f"no {source}", sorted(env))
            out = run(["doctor"], env)
            lines = [ln for ln in out.stdout.splitlines() if "SSM parameter" in ln or "ecret" in ln or "passed" in ln][:3]
            return check(out.returncode == 0 and "every check passed" in out.stdout, "passed", f"exit {out.returncode}",
                         lines or out.stdout.splitlines()[-5:])

        def plan():
            env = {**base, **aws_env}
            for s in container.get("Secrets", []):
                parts = secret_parts(s["ValueFrom"])
                if parts:
                    env["SMB_CREDENTIAL_SECRET"] = parts[0]
                else:
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

        if self.credential_secret():
            r.step("doctor, credential as ECS injects the Secrets (SMB_USERNAME / SMB_PASSWORD from the secret's JSON keys, "
                   "<arn>:username:: and <arn>:password::)", ecs_secrets)
            r.step("doctor, CredentialDelivery=task-role: the entrypoint reads the secret itself (the template's SMB_CREDENTIAL_SECRET)",
                   ssm_parameters)
        else:
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
        if self.credential_secret():
            self.rotate_secret()
            return
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
            # EventBridge Scheduler replaces its context attributes in the Input when it invokes.
            scheduled = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            given = (target.get("Input") or "{}").replace("<aws.scheduler.scheduled-time>", scheduled)
            status, answer = fn.invoke(json.loads(given))
            ok = status == "response" and isinstance(answer, dict) and answer.get("outcome") == "rotated"
            return check(ok, "rotated", str(answer)[:80], [f"Input {given}"])

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

    def deployment(self) -> str | None:
        """The id of the ECS service stand-in's newest deployment (moto changes it on a forced one)."""
        lcf = self.lcf
        service = next((x for x in self.order if lcf.stack.resource(x)["Type"] == "AWS::ECS::Service"), None)
        if not service:
            return None
        res = lcf.stack.resources[service]
        svc = lcf.aws["ecs"].describe_services(cluster=res.ref.split("/")[-2], services=[res.ref])["services"][0]
        return svc["deployments"][0]["id"] if svc.get("deployments") else None

    def rotate_secret(self) -> None:
        """CredentialStore secrets-manager: the demo plays Secrets Manager (moto cannot invoke a
        local function): a new ClientRequestToken, the four steps invoked on the rotation function
        named by the template's RotationSchedule, in order, through the function's Runtime API."""
        r, lcf, w = self.report, self.lcf, self.witness
        r.phase("Password rotation (Secrets Manager's rotation protocol: aws secretsmanager rotate-secret)", """The demo plays
            Secrets Manager, as a scheduled rotation or `aws secretsmanager rotate-secret` would: one new ClientRequestToken,
            and the rotation function that the template's AWS::SecretsManager::RotationSchedule names is invoked with each
            step in turn - createSecret (AWSPENDING = the other account with a new password), setSecret (that account
            reset in AD), testSecret (its SMB logon), finishSecret (AWSCURRENT moved, the ECS service redeployed).
            smbclient witnesses that AWSCURRENT logs on after every step and AWSPENDING after setSecret; the stages are
            read with an explicit VersionStage (moto's default read lags, LOCAL-STACK.md).""")
        arn = self.credential_secret()
        schedule = next((lid for lid in self.order if lcf.stack.resource(lid)["Type"] == "AWS::SecretsManager::RotationSchedule"
                         and lid in lcf.exists and lcf.stand_in_props[lid].get("SecretId") == arn), None)
        if schedule is None:
            r.step("find the secret's AWS::SecretsManager::RotationSchedule", lambda: Result(False, "missing"))
            return
        props = lcf.stand_in_props[schedule]
        fn = next((f for f in lcf.functions.values() if lcf.stack.resources[f.logical_id].attrs.get("Arn") == props["RotationLambdaARN"]), None)
        permits = [lid for lid in lcf.exists if lcf.stack.resource(lid)["Type"] == "AWS::Lambda::Permission"
                   and lcf.stand_in_props[lid].get("Principal") == "secretsmanager.amazonaws.com"
                   and lcf.stand_in_props[lid].get("FunctionName") == props["RotationLambdaARN"]
                   and lcf.stand_in_props[lid].get("Action") == "lambda:InvokeFunction"
                   and lcf.stand_in_props[lid].get("SourceArn") == arn and lcf.stand_in_props[lid].get("SourceAccount") == ACCOUNT]
        r.step(f"{schedule}: RotationLambdaARN is {fn.name if fn else '?'}; a Lambda permission lets secretsmanager.amazonaws.com "
               "invoke it for this secret only (SourceArn, SourceAccount)",
               lambda: check(fn is not None and fn.binary_name == "rotate-password" and bool(permits), "wired", "not wired",
                             [f"permission {', '.join(permits) or 'none'}; rules {json.dumps(props.get('RotationRules'))}"]))
        if fn is None or not permits:
            return
        before_user, before_password = self.active()
        before_version = next(v for v, stages in w.versions(arn).items() if "AWSCURRENT" in stages)
        deployment_before = self.deployment()
        token = str(uuid.uuid4())
        r.info(f"ClientRequestToken {token}; AWSCURRENT is version {before_version[:8]}… ({before_user})")
        pending: dict = {}

        def logs_on(stage: str) -> Result:
            value = w.secret(arn, stage=stage)
            user = value["username"].split("\\")[-1]
            out = w.smbclient(user, value["password"], "ls")
            return check(w.smb_ok(out), user, "refused", [] if w.smb_ok(out) else [out.stdout.strip()[-200:]])

        for step in ROTATION_STEPS:
            def invoke(step=step) -> Result:
                status, answer = fn.invoke({"Step": step, "SecretId": arn, "ClientRequestToken": token})
                ok = status == "response"
                text = json.dumps(answer) if not isinstance(answer, str) else answer
                return check(ok, step, status, [f"answer {text[:240]}"])

            if not r.step(f"Secrets Manager invokes {fn.name} with Step {step}", invoke).ok:
                return
            if step == "createSecret":
                def created() -> Result:
                    stages = w.versions(arn).get(token, [])
                    value = w.secret(arn, stage="AWSPENDING", version_id=token)
                    pending.update(value)
                    other = value["username"].split("\\")[-1]
                    ok = "AWSPENDING" in stages and other.lower() != before_user.lower() and value["password"] != before_password \
                        and value.get("share") == w.secret(arn).get("share")
                    return check(ok, other, "wrong", [f"version {token[:8]}… {','.join(stages)}: username {value['username']}, "
                                                      f"password {len(value['password'])} chars, {fingerprint(value['password'])}"])

                r.step("  witness (boto3): AWSPENDING is the token's version: the other account, a new password, the same share", created)
            r.step(f"  witness (smbclient): AWSCURRENT logs on after {step}", lambda: logs_on("AWSCURRENT"))
            if step == "setSecret":
                r.step("  witness (smbclient): AWSPENDING logs on after setSecret (the other account was reset in AD)",
                       lambda: logs_on("AWSPENDING"))
        for line in w.show_secret(arn):
            r.info(line)

        def moved() -> Result:
            stages = w.versions(arn)
            ok = "AWSCURRENT" in stages.get(token, []) and "AWSPREVIOUS" in stages.get(before_version, []) \
                and "AWSCURRENT" not in stages.get(before_version, [])
            return check(ok, "moved", "not moved", [f"{v[:8]}…: {','.join(s)}" for v, s in stages.items()])

        r.step("  witness (boto3): DescribeSecret's VersionIdsToStages: AWSCURRENT on the token's version, AWSPREVIOUS on the old one", moved)
        r.step("  witness (smbclient): the newly active account logs on with AWSCURRENT",
               lambda: check(self.active()[0] != before_user and self.logon_ok().ok, self.active()[0], "not switched"))
        r.step(f"  witness (smbclient): {before_user} (AWSPREVIOUS) still logs on with its old password (until the next rotation)",
               lambda: check(w.smb_ok(w.smbclient(before_user, before_password, "ls")), "ok", "refused"))
        if deployment_before is not None:
            r.step("  witness (boto3): finishSecret forced a new deployment of the ECS service stand-in",
                   lambda: check(self.deployment() != deployment_before, "forced", "no deployment"))
        w.harvest(arn)

    # ── update ──
    def update(self, key: str, title: str, explanation: str = "") -> list:
        """A stack update with the parameters file's `key` values; returns the replaced resources
        [(logical id, old physical id, new physical id)]."""
        r, lcf = self.report, self.lcf
        changes = self.settings.get(key, {})
        r.phase(title, explanation or f"""The parameters file's {key} values are applied: {', '.join(f'{k}={v}' for k, v in changes.items())}.
            As CloudFormation does, every resource is resolved again in creation order; a function whose environment
            changed is restarted (a configuration update), and a custom resource whose resolved properties changed gets
            an Update request with OldResourceProperties - the others get nothing. A new physical id is a replacement:
            the old one is deleted at the end (UPDATE_COMPLETE_CLEANUP_IN_PROGRESS) with its old properties.""")
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

        if key == "Update":
            r.step("an invalid parameter (ServiceAccountName bad*name) is refused before any request is sent", refused)
        if not r.step(f"apply the {key} parameters (AllowedPattern, Rules, Conditions checked again)",
                      lambda: (lcf.stack.set_parameters({**old_params, **changes}), Result(True))[1]).ok:
            return []
        self.settings["Parameters"] = {**old_params, **changes}
        replaced = []
        for lid in self.order:
            if lid not in lcf.exists:
                continue
            kind = lcf.kind(lid)
            if kind == "function":
                changed = lcf.restart_if_changed(lid)
                if changed:
                    f = lcf.functions[lid]
                    r.info(f"function  {lid}: environment changed ({', '.join(f'{k}={f.env[k]}' for k in changed if k in f.env)}): restarted")
            elif kind == "custom":
                replaced += self.update_custom(lid)
            elif kind == "stand-in" and lcf.stack.resource(lid)["Type"] == "AWS::SecretsManager::Secret":
                self.update_secret(lid)
        if replaced:
            r.info("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS: the replaced resources' old physical ids are deleted, in deletion waves")
        olds = {lid: (physical, props) for lid, physical, props in replaced}
        for wave in lcf.deletion_waves(list(olds)):
            for lid in wave:
                physical, props = olds[lid]
                r.step(f"cleanup: Delete the replaced {lid} {physical} (its old properties)",
                       lambda lid=lid, physical=physical, props=props: self.sent_ok(lid, "Delete", props, physical))
        return [(lid, physical, lcf.answers[lid]["PhysicalResourceId"]) for lid, physical, _ in replaced]

    def update_secret(self, lid: str) -> None:
        """The secret's properties changed: a changed GenerateSecretString makes CloudFormation write
        a whole new value (AWSCURRENT), the template string's account (<name>-a) with a new password."""
        lcf, r, w = self.lcf, self.report, self.witness
        arn = lcf.stack.resources[lid].ref
        before = next((v for v, s in w.versions(arn).items() if "AWSCURRENT" in s), None)
        changes: list[str] = []

        def go() -> Result:
            changes.extend(lcf.update_stand_in(lid))
            return Result(True, "UPDATE_COMPLETE" if changes else "unchanged", ["changed: " + "; ".join(changes)] if changes else [])

        if not r.step(f"Update AWS::SecretsManager::Secret {lid} (a stand-in in moto)", go).ok or not changes:
            return
        if any(c.startswith("GenerateSecretString") for c in changes):
            r.step("  witness (boto3): CloudFormation wrote a new value: AWSCURRENT on a new version, from the template string",
                   lambda: (lambda now: check(now is not None and now != before and self.secret_ok(lid).ok, "new value", "unchanged",
                                              self.secret_ok(lid).details))(
                       next((v for v, s in w.versions(arn).items() if "AWSCURRENT" in s), None)))
            stages = w.versions(arn)
            stray = [v for v, s in stages.items() if "AWSPENDING" in s and "AWSCURRENT" not in s]
            if stray:
                # Secrets Manager's RotateSecret documents this state as a rotation in progress.
                r.info(f"{YELLOW}note: AWSPENDING is left on version {stray[0][:8]}…, no longer AWSCURRENT: on AWS the next "
                       f"RotateSecret answers that a previous rotation is still in progress (finishSecret left the label){RESET}")
        w.harvest(arn)

    def sent_ok(self, lid: str, request: str, props: dict, physical: str) -> Result:
        answer = self.lcf.send(lid, request, props, physical)
        ok = answer.get("Status") == "SUCCESS"
        return Result(ok, answer.get("Status"), [] if ok else [f"reason: {answer.get('Reason')}"])

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
                if answer["PhysicalResourceId"] != physical:
                    details.append(f"replacement: new physical id {answer['PhysicalResourceId']} (was {physical})")
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

    # ── replacement by spelling ──
    def replacement(self) -> None:
        r, lcf, w = self.report, self.lcf, self.witness
        changes = self.settings.get("Replace", {})
        if not changes:
            return
        replaced = self.update("Replace", "Stack update: a replacement by spelling only (UPDATE_IN_PROGRESS)", f"""Only the spelling
            of names that Active Directory and NTFS compare case-insensitively changes ({', '.join(f'{k}={v}' for k, v in changes.items())}):
            the runtime answers new physical ids, so CloudFormation replaces those resources. Its exact sequence follows:
            each Update answered with a new id, then, in the cleanup phase, a Delete for the OLD id with the OLD
            properties. That Delete must not remove what the new id now owns: the witnesses then check that the
            accounts still exist and log on, the grant is still on the folder and the content is still there.""")
        r.step("the spelling change made CloudFormation replace resources (new physical ids)",
               lambda: check(bool(replaced), f"{len(replaced)} replaced", "no replacement",
                             [f"{lid}: {old} -> {new}" for lid, old, new in replaced]))
        acc = next((x for x in self.order if lcf.stack.resource(x)["Type"] == "Custom::AdServiceAccount" and x in lcf.exists), None)
        acl = next((x for x in self.order if lcf.stack.resource(x)["Type"] == "Custom::ShareAcl" and x in lcf.exists), None)
        content = next((x for x in self.order if lcf.stack.resource(x)["Type"] == "Custom::WebContent" and x in lcf.exists), None)
        if acc:
            data, props = lcf.answers[acc].get("Data") or {}, lcf.properties[acc]
            names = data.get("SamAccountNames", "").split(",") + [data.get("GroupName", "")]
            ou = props.get("OrganizationalUnit") or self.samba["FARGATE_SMB_OU"]
            r.step(f"  witness (ldapsearch): {', '.join(names)} still exist after the old id's Delete",
                   lambda: check([n.lower() for n in w.ldap(ou, names)] == sorted(n.lower() for n in names), "found", "GONE",
                                 [f"found: {w.ldap(ou, names)}"]))
            r.step(f"  witness (smbclient): the active account still logs on with the password from {self.store()}", lambda: self.logon_ok())
        if acl:
            props, sid = lcf.properties[acl], lcf.properties[acl]["Grants"][0]["Principal"]
            r.step(f"  witness (smbcacls): the grant for {sid} is still on {props['Folder']}",
                   lambda: check(any(sid in ace for ace in w.smbcacls(props["Folder"])), "granted", "GONE",
                                 w.smbcacls(props["Folder"])[-4:]))
        if content:
            props = lcf.properties[content]
            r.step(f"  witness (smbclient): the content is still in {props['Folder']} (fargate-smb.svg == s3)",
                   lambda: self.content_ok(props, "fargate-smb.svg"))

    # ── Deletes with another version's properties ──
    def other_version_deletes(self) -> None:
        r, lcf, w = self.report, self.lcf, self.witness
        r.phase("Deletes carrying another version's properties", """CloudFormation sends a Delete with the properties the resource
            was last given, which another version of the function may have written (an update rolled back, a newer
            template): here the grant's Delete carries a property this version does not know, and the accounts' Delete
            lacks a required one. Each must still succeed and remove what its physical id owns; the stack delete that
            follows sends the normal Deletes again (already gone: SUCCESS).""")
        acl = next((x for x in self.order if lcf.stack.resource(x)["Type"] == "Custom::ShareAcl" and x in lcf.exists), None)
        acc = next((x for x in self.order if lcf.stack.resource(x)["Type"] == "Custom::AdServiceAccount" and x in lcf.exists), None)
        if acl:
            props = {**lcf.properties[acl], "GrantExpiry": "2031-01-01"}
            sid, folder = props["Grants"][0]["Principal"], props["Folder"]
            res = r.step(f"Delete Custom::ShareAcl {acl} with an unknown extra property (GrantExpiry)",
                         lambda: self.sent_ok(acl, "Delete", props, lcf.answers[acl]["PhysicalResourceId"]))
            if res.ok:
                r.step(f"  witness (smbcacls): no ACE for {sid} is left on {folder}",
                       lambda: check(not any(sid in ace for ace in w.smbcacls(folder)), "removed", "STILL THERE", w.smbcacls(folder)[-4:]))
        if acc:
            props = {k: v for k, v in lcf.properties[acc].items() if k != "AccountName"}
            data = lcf.answers[acc].get("Data") or {}
            names = data.get("SamAccountNames", "").split(",") + [data.get("GroupName", "")]
            ou = lcf.properties[acc].get("OrganizationalUnit") or self.samba["FARGATE_SMB_OU"]
            res = r.step(f"Delete Custom::AdServiceAccount {acc} without its required AccountName",
                         lambda: self.sent_ok(acc, "Delete", props, lcf.answers[acc]["PhysicalResourceId"]))
            if res.ok:
                r.step(f"  witness (ldapsearch): {', '.join(names)} are gone",
                       lambda: check(w.ldap(ou, names) == [], "gone", "STILL THERE", [f"found: {w.ldap(ou, names)}"]))

    # ── delete ──
    def delete(self) -> bool:
        r, lcf = self.report, self.lcf
        r.phase(f"Stack delete {lcf.stack.stack_name} (DELETE_IN_PROGRESS)", """Every resource, in CloudFormation's deletion waves
            (a resource is deleted when nothing that depends on it is left; DeletionPolicy Retain keeps it), each custom
            resource with its last properties and physical id. A security group or rule that goes closes the forwarders
            of the paths it opened, so a custom resource deleted after the rule it needs fails here as on AWS. Witnesses:
            the content stays (RemoveOnDelete false), the grant and the accounts are gone, the parameters are gone.""")
        self.delete_credential = self.active()
        ok = self.delete_waves(lcf.deletion_waves(list(lcf.exists)))
        r.step("stack status after the delete", lambda: check(ok, "DELETE_COMPLETE", "DELETE_FAILED",
                                                               [] if ok else [f"left: {', '.join(lcf.exists)}"]))
        return ok

    def delete_waves(self, waves: list[list[str]]) -> bool:
        """Delete wave by wave; a failed Delete ends the operation after its wave (the stack is
        then DELETE_FAILED / ROLLBACK_FAILED with the rest left)."""
        r = self.report
        for n, wave in enumerate(waves, 1):
            for line in textwrap.wrap(f"wave {n}: {', '.join(wave)}", 140, subsequent_indent="        "):
                r.info(line)
            failed = [lid for lid in wave if not self.delete_one(lid)]
            if failed:
                r.info(f"{RED}{', '.join(failed)} failed to delete: CloudFormation stops here{RESET}")
                return False
        return True

    def delete_one(self, lid: str) -> bool:
        r, lcf = self.report, self.lcf
        res, kind = lcf.stack.resource(lid), lcf.kind(lid)
        policy = res.get("DeletionPolicy", "Delete")
        rolling_back_create = self.failed is not None and lcf is self.failed_stack
        if policy == "Retain" or (policy == "RetainExceptOnCreate" and not rolling_back_create):
            r.info(f"retained  {lid:<26} DeletionPolicy: {policy} (left in the account, by design)")
            lcf.exists.remove(lid)
            return True
        if kind != "custom":
            secret = lcf.stack.resources[lid].ref if res["Type"] == "AWS::SecretsManager::Secret" else None
            if secret:
                self.witness.harvest(secret)  # every version's password, for the leak check
            try:
                what, changed = lcf.delete_resource(lid)
            except Exception as e:  # noqa: BLE001
                return r.step(f"Delete {res['Type']} {lid}", lambda: Result(False, "DELETE_FAILED", [f"{type(e).__name__}: {e}"])).ok
            if kind in ("stand-in", "network", "function"):
                r.info(f"deleted   {lid:<26} {what}")
            if secret:
                r.step(f"  witness (boto3): the secret {lid} is gone (DescribeSecret: ResourceNotFound)",
                       lambda: check(not self.secret_exists(secret), "gone", "STILL THERE"))
            self.paths_changed(changed)
            return True
        props, physical = lcf.properties[lid], lcf.answers[lid]["PhysicalResourceId"]
        step = r.step(f"Delete {res['Type']} {lid} ({physical})", lambda: self.sent_ok(lid, "Delete", props, physical))
        if not step.ok:
            return False
        lcf.exists.remove(lid)
        if not str(physical).startswith("create-failed:"):
            self.after_delete(lid)
        return True

    def secret_exists(self, arn: str) -> bool:
        sm = self.lcf.aws["secretsmanager"]
        try:
            sm.describe_secret(SecretId=arn)
        except sm.exceptions.ResourceNotFoundException:
            return False
        return True

    def after_delete(self, lid: str) -> None:
        """The witnesses after a custom resource's Delete."""
        r, lcf, w = self.report, self.lcf, self.witness
        t, props = lcf.stack.resource(lid)["Type"], lcf.properties[lid]
        data = lcf.answers[lid].get("Data") or {}
        if t == "Custom::WebContent":
            r.step(f"  witness (smbclient as Administrator): the copied content stays in {props['Folder']} (RemoveOnDelete: false)",
                   lambda: check(w.download("Administrator", w.admin_password, props["Folder"], "fargate-smb.svg") is not None,
                                 "stays", "gone"))
        elif t == "Custom::ShareAcl":
            sid = props["Grants"][0]["Principal"]
            r.step(f"  witness (smbcacls): no ACE for {sid} is left on {props['Folder']}",
                   lambda: check(not any(sid in ace for ace in w.smbcacls(props["Folder"])), "removed", "STILL THERE",
                                 w.smbcacls(props["Folder"])[-4:]))
        elif t == "Custom::AdServiceAccount":
            user, password = getattr(self, "delete_credential", (None, None))
            names = data.get("SamAccountNames", "").split(",") + [data.get("GroupName", "")]
            ou = props.get("OrganizationalUnit") or self.samba["FARGATE_SMB_OU"]
            if user:
                r.step(f"  witness (smbclient): {user} is refused", lambda: check(not w.smb_ok(w.smbclient(user, password, "ls")),
                                                                                 "refused", "LOGS ON"))
            r.step(f"  witness (ldapsearch): {', '.join(names)} are gone",
                   lambda: check(w.ldap(ou, names) == [], "gone", "STILL THERE", [f"found: {w.ldap(ou, names)}"]))
        elif t == "Custom::SsmParameters":
            lines = w.show_parameters(props["ParameterPrefix"])
            r.step("  witness (boto3): the parameters are gone",
                   lambda: check(all("(absent)" in ln for ln in lines), "gone", "still there", lines))
            physical = lcf.answers[lid]["PhysicalResourceId"]
            r.step("Delete Custom::SsmParameters again (CloudFormation may repeat a Delete): still SUCCESS",
                   lambda: self.sent_ok(lid, "Delete", props, physical))

    # ── rollback ──
    def rollback_scenario(self, fail: str, fresh: bool) -> None:
        """A stack whose `fail` resource fails to create: CloudFormation rolls back to
        ROLLBACK_COMPLETE; the witnesses then find nothing of ours left."""
        r = self.report
        if fresh:  # a second stack, with names of its own
            self.tags.append(uuid.uuid4().hex[:6])
            self.settings = self.fill(self.tags[-1])
            self.settings["StackName"] += "-rollback"
            self.lcf = LocalCloudFormation(Path(self.args.template), self.settings, self.args.moto, self.report, self.network)
            self.stacks.append(self.lcf)
            self.lcf.plan()
        lcf = self.lcf
        if fail not in lcf.deps:
            r.step(f"--fail-create {fail}: a resource of the template", lambda: Result(False, "unknown", [
                f"{fail} is not a resource the Conditions include: {', '.join(lcf.deps)}"]))
            return
        self.failed_stack, self.failed = lcf, None
        self.order = [lid for wave in lcf.waves for lid in wave]
        if self.create(fail=fail):
            r.step(f"the injected failure at {fail} stopped the create", lambda: Result(False, "created"))
            return
        made = list(lcf.exists)
        data = {lid: dict(lcf.answers[lid].get("Data") or {}) for lid in made if lcf.kind(lid) == "custom"}
        props = {lid: lcf.properties[lid] for lid in made if lcf.kind(lid) == "custom"}
        if not self.rollback():
            return
        self.nothing_left(made, data, props)

    def nothing_left(self, made: list[str], data: dict, props: dict) -> None:
        r, lcf, w = self.report, self.lcf, self.witness
        params = lcf.stack.parameters
        base = params["ServiceAccountName"]
        names = [f"{base}-a", f"{base}-b", params["ServiceGroupName"]]
        ou = params.get("OrganizationalUnit") or self.samba["FARGATE_SMB_OU"]
        r.step(f"  witness (ldapsearch): no account or group of ours ({', '.join(names)})",
               lambda: check(w.ldap(ou, names) == [], "none", "LEFT", [f"found: {w.ldap(ou, names)}"]))
        secrets = [lcf.stack.resources[lid].ref for lid in made if lcf.stack.resource(lid)["Type"] == "AWS::SecretsManager::Secret"]
        if secrets:
            r.step(f"  witness (boto3): no secret of ours ({', '.join(s.rsplit(':', 1)[-1] for s in secrets)})",
                   lambda: check(not any(self.secret_exists(s) for s in secrets), "none", "LEFT"))
        else:
            lines = w.show_parameters(params["ParameterPrefix"])
            r.step(f"  witness (boto3): no SSM parameter under {params['ParameterPrefix']}",
                   lambda: check(all("(absent)" in ln for ln in lines), "none", "LEFT", lines))
        folder = params["ContentFolder"]
        sids = [p["Grants"][0]["Principal"] for lid, p in props.items() if lcf.stack.resource(lid)["Type"] == "Custom::ShareAcl"]
        sids += [d.get("PrincipalSid") for d in data.values() if d.get("PrincipalSid")]
        r.step(f"  witness (smbcacls): no ACE of ours on {folder}",
               lambda: check(not any(s in ace for s in set(sids) for ace in w.smbcacls(folder)), "none", "LEFT",
                             w.smbcacls(folder)[-4:]))
        copied = any(lcf.stack.resource(lid)["Type"] == "Custom::WebContent" for lid in props)
        listing = w.smbclient("Administrator", w.admin_password, "ls", directory=folder)
        files = [ln.split()[0] for ln in listing.stdout.splitlines() if ln.strip() and not ln.strip().startswith(".")
                 and " blocks " not in ln] if w.smb_ok(listing) else []
        r.step(f"  witness (smbclient as Administrator): {folder}: " +
               ("the copied content stays (RemoveOnDelete: false), nothing else" if copied else "nothing was copied"),
               lambda: check(bool(files) == copied and all(not f.startswith("probe-") for f in files),
                             f"{len(files)} entries", "unexpected", files[:6]))

    def share_cleanup(self) -> None:
        """The content stays after Delete (RemoveOnDelete: false); each run's folder is removed
        afterwards so that runs do not pile up on the share."""
        for lcf in self.stacks:
            top = lcf.stack.parameters.get("ContentFolder", "").split("\\")[0]
            if not any(tag in top for tag in self.tags) or not hasattr(self, "witness"):
                continue
            out = self.witness.smbclient("Administrator", self.witness.admin_password, f'deltree "{top}"')
            if self.witness.smb_ok(out):
                self.report.info(f"share: the folder {top} removed")
            elif "NO_SUCH_FILE" not in out.stdout + out.stderr:
                self.report.info(f"share: could not remove {top}: {out.stdout.strip()[-200:]}")

    def admin_cleanup(self) -> None:
        for lcf in self.stacks:
            name = lcf.stack.parameters.get("AdminPasswordParameterName")
            if name:
                try:
                    lcf.aws["ssm"].delete_parameter(Name=name)
                except Exception:  # noqa: BLE001 - already gone
                    pass

    def leak_check(self) -> None:
        r, lcf, w = self.report, self.lcf, self.witness
        r.phase("Leak check", """Every password seen in SSM or in the secret's versions (generated, rotated, regenerated) and the admin password are searched
            for in every line the bootstraps and the entrypoint wrote and in all CloudFormation traffic (requests and
            responses). Only fingerprints are ever printed.""")

        def search() -> Result:
            traffic = "".join(json.dumps(x.sent) + "".join(b.decode(errors="replace") for b in x.responses.raw) for x in self.stacks)
            printed = sys.stdout.text() if isinstance(sys.stdout, Tee) else ""
            text = "".join(x.all_output() for x in self.stacks) + traffic + "".join(getattr(self, "preflight_outputs", [])) + printed
            secrets = w.passwords | {w.admin_password, w.admin_password.strip()}
            leaked = [fingerprint(p) for p in secrets if p and p in text]
            return check(not leaked, "not found", "FOUND",
                         [f"{len(w.passwords)} service-account passwords (every SSM value and secret version seen) + the admin password; "
                          f"{len(text):,} characters searched "
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
    parser.add_argument("--scenario", choices=["all", "create-delete"], default="all",
                        help="all (default): the whole lifecycle, the replacement, the other-version Deletes and a rollback; "
                             "create-delete: only the create and the delete waves")
    parser.add_argument("--fail-create", metavar="LOGICAL_ID",
                        help="only a create that fails at this resource, and CloudFormation's rollback")
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

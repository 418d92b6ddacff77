"""cloudformation/template.yaml past the happy path, as CloudFormation drives it.

The delete (and rollback) order comes from cfn-lint's own dependency graph of the template
(`cfnlint.template.Template(...).graph`: Ref, GetAtt, Sub and DependsOn edges), not from a graph
computed here. CloudFormation deletes a resource once nothing that depends on it is left, so a
resource is guaranteed to go before another only when it depends on it, directly or through
others: that is what these tests assert (the waves are shown in the messages). What cfn-lint does
not do, the small resolver below does: parameters, conditions, the untaken branch of an Fn::If.

cfn-lint is in .venv (moto[server] requires it) and in .venv-template/sam.
"""

import ipaddress
import copy
import json
import re
from pathlib import Path

import networkx
import pytest

try:
    import cfnlint.decode
    import cfnlint.template
except ImportError:  # pragma: no cover - an environment problem, not a template one
    pytest.fail("cfn-lint is not importable: run scripts/install (moto[server] brings it)", pytrace=False)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "cloudformation" / "template.yaml"

# What `sam deploy --parameter-overrides` would give, beyond the template's defaults.
REQUIRED = {
    "VpcId": "vpc-0123456789abcdef0",
    "PrivateSubnetIds": ["subnet-0a", "subnet-0b"],
    "PublicSubnetIds": ["subnet-1a", "subnet-1b"],
    "DirectoryId": "d-0123456789",
    "DomainName": "corp.example.com",
    "NetbiosName": "CORP",
    "DomainControllerIps": "10.40.32.10,10.40.48.10",
    "FileServerDnsName": "amznfsxabc.corp.example.com",
    "FileServerSecurityGroupId": "sg-0123456789abcdef0",
    "AdminSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:admin-AbCdEf",
    "ContainerImage": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/fargate-smb-web:1",
}
# Parameter sets that switch the conditional parts on and off.
SCENARIOS = {
    "defaults (managed-ad, HTTP only)": {},
    "ldaps, HTTPS, no reconcile, task-role": {
        "DirectoryBackend": "ldaps", "LdapsUrl": "ldaps://dc1.corp.example.com",
        "CertificateArn": "arn:aws:acm:eu-west-1:123456789012:certificate/abc",
        "ReconcileScheduleExpression": "", "CredentialDelivery": "task-role",
        "EnableExecuteCommand": "true", "ContainerRepositoryArn": "none",
    },
    "secrets-manager (managed-ad, ecs-secrets)": {"CredentialStore": "secrets-manager"},
    "secrets-manager, ldaps, HTTPS, task-role": {
        "CredentialStore": "secrets-manager", "CredentialDelivery": "task-role",
        "DirectoryBackend": "ldaps", "LdapsUrl": "ldaps://dc1.corp.example.com",
        "CertificateArn": "arn:aws:acm:eu-west-1:123456789012:certificate/abc",
    },
}
SG_RULE_TYPES = ("AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress")


@pytest.fixture(scope="module")
def template() -> dict:
    tpl, matches = cfnlint.decode.decode(str(TEMPLATE))
    assert not matches, f"cfn-lint cannot read the template: {matches}"
    return tpl


@pytest.fixture(scope="module")
def graph(template) -> networkx.MultiDiGraph:
    return cfnlint.template.Template(str(TEMPLATE), template).graph.graph


# ── a small resolver: parameters, conditions, intrinsic values ──────────────────────────────────
class Rejected(Exception):
    """CloudFormation would refuse these parameters before creating anything."""


NO_VALUE = object()


class Stack:
    def __init__(self, template: dict, stack_name: str = "stack", **overrides):
        self.template = template
        self.stack_name = stack_name
        given = {**REQUIRED, **overrides}
        self.params = {}
        for name, spec in template["Parameters"].items():
            if name not in given and "Default" not in spec:
                raise AssertionError(f"the tests give no value for the required parameter {name}: add it to REQUIRED")
            value = given.get(name, spec.get("Default"))
            is_list = spec["Type"] == "CommaDelimitedList" or spec["Type"].startswith("List<")
            if is_list and isinstance(value, str):
                value = [v.strip() for v in value.split(",")]
            for member in value if is_list else [value]:
                pattern = spec.get("AllowedPattern")
                if pattern is not None and not re.fullmatch(pattern, str(member)):
                    raise Rejected(f"{name}: {member!r}: {spec.get('ConstraintDescription', 'does not match ' + pattern)}")
                if "AllowedValues" in spec and str(member) not in [str(a) for a in spec["AllowedValues"]]:
                    raise Rejected(f"{name}: {member!r} is not one of {spec['AllowedValues']}")
            self.params[name] = value if is_list else str(value)
        self.conditions: dict[str, bool] = {}
        for name in template.get("Conditions", {}):
            self.condition(name)
        for name, rule in template.get("Rules", {}).items():
            if "RuleCondition" in rule and not self.resolve(rule["RuleCondition"]):
                continue
            for a in rule["Assertions"]:
                if not self.resolve(a["Assert"]):
                    raise Rejected(f"Rules.{name}: {a['AssertDescription']}")

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self.resolve(self.template["Conditions"][name]))
        return self.conditions[name]

    def included(self, logical_id: str) -> bool:
        cond = self.template["Resources"][logical_id].get("Condition")
        return cond is None or self.condition(cond)

    def ref(self, name: str):
        pseudo = {"AWS::StackName": self.stack_name, "AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012",
                  "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": NO_VALUE}
        if name in pseudo:
            return pseudo[name]
        if name in self.params:
            return self.params[name]
        return f"<{name}>"  # a resource's physical id: only its identity matters here

    def resolve(self, v):
        if isinstance(v, list):
            return [x for x in (self.resolve(i) for i in v) if x is not NO_VALUE]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (k, arg), = v.items()
            if k == "Ref":
                return self.ref(arg)
            if k == "Condition":
                return self.condition(arg)
            if k.startswith("Fn::"):
                return self.fn(k[4:], arg)
        out = {k: self.resolve(x) for k, x in v.items()}
        return {k: x for k, x in out.items() if x is not NO_VALUE}

    def fn(self, name: str, arg):
        r = self.resolve
        if name == "If":
            return r(arg[1]) if self.condition(arg[0]) else r(arg[2])
        if name == "Equals":
            # CloudFormation compares the strings: a Number parameter "1" equals a literal 1.
            a, b = r(arg[0]), r(arg[1])
            if not isinstance(a, (list, dict)) and not isinstance(b, (list, dict)):
                return str(a) == str(b)
            return a == b
        if name == "Not":
            return not r(arg[0])
        if name == "And":
            return all(r(a) for a in arg)
        if name == "Or":
            return any(r(a) for a in arg)
        if name == "Contains":  # a Rules function: [list of strings, string]
            return str(r(arg[1])) in [str(i) for i in r(arg[0])]
        if name == "Select":
            items = r(arg[1])
            index = int(r(arg[0]))
            if not 0 <= index < len(items):
                raise AssertionError(f"Fn::Select [{index}, {items}] is out of range: CloudFormation fails the stack")
            return items[index]
        if name == "Split":
            return str(r(arg[1])).split(r(arg[0]))
        if name == "Join":
            return r(arg[0]).join(str(i) for i in r(arg[1]))
        if name == "FindInMap":
            m, top, second = (r(a) for a in arg)
            return self.template["Mappings"][m][top][second]
        if name == "GetAtt":
            target = arg if isinstance(arg, str) else ".".join(arg)
            return f"<{target}>"
        if name == "Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], {k: r(x) for k, x in arg[1].items()})
            return re.sub(r"\$\{([^}!]+)\}",
                          lambda m: str(variables[m.group(1)] if m.group(1) in variables else
                                        f"<{m.group(1)}>" if "." in m.group(1) else self.ref(m.group(1))), text)
        raise AssertionError(f"the tests' resolver has no Fn::{name}: add it")


# ── the dependency graph as CloudFormation uses it for one parameter set ────────────────────────
def branch_taken(stack: Stack, resource: dict, path: list) -> bool:
    """Whether a reference at `path` in a resource is live: not under an untaken Fn::If branch."""
    node = resource
    for i, key in enumerate(path):
        if key == "Fn::If" and i + 1 < len(path) and isinstance(node, dict):
            cond = node["Fn::If"][0]
            if path[i + 1] != (1 if stack.condition(cond) else 2):
                return False
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return True
    return True


def dependencies(stack: Stack, graph: networkx.MultiDiGraph) -> networkx.DiGraph:
    """cfn-lint's graph restricted to the resources that exist under the parameters; an edge
    u -> v means u depends on v (CloudFormation creates v first and deletes it last)."""
    resources = stack.template["Resources"]
    deps = networkx.DiGraph()
    deps.add_nodes_from(r for r in resources if stack.included(r))
    for u, v, data in graph.edges(data=True):
        if u in deps and v in deps and u != v and branch_taken(stack, resources[u], data.get("source_paths", [])):
            deps.add_edge(u, v)
    return deps


def delete_waves(deps: networkx.DiGraph) -> dict[str, int]:
    """CloudFormation's stack delete (and rollback): each wave deletes what nothing left depends on."""
    left, wave, n = set(deps), {}, 0
    while left:
        now = {r for r in left if not any(p in left for p in deps.predecessors(r))}
        assert now, f"a dependency cycle among {sorted(left)}"
        wave.update(dict.fromkeys(now, n))
        left -= now
        n += 1
    return wave


def refs(value) -> set[str]:
    """The logical ids a property tree refers to with Ref."""
    if isinstance(value, list):
        return set().union(*map(refs, value)) if value else set()
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return {value["Ref"]}
        return set().union(*map(refs, value.values())) if value else set()
    return set()


def service_token_function(resource: dict) -> str:
    token = resource["Properties"]["ServiceToken"]
    target = token.get("Fn::GetAtt") if isinstance(token, dict) else None
    assert target, f"ServiceToken {token} is not the GetAtt of a function of this template"
    return target.split(".")[0] if isinstance(target, str) else target[0]


def custom_resources(stack: Stack) -> list[str]:
    return [lid for lid, r in stack.template["Resources"].items() if stack.included(lid) and
            (r["Type"].startswith("Custom::") or r["Type"] == "AWS::CloudFormation::CustomResource")]


def security_groups_of(resource: dict) -> set[str]:
    """The template's security groups a function or an ECS service runs in."""
    props = resource.get("Properties", {})
    if resource["Type"] in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
        return refs(props.get("VpcConfig", {}).get("SecurityGroupIds", []))
    if resource["Type"] == "AWS::ECS::Service":
        return refs(props.get("NetworkConfiguration", {}).get("AwsvpcConfiguration", {}).get("SecurityGroups", []))
    return set()


def network_rules_of(stack: Stack, groups: set[str]) -> set[str]:
    """Every resource that holds a rule of those groups or a rule naming them: standalone
    ingress/egress, a peer group's inline rules, the groups themselves (their inline rules)."""
    found = set(groups)
    for lid, r in stack.template["Resources"].items():
        if not stack.included(lid):
            continue
        props = r.get("Properties", {})
        if r["Type"] in SG_RULE_TYPES and refs(props) & groups:
            found.add(lid)
        elif r["Type"] == "AWS::EC2::SecurityGroup" and \
                refs([props.get("SecurityGroupIngress", []), props.get("SecurityGroupEgress", [])]) & groups:
            found.add(lid)
    return found


def network_users(stack: Stack) -> dict[str, set[str]]:
    """What must be gone before a network rule goes: each VPC function, each ECS service, and each
    custom resource (whose Create, Update and Delete run in its function) -> the rules it needs."""
    resources = stack.template["Resources"]
    users = {}
    for lid, r in resources.items():
        if stack.included(lid) and security_groups_of(r):
            users[lid] = network_rules_of(stack, security_groups_of(r))
    for lid in custom_resources(stack):
        fn = service_token_function(resources[lid])
        if fn in users:
            users[lid] = users[fn]
    return users


@pytest.fixture(params=list(SCENARIOS), scope="module")
def scenario(request, template, graph):
    stack = Stack(template, **SCENARIOS[request.param])
    deps = dependencies(stack, graph)
    return stack, deps, delete_waves(deps)


# ── delete and rollback order ────────────────────────────────────────────────────────────────
def test_nothing_is_deleted_before_a_network_rule_that_something_left_still_needs(scenario):
    stack, deps, wave = scenario
    users = network_users(stack)
    # The derivation must find the rules the issue names, or it proves nothing.
    assert "FileServerIngressFromFunctions" in users["WebFolderAcl"]
    assert "FileServerIngressFromFunctions" in users["WebContent"]
    assert {"FileServerIngressFromTasks", "TaskIngressFromLoadBalancer"} <= users["WebService"]
    early = [f"{user} (wave {wave[user]}) needs {rule} (wave {wave[rule]}) but does not depend on it"
             for user, rules in sorted(users.items()) for rule in sorted(rules) if not networkx.has_path(deps, user, rule)]
    assert not early, "a stack delete or rollback removes a network rule while something still uses it:\n  " + "\n  ".join(early)


def test_custom_resources_are_deleted_before_their_functions_and_in_reverse_order(scenario):
    stack, deps, wave = scenario
    resources = stack.template["Resources"]
    for lid in custom_resources(stack):
        assert networkx.has_path(deps, lid, service_token_function(resources[lid])), lid
    # credential -> account -> ACL -> content: each is deleted before what it was built on.
    credential = "ServiceAccountSecret" if stack.condition("UseSecretsManager") else "ServiceAccountParameters"
    chain = ["WebContent", "WebFolderAcl", "ServiceAccount", credential]
    for later, earlier in zip(chain, chain[1:]):
        assert networkx.has_path(deps, later, earlier), f"{later} (wave {wave[later]}) must go before {earlier} (wave {wave[earlier]})"


def test_the_service_keeps_its_listeners_until_it_is_gone(scenario):
    stack, deps, wave = scenario
    for listener in ("HttpListener", "HttpsListener"):
        if listener in deps:
            assert networkx.has_path(deps, "WebService", listener), \
                f"WebService (wave {wave['WebService']}) must depend on {listener} (wave {wave[listener]})"
    # The service's tasks map the share: the content is in place before it and stays until it is gone.
    assert networkx.has_path(deps, "WebService", "WebContent")


def test_the_https_listener_dependency_follows_the_certificate(template, graph):
    with_cert = Stack(template, **SCENARIOS["ldaps, HTTPS, no reconcile, task-role"])
    without = Stack(template)
    assert "HttpsListener" in dependencies(with_cert, graph) and "HttpsListener" not in dependencies(without, graph)
    assert networkx.has_path(dependencies(with_cert, graph), "WebService", "HttpsListener")


# ── no async retries of a custom resource's invocation ───────────────────────────────────────
def test_custom_resource_functions_are_never_retried_by_lambda(scenario):
    stack, deps, _ = scenario
    resources = stack.template["Resources"]
    for lid in custom_resources(stack):
        fn = service_token_function(resources[lid])
        sam = resources[fn].get("Properties", {}).get("EventInvokeConfig")
        if sam is not None:
            assert sam.get("MaximumRetryAttempts") == 0, f"{fn}: EventInvokeConfig.MaximumRetryAttempts must be 0"
            continue
        configs = [c for c, r in resources.items() if r["Type"] == "AWS::Lambda::EventInvokeConfig"
                   and refs(r["Properties"].get("FunctionName")) == {fn}]
        assert configs, f"{fn} (the function of {lid}) has no AWS::Lambda::EventInvokeConfig: Lambda retries it twice"
        for c in configs:
            props = resources[c]["Properties"]
            assert props.get("MaximumRetryAttempts") == 0, f"{c}: MaximumRetryAttempts must be 0"
            assert props.get("Qualifier") == "$LATEST", f"{c}: the ServiceToken is the unqualified ARN, so $LATEST"
            # In force for the custom resource's Create, and still there for its Delete.
            assert networkx.has_path(deps, lid, c), f"{lid} must depend on {c}"


# ── what a stack delete keeps ─────────────────────────────────────────────────────────────────
def test_the_content_bucket_and_its_key_are_retained(template):
    resources = template["Resources"]
    kept = [lid for lid, r in resources.items() if r["Type"] in ("AWS::S3::Bucket", "AWS::KMS::Key")]
    assert {"ContentBucket", "SecretsKey"} <= set(kept)
    for lid in kept:
        r = resources[lid]
        assert r.get("DeletionPolicy") == "Retain" and r.get("UpdateReplacePolicy") == "Retain", \
            f"{lid}: a versioned bucket never deletes; a deleted key makes what it encrypts unreadable"


def test_nothing_retained_has_a_fixed_name(template):
    # A retained resource with a name of its own would make the next stack of that name fail.
    names = ("BucketName", "AliasName", "QueueName", "TableName", "LogGroupName", "PolicyName", "FunctionName")
    for lid, r in template["Resources"].items():
        if r.get("DeletionPolicy") == "Retain":
            fixed = [n for n in names if n in r.get("Properties", {})]
            assert not fixed, f"{lid} is retained but has {fixed}"


# ── failed deliveries are visible ─────────────────────────────────────────────────────────────
def getatt_target(value) -> str:
    assert isinstance(value, dict) and "Fn::GetAtt" in value, f"{value} is not a GetAtt of a queue of this template"
    target = value["Fn::GetAtt"]
    return target.split(".")[0] if isinstance(target, str) else target[0]


def allowed_statements(policy_document: dict) -> list[dict]:
    return [s for s in policy_document.get("Statement", []) if isinstance(s, dict) and s.get("Effect") == "Allow"]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def test_every_event_rule_target_has_a_retry_policy_and_a_dead_letter_queue(template):
    resources = template["Resources"]
    rules = [lid for lid, r in resources.items() if r["Type"] == "AWS::Events::Rule"]
    assert rules
    for rule in rules:
        for target in resources[rule]["Properties"]["Targets"]:
            where = f"{rule} target {target.get('Id')}"
            retry = target.get("RetryPolicy", {})
            assert {"MaximumRetryAttempts", "MaximumEventAgeInSeconds"} <= set(retry), f"{where}: RetryPolicy"
            queue = getatt_target(target.get("DeadLetterConfig", {}).get("Arn"))
            assert resources[queue]["Type"] == "AWS::SQS::Queue", where
            assert queue != getatt_target(target["Arn"]), f"{where}: the dead-letter queue is the target itself"
            # EventBridge needs the queue's resource policy, limited to this rule.
            grants = [s for lid, r in resources.items() if r["Type"] == "AWS::SQS::QueuePolicy"
                      and queue in refs(r["Properties"]["Queues"])
                      for s in allowed_statements(r["Properties"]["PolicyDocument"])
                      if "events.amazonaws.com" in as_list(s.get("Principal", {}).get("Service"))
                      and "sqs:SendMessage" in as_list(s["Action"])]
            assert grants, f"{where}: no queue policy lets events.amazonaws.com send to {queue}"
            sources = [a for s in grants for a in as_list(s.get("Condition", {}).get("ArnEquals", {}).get("aws:SourceArn", []))]
            assert any(getatt_target(a) == rule for a in sources), f"{where}: the grant on {queue} is not limited to the rule (aws:SourceArn)"


def test_every_schedule_has_a_retry_policy_and_a_dead_letter_queue_its_role_may_send_to(template):
    resources = template["Resources"]
    schedules = [lid for lid, r in resources.items() if r["Type"] == "AWS::Scheduler::Schedule"]
    assert schedules
    for lid in schedules:
        target = resources[lid]["Properties"]["Target"]
        assert {"MaximumRetryAttempts", "MaximumEventAgeInSeconds"} <= set(target.get("RetryPolicy", {})), lid
        queue = getatt_target(target.get("DeadLetterConfig", {}).get("Arn"))
        assert resources[queue]["Type"] == "AWS::SQS::Queue", lid
        # Scheduler sends dead letters with the schedule's execution role.
        role = getatt_target(target["RoleArn"])
        statements = [s for p in resources[role]["Properties"].get("Policies", [])
                      for s in allowed_statements(p["PolicyDocument"])]
        assert any("sqs:SendMessage" in as_list(s["Action"]) and
                   any(isinstance(x, dict) and getatt_target(x) == queue for x in as_list(s["Resource"]))
                   for s in statements), f"{lid}: {role} may not send to {queue}"


# ── domain controllers: one to four, DNS included ─────────────────────────────────────────────
FUNCTION_PORTS = [("tcp", 636), ("udp", 53), ("tcp", 53)]
# The tasks reach the DCs for DNS only: their SMB logon is NTLM (no Kerberos, 88; see the group).
TASK_PORTS = [("udp", 53), ("tcp", 53)]


def egress(stack: Stack, group: str) -> list[dict]:
    return stack.resolve(stack.template["Resources"][group]["Properties"]["SecurityGroupEgress"])


@pytest.mark.parametrize("ips", [
    "10.40.32.10",
    "10.40.32.10,10.40.48.10",
    "10.40.32.10,10.40.48.10,10.40.64.10",
    "10.40.32.10,10.40.48.10,10.40.64.10,10.40.80.10",
    "10.40.32.10,10.40.32.10",  # the same address twice: EC2 rejects a duplicate rule
    "10.40.32.10,10.40.48.10,10.40.32.10,10.40.48.10",
])
@pytest.mark.parametrize("group, ports", [("FunctionSecurityGroup", FUNCTION_PORTS), ("TaskSecurityGroup", TASK_PORTS)])
def test_each_domain_controller_gets_its_rules_dns_included(template, ips, group, ports):
    stack = Stack(template, DomainControllerIps=ips)
    rules = egress(stack, group)
    for rule in rules:
        assert rule.get("Description"), f"{group}: a rule without a Description: {rule}"
        if "CidrIp" in rule:
            ipaddress.ip_network(rule["CidrIp"])  # a malformed CIDR fails the stack
    keys = [(r["IpProtocol"], r["FromPort"], r["ToPort"], r.get("CidrIp") or r.get("DestinationSecurityGroupId")) for r in rules]
    assert len(keys) == len(set(keys)), f"{group}: duplicate rules, which EC2 rejects: {keys}"
    to_dcs = {(p, f, c) for p, f, t, c in keys if str(c).endswith("/32")}
    want = {(proto, port, f"{ip}/32") for ip in dict.fromkeys(ips.split(",")) for proto, port in ports}
    assert to_dcs == want, f"{group} with DomainControllerIps={ips}"


@pytest.mark.parametrize("ips", [
    "",
    "10.40.32.10,10.40.48.10,10.40.64.10,10.40.80.10,10.40.96.10",  # five: more than the rules cover
    "10.40.32.10, 10.40.48.10",  # a String keeps the space, and " 10.40.48.10/32" is no CIDR
    "10.40.32.10,,10.40.48.10",
    "10.40.32.10,",
    "dc1.corp.example.com",
])
def test_domain_controller_ips_that_the_rules_cannot_use_are_rejected_up_front(template, ips):
    with pytest.raises(Rejected, match="DomainControllerIps: .*one to four IPv4 addresses"):
        Stack(template, DomainControllerIps=ips)


# ── Windows Fargate sizes ─────────────────────────────────────────────────────────────────────
# The Amazon ECS Developer Guide's table of task sizes (task-cpu-memory-error.html), the rows for
# Windows containers on Fargate: 1, 2 or 4 vCPU, each with its memory range in steps of 1 GB.
WINDOWS_FARGATE_SIZES = {
    1024: range(2048, 8192 + 1, 1024),
    2048: range(4096, 16384 + 1, 1024),
    4096: range(8192, 30720 + 1, 1024),
}


def test_cpu_and_memory_parameters_allow_every_windows_fargate_size_and_no_other(template):
    params = template["Parameters"]
    assert {int(v) for v in params["TaskCpu"]["AllowedValues"]} == set(WINDOWS_FARGATE_SIZES)
    every_memory = {m for memories in WINDOWS_FARGATE_SIZES.values() for m in memories}
    assert {int(v) for v in params["TaskMemory"]["AllowedValues"]} == every_memory
    for name in ("TaskCpu", "TaskMemory"):
        assert str(params[name]["Default"]) in [str(v) for v in params[name]["AllowedValues"]], name
    assert int(params["TaskMemory"]["Default"]) in WINDOWS_FARGATE_SIZES[int(params["TaskCpu"]["Default"])]


def test_the_rules_accept_exactly_the_cpu_and_memory_pairs_of_the_table(template):
    params = template["Parameters"]
    accepted, rejected = [], []
    for cpu in params["TaskCpu"]["AllowedValues"]:
        for memory in params["TaskMemory"]["AllowedValues"]:
            valid = int(memory) in WINDOWS_FARGATE_SIZES[int(cpu)]
            try:
                Stack(template, TaskCpu=str(cpu), TaskMemory=str(memory))
            except Rejected as e:
                rejected.append((cpu, memory))
                assert not valid, f"TaskCpu {cpu} / TaskMemory {memory} is a valid Windows Fargate size but is rejected: {e}"
                message = str(e)
                # The message names both parameters and the range that CPU takes.
                memories = WINDOWS_FARGATE_SIZES[int(cpu)]
                assert "TaskCpu" in message and "TaskMemory" in message, message
                assert f"{memories[0]}-{memories[-1]}" in message, message
            else:
                accepted.append((cpu, memory))
                assert valid, f"TaskCpu {cpu} / TaskMemory {memory} is no Windows Fargate size, yet the Rules accept it"
    assert len(accepted) == sum(len(m) for m in WINDOWS_FARGATE_SIZES.values())
    assert rejected  # the AllowedValues alone let invalid pairs through: the Rules must catch them


# ── health, stop and drain ────────────────────────────────────────────────────────────────────
HEALTH_FILE = "/content/fargate-smb-health.txt"


def web_container(stack: Stack) -> dict:
    task = stack.resolve(stack.template["Resources"]["TaskDefinition"]["Properties"])
    (container,) = task["ContainerDefinitions"]
    return container


def test_both_health_checks_ask_iis_for_the_file_on_the_share(template):
    stack = Stack(template)
    tg = stack.resolve(template["Resources"]["TargetGroup"]["Properties"])
    assert tg["HealthCheckPath"] == HEALTH_FILE
    assert str(tg["Matcher"]["HttpCode"]) == "200", "a redirect or an error page is not the file"
    check = web_container(stack)["HealthCheck"]
    assert check["Command"][0] == "CMD-SHELL"
    assert f"http://localhost{HEALTH_FILE}" in check["Command"][1]
    # The IIS virtual directory /content is the content folder on the mapped drive.
    env = {e["Name"]: e["Value"] for e in web_container(stack)["Environment"]}
    assert env["SMB_IIS_VDIRS"].startswith("/content=")
    # ...and IIS reads the probe from the share each time, never from a cache.
    assert env["SMB_IIS_NO_CACHE"] == HEALTH_FILE


def test_the_probe_is_written_before_any_health_check_asks_for_it(template, graph):
    """An upgrade from a version that checked `/`: WebContent must get an Update (a code-only
    change sends none, so a property must differ: HealthProbe, given explicitly) and the target
    group and the service must change only after it, or running tasks fail the new check and
    are replaced by tasks that fail it too."""
    props = template["Resources"]["WebContent"]["Properties"]
    assert props.get("HealthProbe") in (True, "true"), "WebContent must write the probe, explicitly"
    for dependent in ("TargetGroup", "WebService"):
        assert networkx.has_path(graph, dependent, "WebContent"), f"{dependent} does not wait for WebContent"


def test_health_timing_leaves_the_entrypoint_its_deadline_and_the_alb_its_checks(template):
    stack = Stack(template)
    container = web_container(stack)
    check = container["HealthCheck"]
    deadline = int({e["Name"]: e["Value"] for e in container["Environment"]}["SMB_DEADLINE_SECONDS"])
    # ECS: startPeriod 0-300 s, timeout 2-60 s, interval 5-300 s.
    assert check["StartPeriod"] <= 300 and 2 <= check["Timeout"] <= 60 and 5 <= check["Interval"] <= 300
    assert check["Timeout"] < check["Interval"]
    assert check["StartPeriod"] > deadline, "the entrypoint may use its whole deadline before IIS serves anything"
    tg = stack.resolve(template["Resources"]["TargetGroup"]["Properties"])
    service = stack.resolve(template["Resources"]["WebService"]["Properties"])
    # The load balancer checks from the moment the task registers, whatever the container's
    # start period: the worst case is a task that maps its share at the entrypoint's deadline,
    # then IIS's start (W3SVC, the app pool: allow 60 s), then up to one interval until the next
    # check and the healthy threshold's passes.
    iis_start = 60
    to_healthy = (tg["HealthyThresholdCount"] + 1) * tg["HealthCheckIntervalSeconds"]
    assert service["HealthCheckGracePeriodSeconds"] >= deadline + iis_start + to_healthy, \
        "a task that maps at its deadline must still pass the load balancer's checks within the grace period"
    # ...and the container's own check must not count failures before the entrypoint is done.
    assert service["HealthCheckGracePeriodSeconds"] >= check["StartPeriod"]
    breaker = service["DeploymentConfiguration"]["DeploymentCircuitBreaker"]
    assert breaker == {"Enable": True, "Rollback": True}


def test_a_stopping_task_drains_then_gets_fargates_maximum_stop_timeout(template):
    stack = Stack(template)
    assert web_container(stack)["StopTimeout"] == 120  # Fargate's maximum
    tg = stack.resolve(template["Resources"]["TargetGroup"]["Properties"])
    attrs = {a["Key"]: a["Value"] for a in tg["TargetGroupAttributes"]}
    assert int(attrs["deregistration_delay.timeout_seconds"]) == web_container(stack)["StopTimeout"]


def test_the_iis_log_folder_is_passed_to_the_entrypoint(template):
    env = {e["Name"]: e["Value"] for e in web_container(Stack(template))["Environment"]}
    assert env["SMB_IIS_LOG_DIR"] == "C:\\inetpub\\logs\\LogFiles"


# ── ECS Exec ──────────────────────────────────────────────────────────────────────────────────
ECS_EXEC_ACTIONS = {"ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
                    "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel"}


def role_statements(stack: Stack, role: str) -> list[dict]:
    policies = stack.resolve(stack.template["Resources"][role]["Properties"].get("Policies", []))
    return [s for p in policies for s in allowed_statements(p["PolicyDocument"])]


@pytest.mark.parametrize("store", ["ssm-parameters", "secrets-manager"])
@pytest.mark.parametrize("delivery", ["ecs-secrets", "task-role"])
@pytest.mark.parametrize("exec_on", ["false", "true"])
def test_ecs_exec_adds_exactly_its_four_actions_to_the_task_role(template, store, delivery, exec_on):
    stack = Stack(template, CredentialDelivery=delivery, EnableExecuteCommand=exec_on, CredentialStore=store)
    service = stack.resolve(template["Resources"]["WebService"]["Properties"])
    assert service["EnableExecuteCommand"] is (exec_on == "true")
    statements = role_statements(stack, "TaskRole")
    exec_statements = [s for s in statements if any(a.startswith("ssmmessages:") for a in as_list(s["Action"]))]
    if exec_on == "true":
        (s,) = exec_statements
        assert set(as_list(s["Action"])) == ECS_EXEC_ACTIONS and as_list(s["Resource"]) == ["*"]
    else:
        assert not exec_statements
    # The credential policy is there exactly with task-role delivery, whatever ECS Exec does.
    read = "secretsmanager:GetSecretValue" if store == "secrets-manager" else "ssm:GetParameter"
    reads = [s for s in statements if read in as_list(s["Action"])]
    assert bool(reads) is (delivery == "task-role")
    assert len(statements) == (2 if delivery == "task-role" else 0) + (1 if exec_on == "true" else 0)


def test_ecs_exec_sessions_are_not_logged(template):
    # With ecs-secrets a session can print SMB_PASSWORD: no session output goes to CloudWatch.
    cluster = Stack(template).resolve(template["Resources"]["Cluster"]["Properties"])
    assert cluster["Configuration"]["ExecuteCommandConfiguration"] == {"Logging": "NONE"}


# ── image pull ────────────────────────────────────────────────────────────────────────────────
ECR_PULL = {"ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"}


@pytest.mark.parametrize("repository", [
    "arn:aws:ecr:eu-west-1:123456789012:repository/fargate-smb-web",
    "arn:aws:ecr:us-east-2:210987654321:repository/team/windows/fargate-smb-web",  # another account, region, nested name
    "arn:aws-cn:ecr:cn-north-1:123456789012:repository/web.site_v2-a",
])
def test_the_execution_role_pulls_from_the_images_repository_only(template, repository):
    stack = Stack(template, ContainerRepositoryArn=repository)
    ecr = [s for s in role_statements(stack, "TaskExecutionRole") if any(a.startswith("ecr:") for a in as_list(s["Action"]))]
    pull = [s for s in ecr if set(as_list(s["Action"])) & ECR_PULL]
    assert len(pull) == 1 and set(as_list(pull[0]["Action"])) == ECR_PULL and as_list(pull[0]["Resource"]) == [repository]
    login = [s for s in ecr if s not in pull]
    assert len(login) == 1 and as_list(login[0]["Action"]) == ["ecr:GetAuthorizationToken"]


def test_an_image_outside_ecr_gets_no_ecr_permission(template):
    stack = Stack(template, ContainerRepositoryArn="none")
    assert not [s for s in role_statements(stack, "TaskExecutionRole")
                if any(a.startswith("ecr:") for a in as_list(s["Action"]))]


@pytest.mark.parametrize("repository", [
    "arn:aws:ecr:eu-west-1:123456789012:repository/*",
    "arn:aws:ecr:eu-west-1:123456789012:repository/fargate-smb-*",
    "arn:aws:ecr:eu-west-1:123456789012:repository/Fargate-Smb",  # ECR names are lower case
    "123456789012.dkr.ecr.eu-west-1.amazonaws.com/fargate-smb-web",  # the image URI, not the ARN
    "arn:aws:ecr:eu-west-1:123456789012:repository/web/",
    "None",
])
def test_a_repository_that_is_not_one_ecr_repository_is_rejected(template, repository):
    with pytest.raises(Rejected, match="ContainerRepositoryArn"):
        Stack(template, ContainerRepositoryArn=repository)


@pytest.mark.parametrize("image, repository", [
    ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/fargate-smb-web:1",
     "arn:aws:ecr:eu-west-1:123456789012:repository/fargate-smb-web"),
    ("210987654321.dkr.ecr.us-east-2.amazonaws.com/team/windows/web:1.2.3",  # nested, dotted tag
     "arn:aws:ecr:us-east-2:210987654321:repository/team/windows/web"),
    ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/web@sha256:0123abcd",  # by digest
     "arn:aws:ecr:eu-west-1:123456789012:repository/web"),
    ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/web", "arn:aws:ecr:eu-west-1:123456789012:repository/web"),
    ("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com/web:1", None),  # not taken apart: give the ARN
    ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/web:1", None),  # China: give the ARN
    ("123456789012.dkr.ecr.eu-west-1.amazonaws.com:443/web:1", None),  # a port
    ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", None),  # no name
    ("mcr.microsoft.com/windows/servercore/iis:windowsservercore-ltsc2022", None),
    ("public.ecr.aws/abc123/web:1", None),
    ("web", None),
])
def test_an_empty_repository_is_derived_from_an_ecr_image(template, image, repository):
    """Empty (the default, so an upgraded stack needs no new value): the pull is scoped to the
    repository the ECR image URI names, exactly; an image outside private ECR gets no ECR
    permission, and no image makes the template fail (Fn::Select stays in range)."""
    assert template["Parameters"]["ContainerRepositoryArn"]["Default"] == ""
    stack = Stack(template, ContainerImage=image)
    ecr = [st for st in role_statements(stack, "TaskExecutionRole") if any(a.startswith("ecr:") for a in as_list(st["Action"]))]
    if repository is None:
        assert ecr == [], ecr
        return
    pull = [st for st in ecr if set(as_list(st["Action"])) & ECR_PULL]
    assert len(pull) == 1 and as_list(pull[0]["Resource"]) == [repository], pull


# ── names derived from the stack name ─────────────────────────────────────────────────────────
# The limits of every name property the template sets (CloudFormation's stack name may have 128
# characters); a name property missing here fails the test, so that its limit gets looked up.
NAME_LIMITS = {
    ("AWS::Logs::LogGroup", "LogGroupName"): 512,
    ("AWS::ECS::TaskDefinition", "Family"): 255,
    ("AWS::KMS::Alias", "AliasName"): 256,
    ("AWS::KMS::Key", "Description"): 8192,
    ("AWS::EC2::SecurityGroupIngress", "Description"): 255,
    ("AWS::Scheduler::Schedule", "Description"): 512,
    ("AWS::SecretsManager::Secret", "Description"): 2048,
}
NAME_KEYS = ("Name", "Family", "Description")


@pytest.mark.parametrize("store", ["ssm-parameters", "secrets-manager"])
def test_no_name_caps_the_stack_name_below_cloudformations_128_characters(template, store):
    long_name = "s" * 128
    stack = Stack(template, stack_name=long_name, FunctionNaming="generated", CredentialStore=store)
    checked = []
    for lid, r in template["Resources"].items():
        if not stack.included(lid):
            continue
        props = r.get("Properties", {})
        # With generated names CloudFormation names a function itself (cut to Lambda's 64): a
        # FunctionName from the stack name would cap it.
        # (An invoke config's or a permission's FunctionName names the function, it gives no name.)
        if r["Type"] not in ("AWS::Lambda::EventInvokeConfig", "AWS::Lambda::Permission") and "FunctionName" in props:
            assert stack.resolve({"x": props["FunctionName"]}) == {}, f"{lid} sets FunctionName with generated names"
        for key, raw in props.items():
            if not key.endswith(NAME_KEYS) or "AWS::StackName" not in str(raw):
                continue
            value = stack.resolve(raw)
            if value is NO_VALUE or value == {}:
                continue  # not set with these parameters (FunctionName with generated names)
            limit = NAME_LIMITS.get((r["Type"], key))
            assert limit is not None, f"{lid}.{key} is derived from the stack name: add its limit to NAME_LIMITS"
            assert len(value) <= limit, f"{lid}.{key} is {len(value)} characters with a 128-character stack name (limit {limit})"
            checked.append(f"{lid}.{key}")
    # The derivation saw the names it must see, or it proves nothing.
    assert {"TaskLogGroup.LogGroupName", "TaskDefinition.Family", "SecretsKeyAlias.AliasName",
            "RotatePasswordLogGroup.LogGroupName"} <= set(checked)


def test_functions_keep_the_names_earlier_versions_gave_by_default(template):
    """FunctionNaming stack-name (the default): exactly the names fcb61e9 and earlier gave, so an
    upgrade keeps every custom resource's ServiceToken (CloudFormation refuses to change one).
    The longest stack name that fits Lambda's 64 characters is 45, as the parameter says."""
    stack = Stack(template, stack_name="s" * 45)
    named = {}
    for lid, r in template["Resources"].items():
        if r["Type"] == "AWS::Serverless::Function":
            name = stack.resolve(r["Properties"].get("FunctionName"))
            assert isinstance(name, str) and name.startswith("s" * 45 + "-"), f"{lid}: {name!r}"
            assert len(name) <= 64, f"{lid}: {name} has {len(name)} characters"
            named[lid] = name[46:]
    assert named == {
        "SsmParametersFunction": "ssm-parameters", "AdServiceAccountFunction": "ad-service-account",
        "ShareAclFunction": "share-acl", "WebContentFunction": "web-content",
        "RotatePasswordFunction": "rotate-password", "SyncContentFunction": "sync-content",
    }
    assert "45 characters" in template["Parameters"]["FunctionNaming"]["Description"]


# ── the credential store: SSM parameters or one Secrets Manager secret ─────────────────────────
PASSWORD_RS = ROOT / "crates" / "secrets" / "src" / "password.rs"
STORES = ["ssm-parameters", "secrets-manager"]


def password_rs_alphabet() -> set[str]:
    """The characters crates/secrets generates from, read from password.rs itself."""
    source = PASSWORD_RS.read_text()
    alphabet = set()
    for name in ("UPPER", "LOWER", "DIGITS", "SAFE_SYMBOLS"):
        m = re.search(rf'const {name}: &str = "([^"]*)";', source)
        assert m, f"password.rs has no const {name}: the test reads the alphabet from it"
        alphabet |= set(m.group(1))
    return alphabet


def template_references(stack: Stack, value) -> set[str]:
    """Logical ids that `value` refers to (Ref, GetAtt, Sub) in the branches the conditions take."""
    found = set()
    if isinstance(value, list):
        for v in value:
            found |= template_references(stack, v)
    elif isinstance(value, dict):
        if set(value) == {"Fn::If"}:
            cond, yes, no = value["Fn::If"]
            return template_references(stack, yes if stack.condition(cond) else no)
        if set(value) == {"Ref"}:
            return {value["Ref"]} - set(stack.params) - {v for v in [value["Ref"]] if v.startswith("AWS::")}
        if set(value) == {"Fn::GetAtt"}:
            target = value["Fn::GetAtt"]
            return {target.split(".")[0] if isinstance(target, str) else target[0]}
        if set(value) == {"Fn::Sub"}:
            arg = value["Fn::Sub"]
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            for name in re.findall(r"\$\{([^}!]+)\}", text):
                head = name.split(".")[0]
                if head not in variables and head not in stack.params and not head.startswith("AWS::"):
                    found.add(head)
            return found | template_references(stack, variables)
        for v in value.values():
            found |= template_references(stack, v)
    return found


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("delivery", ["ecs-secrets", "task-role"])
def test_nothing_refers_to_a_resource_the_store_leaves_out(template, store, delivery):
    """CloudFormation rejects a template whose included resources or outputs refer to a resource
    whose Condition is false (outside an Fn::If branch that is not taken)."""
    stack = Stack(template, CredentialStore=store, CredentialDelivery=delivery)
    resources = template["Resources"]
    dangling = []
    for lid, r in resources.items():
        if not stack.included(lid):
            continue
        deps = r.get("DependsOn", [])
        for target in ({deps} if isinstance(deps, str) else set(deps)) | template_references(stack, r.get("Properties", {})) | \
                template_references(stack, r.get("Metadata", {})):
            if target not in resources or not stack.included(target):
                dangling.append(f"{lid} -> {target}")
    for name, output in template.get("Outputs", {}).items():
        if "Condition" in output and not stack.condition(output["Condition"]):
            continue
        for target in template_references(stack, output["Value"]):
            if target not in resources or not stack.included(target):
                dangling.append(f"Outputs.{name} -> {target}")
    assert not dangling, f"with CredentialStore={store}, {delivery}: references to resources left out:\n  " + "\n  ".join(dangling)
    # The derivation saw the switch, or it proves nothing.
    assert stack.included("ServiceAccountSecret") is (store == "secrets-manager")
    assert stack.included("ServiceAccountParameters") is (store == "ssm-parameters")


def resolved(stack: Stack, lid: str) -> dict:
    return stack.resolve(stack.template["Resources"][lid]["Properties"])


@pytest.mark.parametrize("version", ["1", "2026-12-01", 'a "quoted" \\ value'])
def test_the_secret_is_generated_as_json_with_the_alphabet_of_password_rs(template, version):
    stack = Stack(template, CredentialStore="secrets-manager", PasswordVersion=version)
    secret = resolved(stack, "ServiceAccountSecret")
    generate = secret["GenerateSecretString"]
    # The template string is JSON (backslashes escaped, PasswordVersion's quotes too), and holds
    # what the contract says: the first account, qualified, and the share's UNC.
    value = json.loads(generate["SecretStringTemplate"])
    assert value == {"username": "CORP\\svc-web-a", "share": "\\\\amznfsxabc.corp.example.com\\share", "generation": version}
    assert generate["GenerateStringKey"] == "password" and "password" not in value
    # ExcludeCharacters is exactly every printable ASCII character outside password.rs's alphabet.
    printable = {chr(c) for c in range(0x20, 0x7F)}
    alphabet = password_rs_alphabet()
    assert set(generate["ExcludeCharacters"]) == printable - alphabet, \
        f"excluded too much: {sorted(set(generate['ExcludeCharacters']) & alphabet)}; too little: {sorted(printable - alphabet - set(generate['ExcludeCharacters']))}"
    assert len(generate["ExcludeCharacters"]) == len(set(generate["ExcludeCharacters"]))
    assert int(generate["PasswordLength"]) == 32
    assert generate["RequireEachIncludedType"] is True and generate.get("IncludeSpace", False) is False
    # Under the stack's key (a GetAtt of SecretsKey, resolved to its placeholder).
    assert secret["KmsKeyId"] == "<SecretsKey.Arn>"


def generation_text(generate: dict) -> str:
    """What PasswordSecretVersion must be for a resolved GenerateSecretString: all of it, since
    CloudFormation writes a new value when any of it changes (not only the template string)."""
    assert set(generate) == {"SecretStringTemplate", "GenerateStringKey", "PasswordLength", "ExcludeCharacters",
                             "IncludeSpace", "RequireEachIncludedType"}, \
        f"GenerateSecretString has {sorted(generate)}: a new setting must go into PasswordSecretVersion too"
    assert generate["GenerateStringKey"] == "password"
    flags = f"space={str(generate['IncludeSpace']).lower()} each={str(generate['RequireEachIncludedType']).lower()}"
    return f"{generate['SecretStringTemplate']} length={generate['PasswordLength']} exclude={generate['ExcludeCharacters']} {flags}"


def test_the_accounts_version_is_everything_the_secret_is_generated_from(template):
    """PasswordSecretVersion changes exactly when CloudFormation writes a new value: whenever any
    of GenerateSecretString changes (its template string, the length, the excluded characters,
    the flags). The task definition's SMB_CREDENTIAL_GENERATION is the same text, so the tasks
    roll with it."""
    def texts(t, version: str) -> tuple[str, str, str]:
        stack = Stack(t, CredentialStore="secrets-manager", PasswordVersion=version)
        (container,) = resolved(stack, "TaskDefinition")["ContainerDefinitions"]
        env = {e["Name"]: e["Value"] for e in container["Environment"]}
        return (resolved(stack, "ServiceAccount")["PasswordSecretVersion"],
                generation_text(resolved(stack, "ServiceAccountSecret")["GenerateSecretString"]),
                env["SMB_CREDENTIAL_GENERATION"])
    seen = set()
    for version in ("1", "7"):
        got, expected, env = texts(template, version)
        assert got == expected == env
        seen.add(got)
    # A change of a generation setting alone (as a later release might make) changes it too.
    for key, value in (("Length", 40), ("ExcludeCharacters", "!")):
        changed = copy.deepcopy(template)
        changed["Mappings"]["ServiceAccountPassword"]["Generate"][key] = value
        got, expected, env = texts(changed, "1")
        assert got == expected == env and got not in seen, key
        seen.add(got)


@pytest.mark.parametrize("store", STORES)
def test_the_account_reads_its_password_from_the_store(template, store):
    stack = Stack(template, CredentialStore=store)
    props = resolved(stack, "ServiceAccount")
    ssm_props = {"PasswordParameter", "PasswordParameterVersion", "UsernameParameter"}
    sm_props = {"PasswordSecretId", "PasswordSecretVersion"}
    if store == "secrets-manager":
        assert sm_props <= set(props) and not ssm_props & set(props)
        assert props["PasswordSecretId"] == "<ServiceAccountSecret>"
    else:
        assert ssm_props <= set(props) and not sm_props & set(props)
    statements = role_statements(stack, "AdServiceAccountRole")
    reads = [s for s in statements if s.get("Sid") == "ReadThePasswordAndTheActiveUsername"]
    decrypt = [s for s in statements if s.get("Sid") == "DecryptThePassword"]
    assert len(reads) == 1 and len(decrypt) == 1
    via = decrypt[0]["Condition"]["StringEquals"]["kms:ViaService"]
    if store == "secrets-manager":
        assert reads[0]["Action"] == "secretsmanager:GetSecretValue" and reads[0]["Resource"] == "<ServiceAccountSecret>"
        assert via == "secretsmanager.eu-west-1.amazonaws.com"
        assert not [s for s in statements if any(a.startswith("ssm:") for a in as_list(s["Action"]))]
    else:
        assert reads[0]["Action"] == "ssm:GetParameter" and via == "ssm.eu-west-1.amazonaws.com"


ROTATION_SECRET_ACTIONS = {"secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue",
                           "secretsmanager:UpdateSecretVersionStage", "secretsmanager:TagResource",
                           "secretsmanager:UntagResource"}


@pytest.mark.parametrize("store", STORES)
def test_the_rotation_follows_the_store(template, store):
    stack = Stack(template, CredentialStore=store)
    sm = store == "secrets-manager"
    assert stack.included("RotationSchedule") is not sm
    assert stack.included("SecretRotationSchedule") is sm and stack.included("RotatePasswordSecretsManagerPermission") is sm
    env = resolved(stack, "RotatePasswordFunction")["Environment"]["Variables"]
    assert env["CREDENTIAL_STORE"] == store
    assert ("SECRET_ID" in env) is sm and ("PARAMETER_PREFIX" in env) is not sm
    statements = role_statements(stack, "RotatePasswordRole")
    secret_actions = {a for s in statements for a in as_list(s["Action"]) if a.startswith("secretsmanager:")
                      and as_list(s["Resource"]) == ["<ServiceAccountSecret>"]}
    ssm_actions = {a for s in statements for a in as_list(s["Action"]) if a.startswith("ssm:")}
    kms = [s for s in statements if any(a.startswith("kms:") for a in as_list(s["Action"])) and s["Resource"] == "<SecretsKey.Arn>"]
    (key,) = kms
    invoke = [s for s in role_statements(stack, "SchedulerRole") if "lambda:InvokeFunction" in as_list(s["Action"])]
    if sm:
        assert env["SECRET_ID"] == "<ServiceAccountSecret>"
        assert secret_actions == ROTATION_SECRET_ACTIONS and not ssm_actions
        assert set(as_list(key["Action"])) == {"kms:Decrypt", "kms:GenerateDataKey"}
        assert key["Condition"]["StringEquals"]["kms:ViaService"] == "secretsmanager.eu-west-1.amazonaws.com"
        schedule = resolved(stack, "SecretRotationSchedule")
        assert schedule["SecretId"] == "<ServiceAccountSecret>"
        assert schedule["RotationLambdaARN"] == "<RotatePasswordFunction.Arn>"
        assert schedule["RotationRules"] == {"AutomaticallyAfterDays": "30"}
        assert schedule["RotateImmediatelyOnUpdate"] is False
        # Not before the accounts exist, nor before Secrets Manager may invoke the function.
        assert set(template["Resources"]["SecretRotationSchedule"]["DependsOn"]) >= {"ServiceAccount", "RotatePasswordSecretsManagerPermission"}
        permission = resolved(stack, "RotatePasswordSecretsManagerPermission")
        assert permission == {"FunctionName": "<RotatePasswordFunction.Arn>", "Action": "lambda:InvokeFunction",
                              "Principal": "secretsmanager.amazonaws.com", "SourceAccount": "123456789012",
                              "SourceArn": "<ServiceAccountSecret>"}
        # Scheduler no longer invokes the rotation.
        assert all("<RotatePasswordFunction.Arn>" not in as_list(s["Resource"]) for s in invoke)
    else:
        assert not secret_actions and "ssm:PutParameter" in ssm_actions
        assert key["Condition"]["StringEquals"]["kms:ViaService"] == "ssm.eu-west-1.amazonaws.com"
        assert any("<RotatePasswordFunction.Arn>" in as_list(s["Resource"]) for s in invoke)
    assert resolved(Stack(template, CredentialStore=store, RotationIntervalDays="1"),
                    "SecretRotationSchedule" if sm else "RotationSchedule")["RotationRules" if sm else "ScheduleExpression"] == \
        ({"AutomaticallyAfterDays": "1"} if sm else "rate(1 day)")


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("delivery", ["ecs-secrets", "task-role"])
def test_the_container_gets_the_credential_from_the_store(template, store, delivery):
    stack = Stack(template, CredentialStore=store, CredentialDelivery=delivery)
    container = web_container(stack)
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    secrets = {s["Name"]: s["ValueFrom"] for s in container.get("Secrets", [])}
    names = {"SMB_USERNAME_PARAMETER", "SMB_PASSWORD_PARAMETER", "SMB_CREDENTIAL_SECRET"}
    execution = role_statements(stack, "TaskExecutionRole")
    task = role_statements(stack, "TaskRole")
    credential_reads = {"ssm:GetParameters", "ssm:GetParameter", "secretsmanager:GetSecretValue"}

    def reads(statements):
        return [s for s in statements if set(as_list(s["Action"])) & credential_reads]

    def decrypt_via(statements):
        return [s["Condition"]["StringEquals"]["kms:ViaService"] for s in statements if "kms:Decrypt" in as_list(s["Action"])]

    via = "secretsmanager.eu-west-1.amazonaws.com" if store == "secrets-manager" else "ssm.eu-west-1.amazonaws.com"
    if delivery == "ecs-secrets":
        assert not names & set(env)
        if store == "secrets-manager":  # ECS's JSON-key syntax: <secret ARN>:<key>:<stage>:<version id>
            assert secrets == {"SMB_USERNAME": "<ServiceAccountSecret>:username::", "SMB_PASSWORD": "<ServiceAccountSecret>:password::"}
            (s,) = reads(execution)
            assert s["Action"] == "secretsmanager:GetSecretValue" and s["Resource"] == "<ServiceAccountSecret>"
        else:
            assert secrets == {"SMB_USERNAME": "<ServiceAccountParameters.UsernameParameterArn>",
                               "SMB_PASSWORD": "<ServiceAccountParameters.PasswordParameterArn>"}
            (s,) = reads(execution)
            assert s["Action"] == "ssm:GetParameters"
        assert decrypt_via(execution) == [via] and not reads(task) and not decrypt_via(task)
    else:
        assert not secrets
        if store == "secrets-manager":  # the ARN, never the value
            assert {n for n in names if n in env} == {"SMB_CREDENTIAL_SECRET"} and env["SMB_CREDENTIAL_SECRET"] == "<ServiceAccountSecret>"
            (s,) = reads(task)
            assert s["Action"] == "secretsmanager:GetSecretValue" and s["Resource"] == "<ServiceAccountSecret>"
        else:
            assert {n for n in names if n in env} == {"SMB_USERNAME_PARAMETER", "SMB_PASSWORD_PARAMETER"}
            (s,) = reads(task)
            assert s["Action"] == "ssm:GetParameter"
        assert decrypt_via(task) == [via] and not reads(execution) and not decrypt_via(execution)


@pytest.mark.parametrize("store", STORES)
def test_the_outputs_name_the_store(template, store):
    stack = Stack(template, CredentialStore=store)
    present = {name for name, o in template["Outputs"].items() if "Condition" not in o or stack.condition(o["Condition"])}
    ssm_outputs = {"UsernameParameterName", "PasswordParameterName", "SharePathParameterName"}
    if store == "secrets-manager":
        assert "CredentialSecretArn" in present and not ssm_outputs & present
        assert stack.resolve(template["Outputs"]["CredentialSecretArn"]["Value"]) == "<ServiceAccountSecret>"
    else:
        assert ssm_outputs <= present and "CredentialSecretArn" not in present


def test_the_store_parameter_is_documented_next_to_the_delivery(template):
    spec = template["Parameters"]["CredentialStore"]
    assert spec["Default"] == "ssm-parameters" and spec["AllowedValues"] == STORES
    for word in ("ssm-parameters", "secrets-manager", "rotate-secret"):
        assert word in spec["Description"], word
    groups = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    (group,) = [g["Parameters"] for g in groups if "CredentialDelivery" in g["Parameters"]]
    assert "CredentialStore" in group


@pytest.mark.parametrize("store", STORES)
def test_a_new_password_version_rolls_the_tasks(template, store):
    """A new PasswordVersion makes a new credential and resets AD to it in the same update; the
    tasks read the credential only when they start, so the task definition must change with it
    (else they keep the old password, and the next rotation may reset the account they hold)."""
    def env(version: str) -> dict:
        stack = Stack(template, CredentialStore=store, PasswordVersion=version)
        (container,) = resolved(stack, "TaskDefinition")["ContainerDefinitions"]
        return {e["Name"]: e["Value"] for e in container["Environment"]}

    assert env("1") != env("2")
    if store == "ssm-parameters":
        assert env("2")["SMB_CREDENTIAL_GENERATION"] == "2"
    else:
        assert '"generation": "2"' in env("2")["SMB_CREDENTIAL_GENERATION"]

"""cloudformation/prerequisites.yaml with NetworkEgress vpc-endpoints: its endpoints are exactly the
AWS APIs that the code in the VPC calls.

What is called comes from the code, not from a list kept by hand: the `aws-sdk-*` crates that each
VPC-attached function (template.yaml: a `VpcConfig`) and the container entrypoint depend on,
through the workspace's own crates. To that the platform's own calls are added, read from
template.yaml: ECR (api, dkr, and S3 for the layers) for an image in ECR, CloudWatch Logs for the
awslogs driver, SSM for `Secrets` taken from Parameter Store, and S3 for the CloudFormation
response of a custom resource whose function is in the VPC.
"""

import tomllib
from pathlib import Path

import pytest

try:
    import cfnlint.decode
except ImportError:  # pragma: no cover - an environment problem, not a template one
    pytest.fail("cfn-lint is not importable: run scripts/install (moto[server] brings it)", pytrace=False)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "cloudformation" / "template.yaml"
PREREQUISITES = ROOT / "cloudformation" / "prerequisites.yaml"

# SDK crate -> the endpoint service name after com.amazonaws.<region>. A new client must be added
# here, which makes whoever adds it decide about its endpoint.
SDK_ENDPOINT = {
    "aws-sdk-ssm": "ssm",
    "aws-sdk-secretsmanager": "secretsmanager",
    "aws-sdk-ecs": "ecs",
    "aws-sdk-s3": "s3",
    "aws-sdk-dynamodb": "dynamodb",
    "aws-sdk-directory": "ds",
    "aws-sdk-directoryservicedata": "ds-data",
}
GATEWAY = {"s3", "dynamodb"}


def decode(path: Path) -> dict:
    tpl, matches = cfnlint.decode.decode(str(path))
    assert not matches, f"cfn-lint cannot read {path.name}: {matches}"
    return tpl


def workspace_paths() -> dict[str, Path]:
    deps = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["dependencies"]
    return {name: ROOT / spec["path"] for name, spec in deps.items() if isinstance(spec, dict) and "path" in spec}


def sdk_crates(crate_dir: Path, internal: dict[str, Path], seen: set[Path] | None = None) -> set[str]:
    """The aws-sdk-* crates a crate uses at run time (dev-dependencies excluded), through the
    workspace's own crates. aws-config is not counted: its STS/SSO clients serve only profiles
    this project never uses (credentials come from Lambda's environment or ECS's endpoint)."""
    seen = set() if seen is None else seen
    if crate_dir in seen:
        return set()
    seen.add(crate_dir)
    manifest = tomllib.loads((crate_dir / "Cargo.toml").read_text())
    tables = [manifest.get("dependencies", {})]
    tables += [t.get("dependencies", {}) for t in manifest.get("target", {}).values()]
    found = set()
    for table in tables:
        for name in table:
            if name.startswith("aws-sdk-"):
                found.add(name)
            elif name in internal:
                found |= sdk_crates(internal[name], internal, seen)
    return found


def vpc_functions(template: dict) -> dict[str, dict]:
    return {
        name: r for name, r in template["Resources"].items()
        if r["Type"] == "AWS::Serverless::Function" and "VpcConfig" in r.get("Properties", {})
    }


def needed_endpoints(template: dict) -> dict[str, set[str]]:
    """Endpoint service -> who needs it."""
    internal = workspace_paths()
    needs: dict[str, set[str]] = {}

    def need(service: str, who: str):
        needs.setdefault(service, set()).add(who)

    functions = vpc_functions(template)
    assert functions, "template.yaml has no function with a VpcConfig: the test reads the wrong file"
    for name, function in functions.items():
        binary = function["Metadata"]["BuildProperties"]["Binary"]
        for crate in sdk_crates(ROOT / "functions" / binary, internal):
            assert crate in SDK_ENDPOINT, f"{binary} uses {crate}: add its VPC endpoint to SDK_ENDPOINT and to prerequisites.yaml"
            need(SDK_ENDPOINT[crate], binary)
    for crate in sdk_crates(ROOT / "container", internal):
        assert crate in SDK_ENDPOINT, f"the entrypoint uses {crate}: add its VPC endpoint"
        need(SDK_ENDPOINT[crate], "entrypoint (task-role)")

    # CloudFormation's response goes to a pre-signed S3 URL, from the function itself.
    for r in template["Resources"].values():
        if r["Type"].startswith("Custom::"):
            token = r["Properties"]["ServiceToken"]
            target = token["Fn::GetAtt"][0] if isinstance(token, dict) and "Fn::GetAtt" in token else None
            if target in functions:
                need("s3", f"{target} (CloudFormation response)")

    for r in template["Resources"].values():
        if r["Type"] != "AWS::ECS::TaskDefinition":
            continue
        for container in r["Properties"]["ContainerDefinitions"]:
            # ContainerImage is an ECR repository URI (the parameter says so): the pull calls
            # ecr.api (auth token), ecr.dkr (manifest) and S3 (the layers).
            for service in ("ecr.api", "ecr.dkr", "s3"):
                need(service, "Fargate image pull")
            if container.get("LogConfiguration", {}).get("LogDriver") == "awslogs":
                need("logs", "Fargate awslogs")
            if "Secrets" in container:
                need("ssm", "Fargate Secrets (ecs-secrets)")
    # ECS Exec, when the service turns it on: the SSM agent in the task talks to ssmmessages.
    service = template["Resources"]["WebService"]["Properties"]
    if isinstance(service.get("EnableExecuteCommand"), dict):
        need("ssmmessages", "ECS Exec (EnableExecuteCommand)")
    return needs


def endpoint_service(resource: dict) -> str:
    name = resource["Properties"]["ServiceName"]
    text = name["Fn::Sub"] if isinstance(name, dict) else name
    prefix = "com.amazonaws.${AWS::Region}."
    assert text.startswith(prefix), f"unexpected ServiceName {text!r}"
    return text[len(prefix):]


def test_the_prerequisites_endpoints_are_exactly_what_the_code_calls():
    template, prerequisites = decode(TEMPLATE), decode(PREREQUISITES)
    needs = needed_endpoints(template)
    endpoints = {
        endpoint_service(r): (name, r) for name, r in prerequisites["Resources"].items()
        if r["Type"] == "AWS::EC2::VPCEndpoint"
    }
    missing = {s: sorted(w) for s, w in needs.items() if s not in endpoints}
    unused = sorted(set(endpoints) - set(needs))
    assert not missing, f"called from the VPC but no endpoint in prerequisites.yaml: {missing}"
    assert not unused, f"endpoints in prerequisites.yaml that nothing in the VPC calls: {unused}"

    private_subnets = [{"Ref": "PrivateSubnet1"}, {"Ref": "PrivateSubnet2"}]
    for service, (name, r) in endpoints.items():
        p = r["Properties"]
        # Only what ECS Exec needs is optional (it is off by default in fargate-smb).
        want = "UseEcsExecEndpoint" if service == "ssmmessages" else "UseVpcEndpoints"
        assert r.get("Condition") == want, f"{name} must exist only with condition {want}"
        if service in GATEWAY:
            assert p["VpcEndpointType"] == "Gateway" and p["RouteTableIds"] == [{"Ref": "PrivateRouteTable"}], name
        else:
            assert p["VpcEndpointType"] == "Interface", name
            assert p["PrivateDnsEnabled"] is True, f"{name}: the SDKs use the default hostnames, so private DNS must be on"
            assert p["SubnetIds"] == private_subnets, name
            assert p["SecurityGroupIds"] == [{"Ref": "EndpointSecurityGroup"}], name


def test_endpoint_mode_has_no_nat_and_no_route_out():
    resources = decode(PREREQUISITES)["Resources"]
    for r in resources.values():
        if r["Type"] in ("AWS::EC2::NatGateway", "AWS::EC2::EIP"):
            assert r.get("Condition") == "UseNat"
        if r["Type"] == "AWS::EC2::Route" and r["Properties"]["RouteTableId"] == {"Ref": "PrivateRouteTable"}:
            assert r.get("Condition") == "UseNat", "the private route table gets a default route only with the NAT"
    ingress = resources["EndpointSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert [(i["IpProtocol"], i["FromPort"], i["ToPort"], i["CidrIp"]) for i in ingress] == [
        ("tcp", 443, 443, {"Ref": "VpcCidr"})
    ]

"""A small local CloudFormation for the demo: reads cloudformation/template.yaml (short-form tags
included), applies SAM's Globals to the functions, checks the parameters against the template
(AllowedPattern, AllowedValues, MinValue/MaxValue, Rules), evaluates Conditions and resolves the
intrinsic functions of the parts the demo drives: each Custom:: resource's Properties, each
function's Environment, the task definition's container Environment/Secrets, the rules and
schedules that invoke the functions.

What it does not do: deploy anything. References to other resources are answered by a table the
caller fills (`Stack.resources[logical_id] = Resolved(ref, attrs)`): the custom resources' answers
(PhysicalResourceId and Data) and the local stand-ins (moto's KMS key, bucket, table...). A
reference to a resource that has no entry yet raises `Unresolved`, naming it.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# ── the template, with CloudFormation's short-form tags ──────────────────────────────────────

SHORT_TAGS = ["Ref", "Condition", "GetAtt", "Sub", "Join", "If", "Select", "Split", "Equals", "Not", "And", "Or",
              "FindInMap", "ImportValue", "Base64", "GetAZs", "Cidr", "Length", "ToJsonString", "Transform",
              # Rules functions (only Contains is evaluated; the others are read, and refused if used).
              "Contains", "EachMemberEquals", "EachMemberIn", "RefAll", "ValueOf", "ValueOfAll"]


class TemplateLoader(yaml.SafeLoader):
    """YAML as CloudFormation reads it: `!Ref X` is {"Ref": X}, `!GetAtt A.B` is
    {"Fn::GetAtt": ["A", "B"]}, `!Condition C` is {"Condition": C}, `!Sub ...` is {"Fn::Sub": ...}."""


def _construct(loader: TemplateLoader, tag: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag == "Ref":
        return {"Ref": value}
    if tag == "Condition":
        return {"Condition": value}
    if tag == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag}": value}


for _tag in SHORT_TAGS:
    TemplateLoader.add_constructor(f"!{_tag}", lambda loader, node, _t=_tag: _construct(loader, _t, node))


def load_template(path: Path) -> dict:
    with open(path) as f:
        template = yaml.load(f, Loader=TemplateLoader)  # noqa: S506 - a SafeLoader subclass
    apply_sam_globals(template)
    return template


def apply_sam_globals(template: dict) -> None:
    """SAM's Globals.Function: properties a function does not set come from Globals; the
    Environment.Variables maps are merged (the function's win), as SAM does."""
    defaults = (template.get("Globals") or {}).get("Function") or {}
    for resource in (template.get("Resources") or {}).values():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.setdefault("Properties", {})
        for key, value in defaults.items():
            if key not in props:
                props[key] = value
            elif key == "Environment":
                merged = dict((value.get("Variables") or {}))
                merged.update((props[key].get("Variables") or {}))
                props[key] = {"Variables": merged}
            elif key == "Tags" and isinstance(value, dict) and isinstance(props[key], dict):
                props[key] = {**value, **props[key]}


# ── resolution ──────────────────────────────────────────────────────────────────────────────

class Unresolved(Exception):
    """A reference the local stack cannot answer (yet): names what and where."""


NO_VALUE = object()


@dataclass
class Resolved:
    """What `Ref` and `Fn::GetAtt` return for one resource."""

    ref: str
    attrs: dict = field(default_factory=dict)
    kind: str = ""  # "custom", "function", "stand-in"


def references(value, conditions: dict | None = None) -> set[str]:
    """Logical ids referenced by Ref / GetAtt / Sub in `value` (pseudo-parameters excluded).
    With `conditions` (the evaluated ones), only the taken branch of each Fn::If counts."""
    found: set[str] = set()

    def walk(v):
        if isinstance(v, dict):
            if len(v) == 1:
                (k, arg), = v.items()
                if k == "Ref" and isinstance(arg, str):
                    if not arg.startswith("AWS::"):
                        found.add(arg)
                    return
                if k == "Fn::GetAtt":
                    parts = arg if isinstance(arg, list) else str(arg).split(".", 1)
                    found.add(parts[0])
                    return
                if k == "Fn::Sub":
                    text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                    for name in re.findall(r"\$\{([^!}][^}]*)\}", text):
                        head = name.split(".", 1)[0]
                        if head not in variables and not name.startswith("AWS::"):
                            found.add(head)
                    walk(variables)
                    return
                if k == "Fn::If" and conditions is not None:
                    name, yes, no = arg
                    walk(yes if conditions.get(name) else no)
                    return
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)

    walk(value)
    return found


class Stack:
    """The template, its parameters and conditions, and what each logical id resolves to."""

    def __init__(self, template: dict, parameters: dict, stack_name: str, region: str = "us-east-1",
                 account: str = "123456789012", imports: dict | None = None):
        self.template = template
        self.stack_name = stack_name
        self.region = region
        self.account = account
        self.imports = imports or {}
        self.stack_id = f"arn:aws:cloudformation:{region}:{account}:stack/{stack_name}/4f1c2a7e-0000-4000-8000-000000000001"
        self.resources: dict[str, Resolved] = {}
        self.set_parameters(parameters)

    # ── parameters, rules, conditions ──
    def set_parameters(self, given: dict) -> None:
        declared = self.template.get("Parameters") or {}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise Unresolved(f"the parameters file names parameters the template does not declare: {', '.join(unknown)}")
        values: dict = {}
        problems = []
        for name, spec in declared.items():
            if name in given:
                raw = given[name]
            elif "Default" in spec:
                raw = spec["Default"]
            else:
                problems.append(f"{name}: required (no Default in the template): add it to the parameters file")
                continue
            typ = spec.get("Type", "String")
            if typ == "CommaDelimitedList" or typ.startswith("List<"):
                items = raw if isinstance(raw, list) else [s.strip() for s in str(raw).split(",")] if str(raw) else []
                values[name] = [str(i) for i in items]
                checked = values[name]
            else:
                values[name] = str(raw).lower() if isinstance(raw, bool) else str(raw)
                checked = [values[name]]
            for item in checked:
                if "AllowedValues" in spec and item not in [str(a) for a in spec["AllowedValues"]]:
                    problems.append(f"{name}: {item!r} is not one of {spec['AllowedValues']}")
                if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], item):
                    problems.append(f"{name}: {item!r} does not match AllowedPattern {spec['AllowedPattern']}")
                if typ == "Number":
                    try:
                        n = float(item)
                    except ValueError:
                        problems.append(f"{name}: {item!r} is not a number")
                        continue
                    if "MinValue" in spec and n < float(spec["MinValue"]) or "MaxValue" in spec and n > float(spec["MaxValue"]):
                        problems.append(f"{name}: {item} is outside {spec.get('MinValue')}..{spec.get('MaxValue')}")
        if problems:
            raise Unresolved("parameters rejected as CloudFormation would reject them:\n  " + "\n  ".join(problems))
        self.parameters = values
        self.conditions: dict[str, bool] = {}
        for name in (self.template.get("Conditions") or {}):
            self.condition(name)
        self.check_rules()

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            spec = (self.template.get("Conditions") or {}).get(name)
            if spec is None:
                raise Unresolved(f"Condition {name} is not declared in the template")
            self.conditions[name] = bool(self.resolve(spec, f"Conditions.{name}"))
        return self.conditions[name]

    def check_rules(self) -> None:
        failed = []
        for name, rule in (self.template.get("Rules") or {}).items():
            if "RuleCondition" in rule and not self.resolve(rule["RuleCondition"], f"Rules.{name}"):
                continue
            for assertion in rule.get("Assertions", []):
                if not self.resolve(assertion["Assert"], f"Rules.{name}"):
                    failed.append(f"{name}: {assertion.get('AssertDescription', 'assertion failed')}")
        if failed:
            raise Unresolved("the template's Rules reject the parameters:\n  " + "\n  ".join(failed))

    # ── resources ──
    def resource(self, logical_id: str) -> dict:
        r = (self.template.get("Resources") or {}).get(logical_id)
        if r is None:
            raise Unresolved(f"{logical_id} is not a resource of the template")
        return r

    def included(self, logical_id: str) -> bool:
        """Whether the resource exists under the parameters (its Condition)."""
        cond = self.resource(logical_id).get("Condition")
        return cond is None or self.condition(cond)

    def of_type(self, prefix: str) -> list[str]:
        return [lid for lid, r in (self.template.get("Resources") or {}).items()
                if str(r.get("Type", "")).startswith(prefix) and self.included(lid)]

    def depends_on(self, logical_id: str, part=None) -> set[str]:
        """What a resource needs before it: DependsOn and the references in `part` (default: its
        Properties), the untaken Fn::If branches excluded."""
        r = self.resource(logical_id)
        deps = r.get("DependsOn") or []
        deps = {deps} if isinstance(deps, str) else set(deps)
        body = r.get("Properties") or {} if part is None else part
        return (deps | references(body, self.conditions)) - set(self.parameters)

    # ── intrinsic functions ──
    def resolve(self, value, where: str = ""):
        """Resolve every intrinsic in `value`; AWS::NoValue drops the key or list item. Raises
        Unresolved naming `where` and the reference."""
        out = self._resolve(value, where)
        return None if out is NO_VALUE else out

    def _pseudo(self, name: str, where: str):
        pseudo = {
            "AWS::StackName": self.stack_name, "AWS::StackId": self.stack_id, "AWS::Region": self.region,
            "AWS::AccountId": self.account, "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [], "AWS::NoValue": NO_VALUE,
        }
        if name not in pseudo:
            raise Unresolved(f"{where}: unknown pseudo parameter {name}")
        return pseudo[name]

    def ref(self, name: str, where: str):
        if name.startswith("AWS::"):
            return self._pseudo(name, where)
        if name in self.parameters:
            return self.parameters[name]
        if name in self.resources:
            return self.resources[name].ref
        kind = self.resource(name).get("Type")
        raise Unresolved(f"{where}: Ref {name} ({kind}) has no local value: it is neither a parameter nor a resource "
                         f"the local stack made (add a stand-in for {kind} or avoid the reference)")

    def getatt(self, name: str, attr: str, where: str):
        if name not in self.resources:
            kind = self.resource(name).get("Type")
            raise Unresolved(f"{where}: Fn::GetAtt {name}.{attr} ({kind}): {name} has no local value yet "
                             f"(not created, or no stand-in for {kind})")
        attrs = self.resources[name].attrs
        if attr not in attrs:
            raise Unresolved(f"{where}: Fn::GetAtt {name}.{attr}: {name} has no attribute {attr} "
                             f"(it has: {', '.join(sorted(attrs)) or 'none'})")
        return attrs[attr]

    def _resolve(self, v, where: str):
        if isinstance(v, list):
            out = [self._resolve(i, where) for i in v]
            return [i for i in out if i is not NO_VALUE]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (k, arg), = v.items()
            if k == "Ref":
                return self.ref(arg, where)
            if k == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if k.startswith("Fn::"):
                return self._fn(k[4:], arg, where)
        out = {}
        for key, item in v.items():
            r = self._resolve(item, f"{where}.{key}" if where else key)
            if r is not NO_VALUE:
                out[key] = r
        return out

    def _fn(self, fn: str, arg, where: str):
        r = lambda x: self._resolve(x, where)  # noqa: E731
        if fn == "GetAtt":
            parts = arg if isinstance(arg, list) else str(arg).split(".", 1)
            return self.getatt(r(parts[0]), r(parts[1]), where)
        if fn == "Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], {k: r(x) for k, x in arg[1].items()})

            def one(m):
                name = m.group(1)
                if name.startswith("!"):
                    return "${" + name[1:] + "}"
                if name in variables:
                    value = variables[name]
                elif "." in name and not name.startswith("AWS::"):
                    value = self.getatt(*name.split(".", 1), where)
                else:
                    value = self.ref(name, where)
                if isinstance(value, list):
                    raise Unresolved(f"{where}: Fn::Sub ${{{name}}} is a list")
                return str(value)

            return re.sub(r"\$\{([^}]*)\}", one, text)
        if fn == "Join":
            sep, items = arg
            return r(sep).join(str(i) for i in r(items))
        if fn == "If":
            name, yes, no = arg
            return r(yes) if self.condition(name) else r(no)
        if fn == "Select":
            index, items = r(arg[0]), r(arg[1])
            return items[int(index)]
        if fn == "Split":
            sep, text = r(arg[0]), r(arg[1])
            return str(text).split(sep)
        if fn == "Equals":
            a, b = r(arg[0]), r(arg[1])
            norm = lambda x: x if isinstance(x, list) else as_cloudformation_sends(x)  # noqa: E731
            return norm(a) == norm(b)
        if fn == "Not":
            return not r(arg[0])
        if fn == "And":
            return all(r(a) for a in arg)
        if fn == "Or":
            return any(r(a) for a in arg)
        if fn == "Contains":  # Rules only: [list of strings, string]
            items, value = r(arg[0]), r(arg[1])
            return as_cloudformation_sends(value) in [as_cloudformation_sends(i) for i in items]
        if fn == "FindInMap":
            m, k1, k2 = (r(a) for a in arg)
            try:
                return self.template["Mappings"][m][k1][k2]
            except KeyError:
                raise Unresolved(f"{where}: Fn::FindInMap [{m}, {k1}, {k2}] is not in Mappings") from None
        if fn == "ImportValue":
            name = r(arg)
            if name not in self.imports:
                raise Unresolved(f"{where}: Fn::ImportValue {name}: no such export (add it under Imports in the parameters file)")
            return self.imports[name]
        if fn == "Base64":
            return base64.b64encode(str(r(arg)).encode()).decode()
        if fn == "GetAZs":
            return [f"{self.region}{z}" for z in "abc"]
        if fn == "Length":
            return len(r(arg))
        if fn == "ToJsonString":
            return json.dumps(r(arg), separators=(",", ":"))
        raise Unresolved(f"{where}: Fn::{fn} is not supported by the local stack")


def generated_name(stack_name: str, logical_id: str, suffix: str, limit: int) -> str:
    """The name CloudFormation gives a resource whose name property is not set:
    <stack>-<LogicalId>-<suffix>, the stack name and the logical id shortened (a part each, at most
    about half of what is left) until it fits the service's limit (Lambda: 64). Local stand-ins use
    it so that nothing here depends on a name CloudFormation would not give."""
    room = limit - len(suffix) - 2
    if room < 2:
        raise ValueError(f"a suffix of {len(suffix)} characters leaves no room in {limit}")
    if len(stack_name) + len(logical_id) > room:
        half = room // 2
        lid_part = logical_id[:max(half, room - len(stack_name))]
        stack_part = stack_name[:room - len(lid_part)]
    else:
        stack_part, lid_part = stack_name, logical_id
    return f"{stack_part}-{lid_part}-{suffix}"


def as_cloudformation_sends(value):
    """Custom resource properties as CloudFormation delivers them: every scalar a string."""
    if isinstance(value, dict):
        return {k: as_cloudformation_sends(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_cloudformation_sends(v) for v in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def topological(nodes: list[str], deps: dict[str, set[str]]) -> list[str]:
    """Order `nodes` so that each comes after what it depends on (ties in template order);
    dependencies outside `nodes` are ignored. A cycle is an error naming it."""
    order, state = [], {}

    def visit(n, path):
        if state.get(n) == "done":
            return
        if state.get(n) == "visiting":
            raise Unresolved("circular dependency: " + " -> ".join(path + [n]))
        state[n] = "visiting"
        for d in sorted(deps.get(n, set()) & set(nodes), key=nodes.index):
            visit(d, path + [n])
        state[n] = "done"
        order.append(n)

    for n in nodes:
        visit(n, [])
    return order


def pattern_matches(pattern, event) -> bool:
    """An EventBridge event pattern against an event: exact values, {"prefix": ...},
    {"exists": bool}, {"anything-but": ...} and nested objects (enough for S3 rules)."""
    if isinstance(pattern, dict):
        if not isinstance(event, dict):
            return False
        return all(pattern_matches(p, event.get(k, _MISSING)) for k, p in pattern.items())
    if isinstance(pattern, list):
        for p in pattern:
            if isinstance(p, dict):
                if "prefix" in p and isinstance(event, str) and event.startswith(p["prefix"]):
                    return True
                if "exists" in p and (event is not _MISSING) == bool(p["exists"]):
                    return True
                if "anything-but" in p:
                    but = p["anything-but"] if isinstance(p["anything-but"], list) else [p["anything-but"]]
                    if event is not _MISSING and event not in but:
                        return True
            elif event is not _MISSING and (event == p or (isinstance(event, list) and p in event)):
                return True
        return False
    return event == pattern


_MISSING = object()


def json_path(event: dict, path: str):
    """EventBridge's InputPath / InputPathsMap paths: `$`, `$.a.b`."""
    if path == "$":
        return event
    v = event
    for part in path.removeprefix("$.").split("."):
        if not isinstance(v, dict) or part not in v:
            return None
        v = v[part]
    return v


def target_input(target: dict, event: dict) -> str:
    """What an EventBridge target receives: Input, InputPath or InputTransformer, else the event."""
    if "Input" in target:
        return target["Input"]
    if "InputPath" in target:
        return json.dumps(json_path(event, target["InputPath"]))
    if "InputTransformer" in target:
        t = target["InputTransformer"]
        values = {k: json_path(event, p) for k, p in (t.get("InputPathsMap") or {}).items()}

        def fill(m):
            value = values.get(m.group(1))
            if value is None:
                return "null"
            return value if isinstance(value, str) else json.dumps(value)

        return re.sub(r"<([A-Za-z0-9_.-]+)>", fill, t["InputTemplate"])
    return json.dumps(event)


# ── the dependency graph and CloudFormation's waves ─────────────────────────────────────────

def dependency_graph(template: dict, conditions: dict[str, bool], filename: str = "template.yaml") -> dict[str, set[str]]:
    """What each resource depends on, from cfn-lint's own template graph (its Ref, GetAtt, Sub and
    DependsOn edges, the same code `cfn-lint` checks the template with). This module adds only
    what that graph does not know: the Conditions. A resource whose Condition is false is left
    out, and so is an edge found in the untaken branch of an Fn::If (CloudFormation evaluates the
    conditions before it orders the resources)."""
    import cfnlint.template  # noqa: PLC0415 - cfn-lint's import takes ~0.5 s; only the plan needs it

    graph = cfnlint.template.Template(filename, json.loads(json.dumps(template)), ["us-east-1"]).graph.graph
    resources = template.get("Resources") or {}

    def included(lid: str) -> bool:
        cond = resources[lid].get("Condition")
        return cond is None or conditions.get(cond, False)

    deps = {lid: set() for lid in resources if included(lid)}
    for source, target, data in graph.edges(data=True):
        if source not in deps or target not in deps or source == target:
            continue
        if _taken(resources[source], data.get("source_paths") or [], conditions):
            deps[source].add(target)
    return deps


def _taken(node, path: list, conditions: dict[str, bool]) -> bool:
    """Whether `path` (an edge's source path in a resource) runs only through taken Fn::If branches."""
    for i, key in enumerate(path):
        if key == "Fn::If" and isinstance(node, dict) and i + 1 < len(path):
            branch = path[i + 1]
            name = node["Fn::If"][0]
            if branch in (1, 2) and (branch == 1) != bool(conditions.get(name, False)):
                return False
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return True  # a path the dict cannot follow: keep the edge (cfn-lint saw it)
    return True


def creation_waves(deps: dict[str, set[str]], order: list[str]) -> list[list[str]]:
    """CloudFormation's create order: a resource starts when everything it depends on exists.
    Wave N holds what waits on nothing but waves < N (ties in template order). A cycle is an error."""
    return _waves(deps, order, "created")


def deletion_waves(deps: dict[str, set[str]], order: list[str]) -> list[list[str]]:
    """CloudFormation's delete order: a resource is deleted when nothing that depends on it is
    left. `deps` may cover a subset (what exists); dependencies outside it are ignored."""
    dependents: dict[str, set[str]] = {lid: set() for lid in deps}
    for lid, needs in deps.items():
        for d in needs:
            if d in dependents:
                dependents[d].add(lid)
    return _waves(dependents, order, "deleted")


def _waves(waits_on: dict[str, set[str]], order: list[str], verb: str) -> list[list[str]]:
    rank = {lid: i for i, lid in enumerate(order)}
    left = {lid: {d for d in needs if d in waits_on and d != lid} for lid, needs in waits_on.items()}
    waves, done = [], set()
    while left:
        ready = sorted((lid for lid, needs in left.items() if needs <= done), key=lambda x: rank.get(x, len(rank)))
        if not ready:
            raise Unresolved(f"circular dependency: these resources cannot be {verb}: {', '.join(sorted(left))}")
        waves.append(ready)
        done.update(ready)
        for lid in ready:
            del left[lid]
    return waves

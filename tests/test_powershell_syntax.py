"""Every PowerShell text the project generates, parsed by a real PowerShell grammar.

Two generators: the entrypoint (container/, the Windows .exe run under Wine), whose mapping
script `--plan --json` prints, and the template's ECS container health check
(`CMD-SHELL powershell -NoProfile -Command "..."`; it takes no template parameter today, and if
one is added, each value its AllowedPattern admits is substituted and checked the same way,
as ContentFolder once was). No PowerShell runs on this machine, so
tree-sitter's PowerShell grammar (PyPI `tree-sitter-powershell`) stands in for its parser:

- the tree must have no ERROR and no MISSING node (tree-sitter recovers from any input, so "it
  returned a tree" proves nothing; the negative controls below show the check does fail);
- each input must reach the script as one single-quoted literal whose value, read the way
  PowerShell reads it, is the input exactly, and the script around it must not change with the
  input (same tree, same text outside those literals): an injection such as
  `o'brien'; Remove-Item C:\\ -Recurse; '` is shown to stay data;
- `-EncodedCommand` must carry the script itself, byte for byte (base64 of UTF-16LE).

The grammar takes only the ASCII apostrophe as a single quote, but PowerShell's tokenizer also
ends a verbatim string on U+2018, U+2019, U+201A and U+201B (the language specification's
single-quote-character, §2.3.5.2; CharTraits.IsSingleQuote in PowerShell's source). So each
literal is also decoded here by PowerShell's rule: a quote character followed by another is one
character, any other quote character ends the literal, and it must end where the grammar's token
ends. Without that, a quoting that forgot the typographic quotes would pass the grammar.

Which inputs reach the script, and how (container/src/config.rs, actions.rs): the remote path
(SMB_SHARE, its compatibility name `fileshare`, or each SMB_MAPPINGS entry) and the drive letter
(SMB_DRIVE or the entry's) as literals; the user name and the password through the PowerShell's
environment only (FARGATE_SMB_USERNAME / FARGATE_SMB_PASSWORD), never in the text. The IIS site
and virtual directories go to appcmd, not PowerShell. Values the configuration refuses (a double
quote or a control character in a path or a user name, a drive letter outside D-Z) are asserted
refused, naming the variable.

The inputs: a fixed list of hostile values plus a seeded generated set (deterministic), batched
23 to a run of the entrypoint (one mapping per drive letter D-Z): about 25 runs of the .exe in
all, a few seconds.
"""

from __future__ import annotations

import base64
import json
import random
import re
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    import tree_sitter
    import tree_sitter_powershell
except ImportError:  # pragma: no cover - an environment problem, not a finding
    pytest.fail("tree-sitter is not importable: run scripts/install (scripts/requirements.txt)", pytrace=False)

from test_entrypoint import Build

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "cloudformation" / "template.yaml"

PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
# PowerShell's single-quote characters: the apostrophe and the four typographic ones.
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
VERBATIM = "verbatim_string_characters"
# Wine turns the Unix environment into Windows' UTF-16 through the Unix locale's charset: without
# a UTF-8 locale, non-ASCII values would reach the .exe mangled (on Windows, ECS hands the
# container UTF-16 directly).
UTF8 = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
DRIVES = [chr(c) for c in range(ord("D"), ord("Z") + 1)]


# ── the checker ──────────────────────────────────────────────────────────────────────────────

class NotPowerShell(AssertionError):
    """The text is not the PowerShell it should be."""


def walk(node):
    yield node
    for child in node.children:
        yield from walk(child)


def parse(source: str):
    """The tree of `source`; raises when the grammar needed an ERROR or a MISSING node."""
    tree = PARSER.parse(source.encode("utf-8"))
    bad = [n for n in walk(tree.root_node) if n.is_error or n.is_missing]
    if bad or tree.root_node.has_error:
        where = "; ".join(f"{'MISSING ' + n.type if n.is_missing else 'ERROR'} at line {n.start_point[0] + 1} "
                          f"column {n.start_point[1] + 1}: {n.text.decode('utf-8', 'replace')[:80]!r}" for n in bad[:3])
        raise NotPowerShell(f"not valid PowerShell: {where or 'the tree has an error'}")
    return tree


def single_quoted_value(token: str) -> str:
    """The value PowerShell gives the single-quoted literal `token` (quotes included).

    Raises when PowerShell would end the literal before the token's end: what follows would run
    as code."""
    if not token or token[0] not in SINGLE_QUOTES:
        raise NotPowerShell(f"not a single-quoted literal: {token[:40]!r}")
    value, i = [], 1
    while i < len(token):
        c = token[i]
        if c in SINGLE_QUOTES:
            if i + 1 < len(token) and token[i + 1] in SINGLE_QUOTES:
                value.append(token[i + 1])
                i += 2
                continue
            if i != len(token) - 1:
                raise NotPowerShell(f"PowerShell ends the literal {token[:40]!r}... at its character {i} "
                                    f"({c!r}, U+{ord(c):04X}): {token[i + 1:i + 41]!r} would run as code")
            return "".join(value)
        value.append(c)
        i += 1
    raise NotPowerShell(f"the literal {token[:40]!r}... never ends, as PowerShell reads it")


@dataclass
class Reading:
    """A parsed script with the literals that carry inputs replaced by placeholders."""
    skeleton: str            # the text, each carrying literal replaced by its placeholder
    shape: list[tuple]       # (depth, node type, leaf text or placeholder) in document order
    carried: dict[str, int]  # placeholder -> how many literals carry it


def read(source: str, inputs: dict[str, str]) -> Reading:
    """Parse `source`; each single-quoted literal whose value is one of `inputs` (placeholder ->
    value) is masked by its placeholder. Every literal is decoded by PowerShell's rules."""
    tree = parse(source)
    by_value = {value: name for name, value in inputs.items()}
    data = source.encode("utf-8")
    shape, pieces, carried, last = [], [], {name: 0 for name in inputs}, 0

    def visit(node, depth):
        nonlocal last
        if node.child_count:
            shape.append((depth, node.type, None))
            for child in node.children:
                visit(child, depth + 1)
            return
        text = node.text.decode("utf-8")
        if node.type == VERBATIM:
            name = by_value.get(single_quoted_value(text))
            if name is not None:
                carried[name] += 1
                pieces.append(data[last:node.start_byte].decode("utf-8"))
                pieces.append(f"<{name}>")
                last = node.end_byte
                text = f"<{name}>"
        shape.append((depth, node.type, text))

    visit(tree.root_node, 0)
    pieces.append(data[last:].decode("utf-8"))
    return Reading("".join(pieces), shape, carried)


def encoded_command(args: list[str]) -> str:
    assert args.count("-EncodedCommand") == 1, args
    i = args.index("-EncodedCommand")
    assert i == len(args) - 2, f"-EncodedCommand is not followed by exactly its value: {args}"
    return args[i + 1]


def assert_encoded_is_script(args: list[str], script: str):
    value = encoded_command(args)
    # Only base64's own alphabet: nothing on the command line for CreateProcess or
    # powershell.exe's argument parsing to split or unquote.
    assert re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", value), value[:80]
    raw = base64.b64decode(value, validate=True)
    assert raw == script.encode("utf-16-le"), "-EncodedCommand does not carry the script byte for byte"


# ── the inputs ───────────────────────────────────────────────────────────────────────────────

QUOTES = ["'", "\u2018", "\u2019", "\u201a", "\u201b"]
INJECTION = "o'brien'; Remove-Item C:\\ -Recurse; '"

# Remote paths as written in the task definition. None has a `;` (SMB_MAPPINGS separates
# entries with it: those are in SHARE_SEEDS, one per run of SMB_SHARE), a double quote or a
# control character (refused: REJECTED).
REMOTE_SEEDS = [
    r"\\fs.example.com\share\o'brien",
    "\\\\fs\\share\\" + INJECTION.replace(";", ","),
    "\\\\fs\\share\\o\u2019brien'\u2019 -Force \u2019",
    "\\\\fs\\share\\" + "".join(QUOTES),
    "\\\\fs\\share\\" + "".join(q * 2 for q in QUOTES),
    "\\\\fs\\share\\" + "\u2018left\u2019 \u201alow\u201b",
    r"\\o'brien\share",
    r"\\fs\'",
    r"\\fs\share\'''",
    "\\\\fs\\share\\\u201ctypographic double\u201d \u201equotes\u201c",
    r"\\fs\share\My Documents\two  spaces\ end space ",
    r"\\fs\share\$env:SMB_PASSWORD",
    r"\\fs\share\$(Remove-Item C:\ -Recurse)",
    r"\\fs\share\${env:x}@(1)@{a=1}$null$true",
    r"\\fs\share\`",
    r"\\fs\share\a`'b`$x``",
    r"\\fs\share\trailing backtick`",
    r"\\fs\share\# not a comment",
    r"\\fs\share\<# not a block #>",
    r"\\fs\share\<#",
    r"\\fs\share\--% stop parsing",
    "\\\\fs\\share\\\u2013Recurse \u2014Force \u2015x",
    r"\\fs\share\| & && || > 2>&1 * ? [a] { } ( ) , ! ~ ^ % + =",
    r"\\fs\share\a=b==c",
    "\\\\fs\\share\\\u00e9\u00df \u4e2d\u6587 \U0001f600 \u03a9 \u05e9\u05dc\u05d5\u05dd e\u0301",
    "\\\\fs\\share\\\U0001f469\u200d\U0001f4bb \uff46\uff55\uff4c\uff4c",
    "\\\\fs\\share\\nbsp\u00a0ideographic\u3000line\u2028para\u2029zwsp\u200bbom\ufeff",
    "\\\\fs\\share\\web\\\\\\",
    r"//fs/share/web/",
    r"\\fs\\share\\\a",
    "\\\\fs\\share\\" + "\\".join(["long'\u2019$`#"] * 400),
    r"\\a\b",
]
# Only through SMB_SHARE / fileshare: a `;` would split an SMB_MAPPINGS entry.
SHARE_SEEDS = [
    ("SMB_SHARE", "\\\\fs\\share\\" + INJECTION),
    ("fileshare", r"\\fs\share\a;b; Remove-Item C:\ -Recurse;'"),
]
DRIVE_SPELLINGS = ["{}:", "{}", " {}: ", "{l}:", "{l}"]
USERNAME_SEEDS = [
    r"EXAMPLE\o'brien",
    "EXAMPLE\\o\u2019brien $env:x `$(calc) ;#<#",
    "o'brien@ex'ample.test",
    "CORP\\\u540d\u524d \U0001f600",
    r"CORP\a\b",
    "svc@corp.example.com",
]
PASSWORD = "Pw'\u2019\"$env:x`$(calc);#<# \U0001f600"

# (variable, value, what the message says): each refused, and the message names the variable.
REJECTED = [
    ("SMB_MAPPINGS", 'D:=\\\\fs\\share\\say "hi"', "double quote"),
    ("SMB_SHARE", "\\\\fs\\share\\tab\there", "control character"),
    ("fileshare", "\\\\fs\\share\\c1\u0085control", "control character"),
    ("SMB_SHARE", INJECTION, "not a UNC path"),
    ("SMB_USERNAME", 'EXAMPLE\\say "hi"', "double quote"),
    ("SMB_USERNAME", "EXAMPLE\\del\x7fete", "control character"),
    ("SMB_USERNAME", "o'brien", "not a user name"),
    ("SMB_DRIVE", "C:", "not a drive letter"),
    ("SMB_DRIVE", "'", "not a drive letter"),
    ("SMB_MAPPINGS", "\u00e9:=\\\\fs\\share", "not a drive letter"),
]

# Characters a generated path segment is made of: quotes of every kind, PowerShell's special
# characters, whitespace that is not a control character, non-ASCII from several planes.
ALPHABET = (list("abcXYZ019 .-_") + QUOTES * 3 + list('$`#<>(){}[]@&|,!~^%+=*?:')
            + ["$env:", "$(", "<#", "#>", "`'", "''", "--%", "\u2013", "\u201c", "\u201d", "\u201e",
               "\u00e9", "\u00df", "\u4e2d", "\U0001f600", "\u00a0", "\u3000", "\u2028", "\ufeff", "e\u0301"])
GENERATED = 200
SEED = 16


def generated_remotes(rng: random.Random, n: int) -> list[str]:
    def segment():
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 10)))

    out = []
    for _ in range(n):
        parts = [segment() for _ in range(2 + rng.randint(0, 4))]
        seps = [rng.choice(["\\", "\\", "/", "\\\\"]) for _ in parts]
        text = rng.choice(["\\\\", "//"]) + "".join(p + s for p, s in zip(parts, seps))
        out.append(text if rng.random() < 0.3 else text.rstrip("\\/"))
    return out


def generated_username(rng: random.Random) -> str:
    chars = [c for c in ALPHABET if "\\" not in c and "@" not in c]
    word = lambda: "".join(rng.choice(chars) for _ in range(rng.randint(1, 8))).strip() or "x"  # noqa: E731
    return f"{word()}\\{word()}" if rng.random() < 0.5 else f"{word()}@{word()}"


def expected_remote(written: str) -> str:
    """The remote path the configuration makes of a UNC as written (config.rs `mapping`,
    smb-share's `Unc::parse`): trimmed, `/` turned into `\\`, empty segments dropped."""
    parts = [p for p in written.strip().replace("/", "\\")[2:].split("\\") if p]
    return "\\\\" + "\\".join(parts)


def accepted(value: str) -> bool:
    return '"' not in value and not any(unicodedata.category(c) == "Cc" for c in value)


@dataclass
class Case:
    var: str          # where the remote path is written
    written: str      # as written
    drive: str        # the drive letter's spelling (in SMB_MAPPINGS or SMB_DRIVE)
    letter: str
    username: str


def batches() -> list[tuple[dict, list[Case]]]:
    """(environment, cases) for each run of the entrypoint."""
    rng = random.Random(SEED)
    remotes = REMOTE_SEEDS + generated_remotes(rng, GENERATED)
    assert all(accepted(r) and ";" not in r for r in remotes)
    runs = []
    for k in range(0, len(remotes), len(DRIVES)):
        n = len(runs)
        username = USERNAME_SEEDS[n] if n < len(USERNAME_SEEDS) else generated_username(rng)
        cases = []
        for letter, written in zip(DRIVES, remotes[k:k + len(DRIVES)]):
            spelling = rng.choice(DRIVE_SPELLINGS).format(letter, l=letter.lower())
            cases.append(Case("SMB_MAPPINGS", written, spelling, letter, username))
        env = {"SMB_MAPPINGS": ";".join(f"{c.drive}={c.written}" for c in cases)}
        runs.append((env, cases))
    for var, written in SHARE_SEEDS:
        case = Case(var, written, "h", "H", USERNAME_SEEDS[0])
        runs.append(({var: written, "SMB_DRIVE": case.drive}, [case]))
    for env, cases in runs:
        env.update(SMB_USERNAME=cases[0].username, SMB_PASSWORD=PASSWORD)
    return runs


# ── the entrypoint's scripts ─────────────────────────────────────────────────────────────────

class Plan:
    """`--plan --json` of the Windows build, under test_entrypoint's Wine setup."""

    def __init__(self, tmp: Path):
        self.build = Build("windows", tmp)
        self.out, self.err = tmp / "stdout", tmp / "stderr"

    def run(self, env: dict) -> subprocess.CompletedProcess:
        # To files, not pipes: the wineserver that the first run starts inherits the output
        # handles and lingers a few seconds after it, and reading a pipe to its end would wait
        # for it each time.
        with self.out.open("w") as out, self.err.open("w") as err:
            code = subprocess.run([*self.build.argv, "--plan", "--json"], env={**self.build.base_env, **UTF8, **env},
                                  stdout=out, stderr=err, timeout=120).returncode
        return subprocess.CompletedProcess([], code, self.out.read_text(), self.err.read_text())


@pytest.fixture(scope="module")
def windows(tmp_path_factory) -> Plan:
    return Plan(tmp_path_factory.mktemp("powershell-syntax"))


@pytest.fixture(scope="module")
def planned(windows) -> list[tuple[Case, dict]]:
    """(case, its planned mapping) for every case, from `--plan --json` of the Windows build."""
    out = []
    for env, cases in batches():
        run = windows.run(env)
        assert run.returncode == 0, f"{sorted(env)}: {run.stderr}"
        assert_no_password(run)
        mappings = json.loads(run.stdout)["mappings"]
        assert len(mappings) == len(cases), run.stdout[:2000]
        out.extend(zip(cases, mappings))
    assert len(out) == len(REMOTE_SEEDS) + GENERATED + len(SHARE_SEEDS)
    return out


def assert_no_password(run: subprocess.CompletedProcess):
    # As written and as JSON escapes it (the password has a double quote). A bare `in` in the
    # assert would have pytest print the password on failure.
    leaked = any(form in text for form in (PASSWORD, json.dumps(PASSWORD)[1:-1]) for text in (run.stdout, run.stderr))
    assert not leaked, "the password is in the entrypoint's output"


def describe(case: Case) -> str:
    return f"{case.var} {case.written[:120]!r} (drive {case.drive!r}, user {case.username!r})"


def check_mapping_script(script: str, remote: str, local: str, reference: Reading | None) -> Reading:
    """Raises NotPowerShell unless `script` is PowerShell that sets $remote and $local from one
    literal each reading as `remote` and `local`, and, given a `reference` (another input's
    reading), is that script exactly but for those literals."""
    reading = read(script, {"remote": remote, "local": local})
    for name in ("remote", "local"):
        # The literal is what $remote / $local (which New-SmbGlobalMapping gets) are set to.
        if f"${name} = <{name}>" not in reading.skeleton:
            raise NotPowerShell(f"${name} is not set from one literal reading as the input: {reading.carried}")
    if reference is not None:
        # No input changes a token, a line or the tree outside its own literal.
        if reading.skeleton != reference.skeleton:
            raise NotPowerShell("the input changes the script around its literals")
        if reading.shape != reference.shape or reading.carried != reference.carried:
            raise NotPowerShell("the input changes the script's tree")
    return reading


def test_every_mapping_script_is_powershell_with_its_inputs_as_single_literals(planned):
    reference = None
    for case, mapping in planned:
        remote, local = expected_remote(case.written), f"{case.letter}:"
        assert (mapping["remote"], mapping["local"]) == (remote, local), describe(case)
        script = mapping["invocation"]["script"]
        try:
            # One script for every input and every user name, but for the literals.
            reading = check_mapping_script(script, remote, local, reference)
        except NotPowerShell as e:
            raise NotPowerShell(f"{describe(case)}: {e}\n{script[:3000]}") from None
        reference = reference or reading


def test_the_encoded_command_is_the_script_byte_for_byte(planned):
    for case, mapping in planned:
        invocation = mapping["invocation"]
        assert_encoded_is_script(invocation["args"], invocation["script"])


def test_the_user_name_and_password_reach_powershell_only_through_its_environment(planned):
    for case, mapping in planned:
        invocation = mapping["invocation"]
        assert invocation["env"] == [["FARGATE_SMB_USERNAME", {"kind": "plain", "value": case.username}],
                                     ["FARGATE_SMB_PASSWORD", {"kind": "password"}]], describe(case)
        assert case.username not in invocation["script"], describe(case)
        assert "$env:FARGATE_SMB_USERNAME" in invocation["script"]


@pytest.mark.parametrize("var, value, reason", REJECTED, ids=[f"{v}-{r}" for v, _, r in REJECTED])
def test_values_the_configuration_refuses_are_refused_naming_the_variable(windows, var, value, reason):
    env = {"SMB_SHARE": r"\\fs\share", "SMB_USERNAME": r"EXAMPLE\svc", "SMB_PASSWORD": PASSWORD}
    if var in ("SMB_MAPPINGS", "fileshare"):
        del env["SMB_SHARE"]
    env[var] = value
    run = windows.run(env)
    assert run.returncode == 2, run.stdout[:500] + run.stderr
    assert run.stdout == ""
    assert_no_password(run)
    message = run.stderr.strip()
    assert message.startswith(f"configuration error: {var}: "), message
    assert reason in message, message


# ── the template's container health check ────────────────────────────────────────────────────

def template() -> dict:
    import cfnlint.decode

    tpl, matches = cfnlint.decode.decode(str(TEMPLATE))
    assert not matches, f"cfn-lint cannot read the template: {matches}"
    return tpl


def health_checks(tpl: dict) -> list[tuple[str, str | dict]]:
    """(container name, the CMD-SHELL command) of each container health check in the template."""
    out = []
    for logical_id, resource in tpl["Resources"].items():
        if resource.get("Type") != "AWS::ECS::TaskDefinition":
            continue
        for container in resource["Properties"]["ContainerDefinitions"]:
            command = container.get("HealthCheck", {}).get("Command")
            if command:
                assert command[0] == "CMD-SHELL" and len(command) == 2, command
                out.append((f"{logical_id}/{container['Name']}", command[1]))
    return out


SUB_VARIABLE = re.compile(r"\$\{([^!}][^}]*)\}")
# Stand-ins for pseudo parameters and attributes a health check might name.
PSEUDO = {"AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012", "AWS::StackName": "fargate-smb",
          "AWS::URLSuffix": "amazonaws.com", "AWS::Partition": "aws"}
MARKER = "fargateSmbMarker"


def substitute(command, values: dict[str, str]) -> str:
    """The command as CloudFormation's Fn::Sub makes it, with `values` for the parameters."""
    if isinstance(command, str):
        return command
    assert list(command) == ["Fn::Sub"], command
    text = command["Fn::Sub"]
    assert isinstance(text, str), "a health check Sub with its own variable map: teach substitute() about it"
    out = SUB_VARIABLE.sub(lambda m: values.get(m.group(1), PSEUDO.get(m.group(1), m.group(0))), text)
    assert not SUB_VARIABLE.search(out), f"an unknown variable in the health check: {out}"
    return out.replace("${!", "${")


def command_text(shell_command: str) -> str:
    """The -Command text of `powershell [flags] -Command "..."`. CMD-SHELL runs through the
    container's default shell, cmd /S /C on Windows: the text must be one double-quoted argument
    with no `"` inside (it would end the argument) and no `%` (cmd expands %NAME% even inside
    quotes)."""
    m = re.fullmatch(r'powershell(?:\.exe)?((?: -[A-Za-z]+)*) -Command "([^"%]*)"', shell_command)
    assert m, f"not powershell ... -Command \"...\" with a plain argument: {shell_command}"
    return m.group(2)


def content_folders(pattern: str) -> list[str]:
    """Hostile values the ContentFolder parameter's AllowedPattern accepts, and a seeded set more."""
    seeds = ["web", ".", "..", "...", "-", "--", "-Recurse", "-EncodedCommand", "_", "0", "0x1", "a.b-c_d",
             "..\\..\\..\\Windows", "web\\..\\..", "-\\-\\-", "\\".join("abcdefghij"), "x" * 240]
    rng = random.Random(SEED)
    alphabet = "aZ09_.-"
    for _ in range(50):
        seeds.append("\\".join("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
                               for _ in range(rng.randint(1, 4))))
    for value in seeds:
        assert re.fullmatch(pattern, value), f"ContentFolder {value!r} no longer matches {pattern}: update the list"
    return seeds


# Values a parameter's AllowedPattern must refuse if the parameter reaches PowerShell unquoted
# or inside a literal that does not escape them.
NEEDS_QUOTING = ["", "'", "o'brien", "o\u2019brien", '"', "$env:x", "$(calc)", "`", "%PATH%", "a b", ";", "#",
                 "<#", "&", "|", "web\n", "\u00e9"]


def check_health_check(name: str, command, parameters: dict, values: list[str] | None = None) -> int:
    """Raises unless the health check's -Command text is PowerShell for every value its template
    parameters allow, each value staying where the template put it. Returns how many values
    were tried."""
    sub = command["Fn::Sub"] if isinstance(command, dict) else ""
    used = sorted({v for v in SUB_VARIABLE.findall(sub) if v in parameters})
    reference = read(command_text(substitute(command, {v: MARKER for v in used})), {})
    tried = 0
    for var in used:
        assert var == "ContentFolder", f"{name}: the health check uses {var}: give it hostile values here"
        pattern = parameters[var]["AllowedPattern"]
        for value in NEEDS_QUOTING + ["\\lead", "trail\\", "a\\\\b"]:
            assert not re.fullmatch(pattern, value), f"{var}'s AllowedPattern accepts {value!r}"
        for value in content_folders(pattern) if values is None else values:
            tried += 1
            text = command_text(substitute(command, {v: value if v == var else MARKER for v in used}))
            try:
                reading = read(text, {})
            except NotPowerShell as e:
                raise NotPowerShell(f"{name} with {var} {value!r}: {e}\n{text}") from None
            # The same tree, token for token, with the value wherever the marker was; and every
            # literal reads as the reference's with the value in place of the marker.
            where = f"{name} with {var} {value!r}: {text}"
            if len(reading.shape) != len(reference.shape):
                raise NotPowerShell(f"the value changes the tree: {where}")
            for (depth, kind, leaf), (rdepth, rkind, rleaf) in zip(reading.shape, reference.shape):
                if (depth, kind) != (rdepth, rkind):
                    raise NotPowerShell(f"the value changes the tree ({rkind} became {kind}): {where}")
                if rleaf is not None and leaf != rleaf.replace(MARKER, value):
                    raise NotPowerShell(f"the value changes the token {rleaf!r}: {where}")
                if kind == VERBATIM and single_quoted_value(leaf) != single_quoted_value(rleaf).replace(MARKER, value):
                    raise NotPowerShell(f"the literal {leaf!r} does not read as the value: {where}")
    return tried


def test_each_container_health_check_is_powershell_for_every_value_its_parameters_allow():
    tpl = template()
    checks = health_checks(tpl)
    assert checks, "the template has no container health check"
    for name, command in checks:
        check_health_check(name, command, tpl["Parameters"])


@pytest.mark.parametrize("command, values, caught", [
    # The shape the template had before the health probe file: the folder inside a literal.
    ("powershell -NoProfile -Command \"Test-Path -LiteralPath 'G:\\${ContentFolder}'\"", None, None),
    # The folder as a bare argument: `-Recurse` parses, as a parameter instead of the path.
    ("powershell -NoProfile -Command \"Test-Path ${ContentFolder}\"", ["web", "-Recurse"], "changes the tree"),
    ("powershell -NoProfile -Command \"Test-Path ${ContentFolder}\"", None, "not valid PowerShell|changes the"),
], ids=["in-a-literal", "bare-argument-parameter", "bare-argument-all"])
def test_the_health_check_checker_sees_a_value_leave_its_place(command, values, caught):
    tpl = template()

    def check():
        return check_health_check("a health check", {"Fn::Sub": command}, tpl["Parameters"], values)

    if caught:
        with pytest.raises(NotPowerShell, match=caught):
            check()
    else:
        assert check() > 50


# ── negative controls: the checker does fail ─────────────────────────────────────────────────

SCRIPT = "$remote = {}\nNew-SmbGlobalMapping -RemotePath $remote -LocalPath 'G:'\nWrite-Output 'created'\n"


@pytest.mark.parametrize("broken", [
    pytest.param(SCRIPT.format("'\\\\fs\\share"), id="unbalanced-quote"),
    pytest.param(SCRIPT.format("'\\\\fs\\share\\o'brien'"), id="unescaped-quote-in-literal"),
    pytest.param(SCRIPT.format("'\\\\fs\\share' `"), id="stray-backtick"),
    pytest.param(SCRIPT.format("'\\\\fs\\share'") + "if ($x) {\n", id="unclosed-brace"),
])
def test_the_grammar_check_fails_on_broken_powershell(broken):
    # tree-sitter returns a tree for anything: these must carry ERROR or MISSING nodes.
    tree = PARSER.parse(broken.encode("utf-8"))
    assert any(n.is_error or n.is_missing for n in walk(tree.root_node))
    with pytest.raises(NotPowerShell):
        parse(broken)


def broken_quote(value: str, doubled: str) -> str:
    """A single-quoted literal that doubles only the characters in `doubled`: the mutant."""
    return "'" + "".join(c * 2 if c in doubled else c for c in value) + "'"


@pytest.mark.parametrize("doubled", ["", "'"], ids=["no-doubling", "ascii-only-doubling"])
def test_the_checker_catches_a_quoting_that_misses_a_quote(planned, doubled):
    """The real scripts with the remote literal rebuilt by a broken quoting: no doubling at all,
    or only the ASCII apostrophe (the grammar alone would pass that one)."""
    caught = 0
    for case, mapping in planned:
        remote = expected_remote(case.written)
        if not any(q in remote for q in (SINGLE_QUOTES if doubled == "" else SINGLE_QUOTES[1:])):
            continue
        script = mapping["invocation"]["script"]
        good = "$remote = " + broken_quote(remote, SINGLE_QUOTES)
        assert good in script
        local = f"{case.letter}:"
        reference = check_mapping_script(script, remote, local, None)
        mutant = script.replace(good, "$remote = " + broken_quote(remote, doubled))
        with pytest.raises(NotPowerShell):
            check_mapping_script(mutant, remote, local, reference)
        caught += 1
    assert caught >= 5, caught


def test_the_checker_catches_an_injection_that_leaves_the_literal():
    # Quoted right, the injection is one literal; pasted in unquoted, it is three statements that
    # parse: only the value check tells them apart.
    value = "\\\\fs\\x'; Remove-Item C:\\ -Recurse; '"
    right = SCRIPT.format(broken_quote(value, SINGLE_QUOTES))
    assert read(right, {"remote": value}).carried == {"remote": 1}
    wrong = SCRIPT.format("'" + value + "'")
    parse(wrong)
    assert read(wrong, {"remote": value}).carried == {"remote": 0}

"""The ecosystem's local runner, as events/README.md tells a new user to try it: `cargo lambda
watch` serves the functions (it runs `cargo run --bin <function>`, so the workspace's debug build
in target/ is reused), and `cargo lambda invoke <function> --data-file events/...` sends the
sample events, one Create and one Delete per custom resource plus the rotation's dry run and a
content reconcile, against the local stack.

`cargo lambda watch` is not Lambda: it sends `Lambda-Runtime-Deadline-Ms` as its timeout (600000)
rather than as an epoch time, which once made every custom resource answer FAILED "the handler
did not finish within 0.0 s". Every answer here must be SUCCESS.

The same module is the README's helper, so the documented try-out is what this test runs:
    python tests/test_cargo_lambda.py prepare DIR [--response-port 9999]
        seeds what the sample events name (KMS alias, admin password parameter, bucket content,
        folders) and writes the events, pointed at the local stack, into DIR/<function>/
    python tests/test_cargo_lambda.py receive [--port 9999]
        stands in for CloudFormation's ResponseURL and prints each response document
The test passes a run id so that its names never collide with a hand try-out or a rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lambda_harness import ROOT, samba_env  # noqa: E402

EVENTS = ROOT / "events"
# What scripts/check-template installs (cargo-lambda 1.9.2, scripts/requirements-template.txt).
TEMPLATE_VENV_BIN = ROOT / ".venv-template" / "sam" / "bin"
# The checkout whose functions watch builds and runs: this one, unless told otherwise (to see
# the test fail against an older commit, say).
WORKSPACE = Path(os.environ.get("FARGATE_SMB_WATCH_WORKSPACE", ROOT))
SAMPLE_SID = "S-1-5-21-1111111111-2222222222-3333333333-1105"
SAMPLE_CA = "-----BEGIN CERTIFICATE-----\nREPLACE WITH THE PEM OF THE CA THAT ISSUED THE DC CERTIFICATE\n-----END CERTIFICATE-----\n"
DEADLINE_FAILURE = "did not finish within"

# The order a stack creates them in (each needs the one before); Deletes run in reverse.
CUSTOM_RESOURCES = ["ssm-parameters", "ad-service-account", "share-acl", "web-content"]
SITE = {"site/index.html": b"<h1>fargate-smb</h1>\n", "site/img/red flower.jpg": b"\xff\xd8\xff\xe0 not really a jpeg\n"}


# ── the try-out's pieces (also the README's helper) ──────────────────────────────────────────

class Names:
    """The names the sample events use, or unique ones for a run."""

    def __init__(self, run: str | None):
        self.run = run
        if run is None:
            self.prefix, self.admin_parameter = "/fargate-smb/web", "/fargate-smb/admin/password"
            self.account, self.group, self.folder = "svc-web", "web-share-access", "web"
            self.bucket, self.kms_alias = "fargate-smb-web-content", "alias/fargate-smb"
        else:
            self.prefix, self.admin_parameter = f"/fargate-smb-cl/{run}/web", f"/fargate-smb-cl/{run}/admin-password"
            # sAMAccountName is at most 20 characters, with -a/-b appended for the pair.
            self.account, self.group, self.folder = f"cl{run}", f"clg{run}", f"cl-{run}"
            self.bucket, self.kms_alias = f"fargate-smb-cl-{run}", f"alias/fargate-smb-cl-{run}"
        self.sync_folder = f"{self.folder}-sync"
        self.state_table = f"fargate-smb-sync-state-{run or 'web'}"

    def accounts(self) -> list[str]:
        return [f"{self.account}-a", f"{self.account}-b"]


def stack_env() -> dict[str, str]:
    env = samba_env()
    url_file = ROOT / ".local" / "stack" / "moto.url"
    if "AWS_ENDPOINT_URL" not in env and url_file.exists():
        env["AWS_ENDPOINT_URL"] = url_file.read_text().strip()
    return env


def aws_clients(env: dict):
    import boto3

    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    return {name: session.client(name, endpoint_url=env["AWS_ENDPOINT_URL"]) for name in ("kms", "ssm", "s3", "dynamodb")}


def smbclient(env: dict, command: str, check: bool = True) -> subprocess.CompletedProcess:
    """smbclient as the domain admin: the folders the events name must exist on the share."""
    password = Path(env["FARGATE_SMB_ADMIN_PASSWORD_FILE"]).read_text().strip()
    out = subprocess.run(["smbclient", "//127.0.0.1/share", "-U", "EXAMPLE\\Administrator", "-m", "SMB3",
                          "--client-protection=encrypt", "-c", command],
                         input="", capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PASSWD": password})
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def seed(names: Names, env: dict) -> None:
    """What a real deployment has before these resources are created: the KMS key, the domain
    admin's password in SSM, the content in S3, the share's folders, the sync state table."""
    aws = aws_clients(env)
    aliases = {a["AliasName"] for a in aws["kms"].list_aliases()["Aliases"]}
    if names.kms_alias not in aliases:
        key = aws["kms"].create_key(Description="fargate-smb local try-out")["KeyMetadata"]["KeyId"]
        aws["kms"].create_alias(AliasName=names.kms_alias, TargetKeyId=key)
    admin_password = Path(env["FARGATE_SMB_ADMIN_PASSWORD_FILE"]).read_text().strip()
    aws["ssm"].put_parameter(Name=names.admin_parameter, Value=admin_password, Type="SecureString", Overwrite=True)
    try:
        aws["s3"].create_bucket(Bucket=names.bucket)
    except aws["s3"].exceptions.BucketAlreadyOwnedByYou:
        pass
    for key, body in SITE.items():
        aws["s3"].put_object(Bucket=names.bucket, Key=key, Body=body)
    try:
        aws["dynamodb"].create_table(
            TableName=names.state_table, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "scope", "AttributeType": "S"},
                                  {"AttributeName": "objectKey", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "scope", "KeyType": "HASH"}, {"AttributeName": "objectKey", "KeyType": "RANGE"}])
    except aws["dynamodb"].exceptions.ResourceInUseException:
        pass
    for folder in (names.folder, names.sync_folder):
        if smbclient(env, f'ls "{folder}"', check=False).returncode != 0:
            smbclient(env, f'mkdir "{folder}"')


def function_env(names: Names, env: dict) -> dict[str, str]:
    """What the template sets on the two functions that are configured by environment; the
    custom resources need none (ALLOWED_PARAMETER_PATH defaults to /)."""
    return {
        # rotate-password
        "PARAMETER_PREFIX": names.prefix,
        "ACCOUNTS": ",".join(names.accounts()),
        "LDAPS_URL": "ldaps://127.0.0.1",
        "LDAPS_CA_BUNDLE": Path(env["FARGATE_SMB_CA"]).read_text(),
        "AD_DOMAIN": "example.test",
        # both: LDAPS binds and SMB logons accept the down-level name
        "ADMIN_USERNAME": "EXAMPLE\\Administrator",
        "ADMIN_PASSWORD_PARAMETER": names.admin_parameter,
        # sync-content
        "BUCKET": names.bucket,
        "PREFIX": "site",
        "SHARE_UNC": "\\\\127.0.0.1\\share",
        "FOLDER": names.sync_folder,
        "STATE_TABLE": names.state_table,
    }


def localize(function: str, text: str, names: Names, env: dict, response_base: str) -> dict:
    """One sample event with the local stack's specifics filled in: the ResponseURL, the local
    CA and a principal of the local domain; and, for a run, its unique names."""
    sid = Path(env["FARGATE_SMB_DOMAIN_SID_FILE"]).read_text().strip() + "-513"  # Domain Users
    ca = Path(env["FARGATE_SMB_CA"]).read_text()
    text = text.replace(SAMPLE_SID, sid)
    if names.run is not None:
        for old, new in (("/fargate-smb/admin/password", names.admin_parameter), ("/fargate-smb/web", names.prefix),
                         ("svc-web", names.account), ("web-share-access", names.group),
                         ("fargate-smb-web-content", names.bucket), ("alias/fargate-smb", names.kms_alias),
                         ("\\\\\\\\127.0.0.1\\\\share\\\\web", f"\\\\\\\\127.0.0.1\\\\share\\\\{names.folder}")):
            text = text.replace(old, new)
    event = json.loads(text)
    if "RequestType" in event:
        for key in ("ResourceProperties", "OldResourceProperties"):
            props = event.get(key, {})
            if props.get("CaBundle") == SAMPLE_CA:
                props["CaBundle"] = ca
            if "Folder" in props:
                props["Folder"] = names.folder
        # A request id of its own per run: CloudFormation never sends one id twice for
        # different requests, and a runtime may recognise a repeated one.
        if names.run is not None:
            event["RequestId"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{names.run}/{event['RequestId']}"))
        event["ResponseURL"] = f"{response_base}/cloudformation-custom-resource-response-useast1/{event['RequestId']}?X-Amz-Signature=local"
    return event


def prepare(out: Path, response_base: str, run: str | None = None) -> Names:
    names = Names(run)
    env = stack_env()
    seed(names, env)
    for folder in sorted(p for p in EVENTS.iterdir() if p.is_dir()):
        (out / folder.name).mkdir(parents=True, exist_ok=True)
        for sample in sorted(folder.glob("*.json")):
            event = localize(folder.name, sample.read_text(), names, env, response_base)
            (out / folder.name / sample.name).write_text(json.dumps(event, indent=2) + "\n")
    # Shell syntax (the CA bundle spans lines): `set -a; . DIR/function.env; set +a` before watch.
    (out / "function.env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in function_env(names, env).items()))
    return names


class Receiver:
    """CloudFormation's ResponseURL: takes the PUT of each response document, keyed by the
    request id in the path."""

    def __init__(self, port: int = 0, echo: bool = False):
        self.bodies: dict[str, queue.Queue] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_PUT(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                request_id = self.path.split("?")[0].rsplit("/", 1)[-1]
                if echo:
                    print(body.decode(errors="replace"), flush=True)
                receiver._queue(request_id).put(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _queue(self, request_id: str) -> queue.Queue:
        with self._lock:
            return self.bodies.setdefault(request_id, queue.Queue())

    def wait(self, request_id: str, timeout: float) -> dict:
        try:
            return json.loads(self._queue(request_id).get(timeout=timeout))
        except queue.Empty:
            raise AssertionError(f"no response document for {request_id} within {timeout} s") from None

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ── the test ──────────────────────────────────────────────────────────────────────────────

def cargo_lambda_path() -> Path:
    for candidate in (os.environ.get("FARGATE_SMB_CARGO_LAMBDA"), TEMPLATE_VENV_BIN / "cargo-lambda",
                      shutil.which("cargo-lambda")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise AssertionError("cargo-lambda is not installed: scripts/check-template installs it into "
                         ".venv-template/sam (or set FARGATE_SMB_CARGO_LAMBDA)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Watch:
    """`cargo lambda watch`, started in a session of its own (a signal meant for the test
    never reaches it) and ended with everything it started."""

    def __init__(self, cargo_lambda: Path, env: dict, extra: dict, tmp: Path):
        self.port = free_port()
        self.path = {**env, "PATH": f"{cargo_lambda.parent}{os.pathsep}{os.environ['PATH']}"}
        self.log = tmp / "watch.log"
        # The functions inherit watch's environment, as they do in the README's shell (its
        # --env-var splits values on commas, and ACCOUNTS and the CA bundle have them).
        self.path.update(extra)
        args = ["cargo", "lambda", "watch", "--invoke-address", "127.0.0.1", "--invoke-port", str(self.port),
                "--ignore-changes"]
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(args, cwd=WORKSPACE, env=self.path, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, f"cargo lambda watch exited:\n{self.output()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"cargo lambda watch did not listen:\n{self.output()}"
                time.sleep(0.2)

    def invoke(self, function: str, data_file: Path, timeout: float = 900) -> subprocess.CompletedProcess:
        # The first invoke of a function waits for `cargo run` to (re)build it.
        out = subprocess.run(["cargo", "lambda", "invoke", function, "--invoke-address", "127.0.0.1",
                              "--invoke-port", str(self.port), "--data-file", str(data_file)],
                             cwd=WORKSPACE, env=self.path, capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, f"{function} {data_file.name}: {out.stdout}{out.stderr}\n{self.output()[-4000:]}"
        return out

    def output(self) -> str:
        self._log.flush()
        return self.log.read_text(errors="replace")

    def descendants(self) -> list[int]:
        """The processes watch started, by walking /proc's parent links down from it. The
        functions run in sessions of their own (watchexec's), so its group alone misses them."""
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                parents[int(stat.parent.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
        found, frontier = [], [self.proc.pid]
        while frontier:
            children = [pid for pid, ppid in parents.items() if ppid in frontier]
            found += children
            frontier = children
        return found

    def stop(self):
        # Only what this test started: watch by its id (it ends its functions on SIGTERM), then
        # any of its descendants, by id, that outlived it.
        children = self.descendants()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()


def test_the_sample_events_work_under_cargo_lambda_watch(tmp_path):
    cargo_lambda = cargo_lambda_path()
    version = subprocess.run([str(cargo_lambda), "lambda", "--version"], capture_output=True, text=True).stdout
    receiver = Receiver()
    run = uuid.uuid4().hex[:6]
    events = tmp_path / "events"
    names = prepare(events, receiver.base, run)
    env = stack_env()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base_env.update({"AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"], "AWS_REGION": "us-east-1",
                     "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_EC2_METADATA_DISABLED": "true"})
    watch = Watch(cargo_lambda, base_env, function_env(names, env), tmp_path)
    answers: dict[str, dict] = {}
    try:
        def custom_resource(function: str, name: str) -> dict:
            data = events / function / f"{name}.json"
            request_id = json.loads(data.read_text())["RequestId"]
            watch.invoke(function, data)
            answer = receiver.wait(request_id, timeout=60)
            answers[f"{function}/{name}"] = answer
            assert DEADLINE_FAILURE not in answer.get("Reason", ""), (function, name, answer)
            assert answer["Status"] == "SUCCESS", f"{function} {name}: {answer.get('Reason')}\n{watch.output()[-3000:]}"
            return answer

        for function in CUSTOM_RESOURCES:
            custom_resource(function, "create")
        assert answers["ad-service-account/create"]["PhysicalResourceId"] == f"example.test/{'+'.join(names.accounts())}"

        # The two functions that are not custom resources answer through the invoke itself.
        dry_run = json.loads(watch.invoke("rotate-password", events / "rotate-password" / "dry-run.json").stdout)
        assert DEADLINE_FAILURE not in json.dumps(dry_run), dry_run
        reconcile = json.loads(watch.invoke("sync-content", events / "sync-content" / "reconcile.json").stdout)
        assert DEADLINE_FAILURE not in json.dumps(reconcile), reconcile

        for function in reversed(CUSTOM_RESOURCES):
            custom_resource(function, "delete")
        logs = watch.output()
    finally:
        watch.stop()
        receiver.close()
        smbclient(env, f'deltree "{names.folder}"; deltree "{names.sync_folder}"', check=False)
    # The runtime saw the duration form of the deadline and said so, instead of failing.
    assert "not an epoch time" in logs, logs[-4000:]
    assert set(answers) == {f"{f}/{n}" for f in CUSTOM_RESOURCES for n in ("create", "delete")}, (version, answers)


# ── the README's helper ───────────────────────────────────────────────────────────────────

def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="seed the local stack and write the events, localized, into DIR")
    p.add_argument("dir", type=Path)
    p.add_argument("--response-port", type=int, default=9999)
    r = commands.add_parser("receive", help="serve the ResponseURL and print each response document")
    r.add_argument("--port", type=int, default=9999)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.dir, f"http://127.0.0.1:{args.response_port}")
        print(f"events written to {args.dir}/<function>/; the two env-configured functions' variables: {args.dir}/function.env")
        return 0
    receiver = Receiver(args.port, echo=True)
    print(f"receiving CloudFormation responses on {receiver.base} (Ctrl+C to stop)", file=sys.stderr)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        receiver.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

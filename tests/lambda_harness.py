"""Drive real Lambda bootstrap binaries the way Lambda and CloudFormation do.

- ``RuntimeApi`` serves the Lambda Runtime API (``/2018-06-01/runtime/...``) on 127.0.0.1:
  it hands out queued events and records what the function posts back.
- ``ResponseUrl`` stands in for CloudFormation's pre-signed S3 URL: it receives the PUT of the
  response document and can be told to fail the first attempts.
- ``Bootstrap`` runs a binary against both with a clean, explicit environment and captures its
  stdout/stderr, so tests can look for leaked secrets.
- ``CloudFormation`` ties them together: ``cfn.create(props)`` etc. send one request and return
  the parsed response document.

Used by the tests, the local demo and the init benchmark.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
PROFILE = os.environ.get("FARGATE_SMB_PROFILE", "debug")

STACK_ID = "arn:aws:cloudformation:us-east-1:123456789012:stack/fargate-smb-local/4f1c2a7e-0000-4000-8000-000000000001"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:{name}"


def samba_env() -> dict[str, str]:
    """The DC's coordinates, as `scripts/stack env` prints them (starting the DC if needed)."""
    stack = str(ROOT / "scripts" / "stack")
    if not (ROOT / ".local" / "stack" / "samba.pid").exists():
        subprocess.run([stack, "start", "samba"], check=True)
    out = subprocess.run([stack, "env"], check=True, capture_output=True, text=True).stdout
    pairs = (line.removeprefix("export ").split("=", 1) for line in out.splitlines() if line.startswith("export "))
    return {k: v for k, v in pairs}


def domain_user(enabled: bool = True) -> tuple[str, str]:
    """A fresh account in OU=fargate-smb with a known password, enabled or disabled; returns
    (name, password). The password is set over LDAPS from stdin (an LDIF), never on a command line."""
    import base64

    env = samba_env()
    name, password = f"u{uuid.uuid4().hex[:9]}", f"Pw-{uuid.uuid4().hex}-X"
    out = subprocess.run(["samba-tool", "user", "create", name, "--random-password", "--userou=OU=fargate-smb",
                          "-s", env["FARGATE_SMB_SMB_CONF"]], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pwd = base64.b64encode(f'"{password}"'.encode("utf-16-le")).decode()
    ldif = f"dn: CN={name},OU=fargate-smb,DC=example,DC=test\nchangetype: modify\nreplace: unicodePwd\nunicodePwd:: {pwd}\n-\n"
    if not enabled:
        ldif += "replace: userAccountControl\nuserAccountControl: 514\n-\n"
    out = subprocess.run(["ldapmodify", "-H", "ldaps://127.0.0.1", "-D", "Administrator@example.test",
                          "-y", env["FARGATE_SMB_ADMIN_PASSWORD_FILE"]],
                         input=ldif, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "LDAPTLS_CACERT": env["FARGATE_SMB_CA"]})
    assert out.returncode == 0, out.stderr
    return name, password


def binary(name: str, example: bool = False, profile: str | None = None) -> Path:
    profile = profile or PROFILE
    path = TARGET / profile / ("examples" if example else "") / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: build it first (scripts/test does)")
    return path


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # A bootstrap stopped while it waits on /next resets its connection: expected, not news.
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class RuntimeApi:
    """A Lambda Runtime API endpoint."""

    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()
        self.results: dict[str, queue.Queue] = {}
        self.init_errors: list[dict] = []
        self.next_calls: list[float] = []
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _peer_closed(self) -> bool:
                import select
                import socket as _socket

                readable, _, _ = select.select([self.connection], [], [], 0)
                if not readable:
                    return False
                try:
                    return self.connection.recv(1, _socket.MSG_PEEK) == b""
                except OSError:
                    return True

            def do_GET(self):
                if not self.path.endswith("/runtime/invocation/next"):
                    return self._reply(404)
                with api._lock:
                    api.next_calls.append(time.monotonic())
                # Wait for an event, but give up if the function went away meanwhile: a stale
                # waiter must not take the event meant for the next process.
                while True:
                    try:
                        item = api.events.get(timeout=0.1)
                        break
                    except queue.Empty:
                        if self._peer_closed():
                            self.close_connection = True
                            return
                if self._peer_closed():
                    api.events.put(item)  # not ours to take: hand it to the live process
                    self.close_connection = True
                    return
                request_id, payload, deadline_ms = item
                body = json.dumps(payload).encode()
                self._reply(
                    200,
                    body,
                    {
                        "Content-Type": "application/json",
                        "Lambda-Runtime-Aws-Request-Id": request_id,
                        "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
                        "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN.format(name="test"),
                        "Lambda-Runtime-Trace-Id": f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]};Sampled=0",
                    },
                )

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = self.path.split("/")
                if self.path.endswith("/runtime/init/error"):
                    api.init_errors.append(json.loads(body or b"{}"))
                elif len(parts) >= 6 and parts[-3] == "invocation" and parts[-1] in ("response", "error"):
                    api._result(parts[-2]).put((parts[-1], json.loads(body) if body else None))
                else:
                    return self._reply(404)
                self._reply(202, b'{"status":"OK"}', {"Content-Type": "application/json"})

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _result(self, request_id: str) -> queue.Queue:
        with self._lock:
            return self.results.setdefault(request_id, queue.Queue())

    def invoke(self, payload, timeout: float = 60.0, deadline_s: float = 300.0) -> tuple[str, object]:
        """Queue one invocation; return ("response" | "error", body) as the function posted it."""
        request_id = str(uuid.uuid4())
        deadline_ms = int((time.time() + deadline_s) * 1000)
        self.events.put((request_id, payload, deadline_ms))
        try:
            return self._result(request_id).get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"the function posted no result for {request_id} within {timeout} s") from None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ResponseUrl:
    """CloudFormation's pre-signed ResponseURL: records PUT bodies per request id."""

    def __init__(self) -> None:
        self.bodies: dict[str, queue.Queue] = {}
        self.attempts: dict[str, int] = {}
        self.raw: list[bytes] = []
        self.headers: list[dict] = []
        self.fail_first: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_PUT(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                request_id = self.path.rsplit("/", 1)[-1].split("?")[0]
                with endpoint._lock:
                    endpoint.attempts[request_id] = endpoint.attempts.get(request_id, 0) + 1
                    planned = endpoint.fail_first.get(request_id, [])
                    status = planned.pop(0) if planned else 200
                    endpoint.raw.append(body)
                    endpoint.headers.append(dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if status == 200:
                    endpoint._queue(request_id).put(body)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _queue(self, request_id: str) -> queue.Queue:
        with self._lock:
            return self.bodies.setdefault(request_id, queue.Queue())

    def url(self, request_id: str) -> str:
        # Shaped like the real thing: a path per request and a signature in the query.
        return f"{self.base}/cloudformation-custom-resource-response-useast1/{request_id}?X-Amz-Signature=0f0f"

    def wait(self, request_id: str, timeout: float = 60.0) -> bytes:
        try:
            return self._queue(request_id).get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"CloudFormation got no response for {request_id} within {timeout} s") from None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Bootstrap:
    """A Lambda bootstrap process with a clean environment and captured output."""

    def __init__(self, path: Path, runtime: RuntimeApi, env: dict[str, str] | None = None, name: str | None = None):
        name = name or path.name
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AWS_LAMBDA_RUNTIME_API": runtime.address,
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"2026/11/25/[$LATEST]{uuid.uuid4().hex}",
            "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        self.env.update(env or {})
        self.stdout_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"fargate-smb-{name}-{uuid.uuid4().hex[:8]}.out"
        self.stderr_path = self.stdout_path.with_suffix(".err")
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.started = time.monotonic()
        self.process = subprocess.Popen([str(path)], env=self.env, stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        self._out.flush()
        self._err.flush()
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    def stdout_lines(self) -> list[str]:
        return [line for line in self.stdout_path.read_text(errors="replace").splitlines() if line.strip()]

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()
        self._err.close()


class CloudFormation:
    """Sends custom resource requests to a bootstrap as CloudFormation would."""

    def __init__(self, runtime: RuntimeApi, responses: ResponseUrl, resource_type: str, logical_id: str = "Resource"):
        self.runtime = runtime
        self.responses = responses
        self.resource_type = resource_type
        self.logical_id = logical_id
        self.sent: list[dict] = []

    def event(self, request_type: str, props: dict, physical_id: str | None = None, old_props: dict | None = None) -> dict:
        request_id = str(uuid.uuid4())
        event = {
            "RequestType": request_type,
            "ServiceToken": FUNCTION_ARN.format(name="test"),
            "ResponseURL": self.responses.url(request_id),
            "StackId": STACK_ID,
            "RequestId": request_id,
            "LogicalResourceId": self.logical_id,
            "ResourceType": self.resource_type,
            "ResourceProperties": {"ServiceToken": FUNCTION_ARN.format(name="test"), **props},
        }
        if physical_id is not None:
            event["PhysicalResourceId"] = physical_id
        if old_props is not None:
            event["OldResourceProperties"] = {"ServiceToken": FUNCTION_ARN.format(name="test"), **old_props}
        return event

    def send(self, event: dict, deadline_s: float = 300.0, timeout: float = 60.0) -> dict:
        """Invoke with ``event``; return the response document CloudFormation received."""
        self.sent.append(event)
        self.runtime.events.put((event["RequestId"] + "-inv", event, int((time.time() + deadline_s) * 1000)))
        body = self.responses.wait(event["RequestId"], timeout=timeout)
        document = json.loads(body)
        document["_bytes"] = len(body)
        # The function also reports the invocation to the Runtime API when it is done.
        kind, _ = self.runtime._result(event["RequestId"] + "-inv").get(timeout=timeout)
        document["_invocation"] = kind
        return document

    def create(self, props: dict, **kw) -> dict:
        return self.send(self.event("Create", props), **kw)

    def update(self, physical_id: str, props: dict, old_props: dict, **kw) -> dict:
        return self.send(self.event("Update", props, physical_id, old_props), **kw)

    def delete(self, physical_id: str, props: dict, **kw) -> dict:
        return self.send(self.event("Delete", props, physical_id), **kw)

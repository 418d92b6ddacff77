"""AWS SDK timeouts end to end: a real bootstrap pointed (AWS_ENDPOINT_URL) at an endpoint that
accepts the connection and then never answers, or answers half a response and stalls, must fail
the invocation with the SDK's timeout error, well before the harness gives up on it.

The timeouts come from AWS_ATTEMPT_TIMEOUT_SECONDS / AWS_OPERATION_TIMEOUT_SECONDS
(crates/aws-env); they are set small here and the harness waits far longer, so a pass means
"cut off by the configured timeout", not "fast machine". No moto, no Samba: the first AWS call
of both functions (SSM) goes to the silent endpoint.
"""

import socket
import threading
import time

import pytest

from lambda_harness import Bootstrap, CloudFormation, binary

ATTEMPT_S = 0.5
OPERATION_S = 1.5
HARNESS_S = 60.0  # what the harness waits; the configured operation timeout is 40 times shorter


class SilentEndpoint:
    """A TCP listener on 127.0.0.1 that accepts every connection and then does nothing
    ("silent"), or reads the request and sends the status line, headers and part of the body of a
    JSON answer, then stalls ("stall")."""

    def __init__(self, mode: str):
        self.mode = mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self.requests: list[bytes] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections.append(conn)
            if self.mode == "stall":
                threading.Thread(target=self._stall, args=(conn,), daemon=True).start()

    def _stall(self, conn: socket.socket) -> None:
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                body += chunk
            with self._lock:
                self.requests.append(head)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\n"
                         b"Content-Length: 4096\r\n\r\n{\"Parameter\": {\"Name\": ")
            self._closed.wait()  # and never the rest
        except OSError:
            pass

    def accepted(self) -> int:
        with self._lock:
            return len(self.connections)

    def close(self) -> None:
        self._closed.set()
        self.listener.close()
        with self._lock:
            for conn in self.connections:
                conn.close()


@pytest.fixture(params=["silent", "stall"])
def endpoint(request):
    e = SilentEndpoint(request.param)
    yield e
    e.close()


@pytest.fixture
def start(runtime):
    """Start a bootstrap against `runtime` with the given environment; stopped at the end."""
    started: list[Bootstrap] = []

    def run(name: str, env: dict) -> Bootstrap:
        b = Bootstrap(binary(name), runtime, env)
        started.append(b)
        return b

    yield run
    for b in started:
        b.stop()


def timeouts(endpoint: SilentEndpoint) -> dict:
    return {
        "AWS_ENDPOINT_URL": endpoint.url,
        "AWS_ATTEMPT_TIMEOUT_SECONDS": str(ATTEMPT_S),
        "AWS_OPERATION_TIMEOUT_SECONDS": str(OPERATION_S),
    }


def rotation_env(**extra) -> dict:
    """Enough for rotate-password to start; its first AWS call reads <prefix>/username from SSM."""
    return {
        "PARAMETER_PREFIX": "/fargate-smb-test/timeouts",
        "ACCOUNTS": "svc-a,svc-b",
        "LDAPS_URL": "ldaps://127.0.0.1:1",
        "AD_DOMAIN": "example.test",
        "ADMIN_USERNAME": "Administrator@example.test",
        "ADMIN_PASSWORD_PARAMETER": "/fargate-smb-test/timeouts-admin",
        "ECS_CLUSTER": "c",
        "ECS_SERVICES": "site",
        "TIMEOUT_SECONDS": "5",
        **extra,
    }


def assert_sdk_timeout(message: str) -> None:
    # DisplayErrorContext of the SDK's SdkError::TimeoutError:
    # "request has timed out: operation timeout (all attempts including retries) occurred after 1.5s"
    assert "timed out" in message, message
    assert "timeout" in message.replace("timed out", ""), message


def test_rotation_call_to_a_hanging_endpoint_fails_with_a_timeout(endpoint, start, runtime):
    bootstrap = start("rotate-password", {**rotation_env(), **timeouts(endpoint)})
    began = time.monotonic()
    kind, body = runtime.invoke({}, timeout=HARNESS_S, deadline_s=300)
    took = time.monotonic() - began
    assert kind == "error", body
    assert_sdk_timeout(body["errorMessage"])
    # Its first call: the run's lock (ssm:GetParameter on <prefix>/rotation-lock).
    assert "ssm:GetParameter on /fargate-smb-test/timeouts/rotation-lock" in body["errorMessage"], body
    assert took < HARNESS_S / 2, took  # cut off by the SDK, not by the harness
    assert endpoint.accepted() >= 1, "the function never reached the endpoint"
    if endpoint.mode == "stall":
        assert endpoint.requests and endpoint.requests[0].startswith(b"POST / HTTP/1.1"), endpoint.requests
    assert bootstrap.alive(), bootstrap.output()


def test_custom_resource_call_to_a_hanging_endpoint_answers_failed_with_a_timeout(endpoint, start, runtime, responses):
    start("ssm-parameters", {"ALLOWED_PARAMETER_PATH": "/fargate-smb-test", **timeouts(endpoint)})
    cfn = CloudFormation(runtime, responses, "Custom::SsmParameters", "ServiceAccountParameters")
    began = time.monotonic()
    answer = cfn.create({"ParameterPrefix": "/fargate-smb-test/timeouts", "Username": "EXAMPLE\\svc-web",
                         "SharePath": "\\\\fsx.example.test\\share\\web"}, timeout=HARNESS_S, deadline_s=300)
    took = time.monotonic() - began
    assert answer["Status"] == "FAILED", answer
    assert_sdk_timeout(answer["Reason"])
    assert took < HARNESS_S / 2, took
    assert endpoint.accepted() >= 1


def test_the_operation_timeout_caps_the_retries(start, runtime):
    """Attempt timeout 0.3 s, 20 attempts allowed, operation timeout 5 s: attempts are retried
    (the first ends at 0.3 s, the second starts within the next second of back-off), and the
    error is the operation timeout, which cuts the retries short (20 attempts and their back-off
    would take far longer), not an attempt's."""
    e = SilentEndpoint("silent")
    try:
        env = {**rotation_env(), "AWS_ENDPOINT_URL": e.url, "AWS_ATTEMPT_TIMEOUT_SECONDS": "0.3",
               "AWS_OPERATION_TIMEOUT_SECONDS": "5", "AWS_MAX_ATTEMPTS": "20"}
        start("rotate-password", env)
        kind, body = runtime.invoke({}, timeout=HARNESS_S, deadline_s=300)
        assert kind == "error", body
        assert "operation timeout (all attempts including retries) occurred after 5s" in body["errorMessage"], body
        assert e.accepted() >= 2, "the attempt timeout should have ended the first attempt and retried"
    finally:
        e.close()


@pytest.mark.parametrize("variable,value,problem", [
    ("AWS_ATTEMPT_TIMEOUT_SECONDS", "500ms", '"500ms" is not a number of seconds'),
    ("AWS_OPERATION_TIMEOUT_SECONDS", "0", "a timeout cannot be disabled"),
    ("AWS_OPERATION_TIMEOUT_SECONDS", "30000", "not milliseconds"),
])
def test_a_bad_timeout_value_is_reported_with_the_variable_and_the_fix(start, runtime, variable, value, problem):
    start("rotate-password", {**rotation_env(), "AWS_ENDPOINT_URL": "http://127.0.0.1:1", variable: value})
    kind, body = runtime.invoke({}, timeout=HARNESS_S, deadline_s=300)
    assert kind == "error", body
    message = body["errorMessage"]
    assert message.startswith(f"{variable}: "), message
    assert problem in message, message
    assert "leave it unset for the default" in message, message


def test_a_bad_timeout_value_fails_a_custom_resource_clearly(start, runtime, responses):
    start("ssm-parameters", {"ALLOWED_PARAMETER_PATH": "/fargate-smb-test", "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
                             "AWS_ATTEMPT_TIMEOUT_SECONDS": "30", "AWS_OPERATION_TIMEOUT_SECONDS": "10"})
    cfn = CloudFormation(runtime, responses, "Custom::SsmParameters", "ServiceAccountParameters")
    answer = cfn.create({"ParameterPrefix": "/fargate-smb-test/timeouts", "Username": "EXAMPLE\\svc-web",
                         "SharePath": "\\\\fsx.example.test\\share\\web"}, timeout=HARNESS_S)
    assert answer["Status"] == "FAILED", answer
    assert "AWS_ATTEMPT_TIMEOUT_SECONDS: 30 s is longer than AWS_OPERATION_TIMEOUT_SECONDS (10 s)" in answer["Reason"], answer


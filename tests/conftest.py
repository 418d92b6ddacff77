"""Fixtures for the end-to-end tests: the local stack's moto, the Runtime API, the ResponseURL."""

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import boto3
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lambda_harness import ROOT, Bootstrap, CloudFormation, ResponseUrl, RuntimeApi, binary, samba_env  # noqa: E402,F401


def _moto_url() -> str:
    url_file = ROOT / ".local" / "stack" / "moto.url"
    if "FARGATE_SMB_MOTO_URL" in os.environ:
        return os.environ["FARGATE_SMB_MOTO_URL"]
    if not url_file.exists():
        subprocess.run([str(ROOT / "scripts" / "stack"), "start", "moto"], check=True)
    return url_file.read_text().strip()


@pytest.fixture(scope="session")
def moto_url() -> str:
    url = _moto_url()
    try:
        # Not /moto-api/data.json: it serialises every backend and fails (500) while an S3
        # object is being written by another process.
        urllib.request.urlopen(url + "/moto-api/", timeout=5).read()
    except OSError as e:
        pytest.fail(f"moto does not answer at {url} ({e}): run scripts/stack start")
    return url


@pytest.fixture(scope="session")
def aws(moto_url):
    """boto3 clients against moto: the independent witnesses."""
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")

    class Clients:
        ssm = session.client("ssm", endpoint_url=moto_url)
        kms = session.client("kms", endpoint_url=moto_url)
        secretsmanager = session.client("secretsmanager", endpoint_url=moto_url)

    return Clients


@pytest.fixture
def runtime():
    api = RuntimeApi()
    yield api
    api.close()


@pytest.fixture
def responses():
    endpoint = ResponseUrl()
    yield endpoint
    endpoint.close()


@pytest.fixture
def launch(runtime, moto_url):
    """Start a bootstrap binary; all are stopped at the end of the test."""
    started: list[Bootstrap] = []

    def start(name: str, env: dict | None = None, example: bool = False) -> Bootstrap:
        merged = {"AWS_ENDPOINT_URL": moto_url, **(env or {})}
        b = Bootstrap(binary(name, example=example), runtime, merged)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


__all__ = ["Bootstrap", "CloudFormation", "ResponseUrl", "RuntimeApi"]

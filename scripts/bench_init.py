"""Cold-init benchmark: see scripts/bench-init. Usage: bench_init.py MOTO_URL [RUNS]."""

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from lambda_harness import CloudFormation, ResponseUrl, RuntimeApi, binary  # noqa: E402

BASELINE = """
import os, urllib.request
import boto3
from crhelper import CfnResource
helper = CfnResource()
ssm = boto3.client("ssm")
urllib.request.urlopen("http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/next")
"""


def environment(runtime: RuntimeApi, moto_url: str) -> dict:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_RUNTIME_API": runtime.address,
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "AWS_LAMBDA_LOG_GROUP_NAME": "bench",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": moto_url,
    }


def cold_start(argv: list[str], env: dict, runtime: RuntimeApi, then=None) -> tuple[float, int]:
    """Milliseconds from spawn to the first `next` request, and peak RSS in KiB after `then`."""
    seen = len(runtime.next_calls)
    started = time.monotonic()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(runtime.next_calls) == seen:
        if process.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited with {process.returncode} before asking for an event")
        time.sleep(0.0005)
    init_ms = (runtime.next_calls[seen] - started) * 1000
    if then:
        then()
    process.terminate()
    _, _, usage = os.wait4(process.pid, 0)
    process.returncode = 0
    # Let the Runtime API notice the closed connection before the next process asks.
    time.sleep(0.2)
    return init_ms, usage.ru_maxrss


def main(moto_url: str, runs: int) -> int:
    runtime, responses = RuntimeApi(), ResponseUrl()
    bootstrap = binary("ssm-parameters", profile="release")
    env = environment(runtime, moto_url)

    rust = [cold_start([str(bootstrap)], env, runtime)[0] for _ in range(runs)]
    cfn = CloudFormation(runtime, responses, "Custom::SsmParameters")
    prefix = f"/fargate-smb/bench-{uuid.uuid4().hex[:6]}"
    props = {"ParameterPrefix": prefix, "Username": "EXAMPLE\\svc-web", "SharePath": "\\\\fsx.example.test\\share"}

    def create_and_delete():
        assert cfn.create(props)["Status"] == "SUCCESS"
        assert cfn.delete(prefix, props)["Status"] == "SUCCESS"

    _, rss_kib = cold_start([str(bootstrap)], env, runtime, then=create_and_delete)
    python = [cold_start([sys.executable, "-c", BASELINE], env, runtime)[0] for _ in range(max(5, runs // 3))]

    size_mb = bootstrap.stat().st_size / 1_000_000
    r50, p50 = statistics.median(rust), statistics.median(python)
    report = {
        "rust_init_ms_p50": round(r50, 2),
        "rust_init_ms_min": round(min(rust), 2),
        "rust_init_ms_max": round(max(rust), 2),
        "python_boto3_crhelper_init_ms_p50": round(p50, 1),
        "speedup_x": round(p50 / r50, 1),
        "rust_peak_rss_mib_init_plus_create_delete": round(rss_kib / 1024, 1),
        "bootstrap_size_mb": round(size_mb, 2),
        "runs": {"rust": len(rust), "python": len(python)},
    }
    print(f"ssm-parameters release bootstrap, {len(rust)} cold starts (spawn -> first Runtime API `next`):")
    print(f"  init p50 {r50:.2f} ms (min {min(rust):.2f}, max {max(rust):.2f})   target <= 20 ms")
    print(f"  peak RSS {rss_kib / 1024:.1f} MiB (init + one Create + one Delete against moto)")
    print(f"  file size {size_mb:.2f} MB   target <= 8 MB")
    print(f"python 3 + boto3 + crhelper baseline, {len(python)} cold starts: init p50 {p50:.1f} ms")
    print(f"ratio: rust init is {p50 / r50:.1f}x faster   target >= 40x")
    print(json.dumps(report))
    runtime.close()
    responses.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 30))

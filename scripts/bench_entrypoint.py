"""Entrypoint overhead benchmark: see scripts/bench-entrypoint. Usage: bench_entrypoint.py [RUNS]."""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from lambda_harness import binary, domain_user  # noqa: E402


def quantiles(values):
    values = sorted(values)
    return statistics.median(values), values[min(len(values) - 1, int(len(values) * 0.9))]


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    name, password = domain_user()
    entrypoint = binary("fargate-smb-mount", profile="release")
    fake = binary("fake_tool", example=True, profile="release")
    env = {"PATH": os.environ["PATH"], "SMB_SHARE": "\\\\127.0.0.1\\share", "SMB_USERNAME": f"EXAMPLE\\{name}",
           "SMB_PASSWORD": password, "SMB_IIS_VDIRS": "/content=G:\\", "SMB_POWERSHELL": str(fake),
           "SMB_APPCMD": str(fake), "FAKE_TOOL_VDIR_PATH": "G:\\"}

    spawned, preflight, wall, reference = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        auth = Path(tmp) / "auth"
        auth.write_text(f"username = {name}\npassword = {password}\ndomain = EXAMPLE\n")
        for _ in range(runs):
            start = time.perf_counter()
            out = subprocess.run([str(entrypoint), "--", "true"], env=env, capture_output=True, text=True, timeout=60)
            wall.append((time.perf_counter() - start) * 1000)
            if out.returncode != 0:
                sys.exit(f"entrypoint failed: {out.stdout}{out.stderr}")
            logs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
            spawned.append(next(e["since_start_ms"] for e in logs if e["message"] == "main process started"))
            preflight.append(next(e["elapsed_ms"] for e in logs if e["message"] == "preflight passed"))

            # The reference: smbclient sets up the same encrypted session and lists the root.
            start = time.perf_counter()
            ref = subprocess.run(["smbclient", "//127.0.0.1/share", "-A", str(auth), "--client-protection=encrypt",
                                  "-c", "ls"], capture_output=True, text=True, timeout=60)
            reference.append((time.perf_counter() - start) * 1000)
            if ref.returncode != 0:
                sys.exit(f"smbclient failed: {ref.stdout}{ref.stderr}")

    s50, s90 = quantiles(spawned)
    p50, p90 = quantiles(preflight)
    w50, _ = quantiles(wall)
    r50, r90 = quantiles(reference)
    print(f"entrypoint, {runs} runs (release, preflight against //127.0.0.1/share, fake Windows tools):")
    print(f"  start -> main process spawned  p50 {s50:6.1f} ms  p90 {s90:6.1f} ms   (target <= 50 ms: "
          f"{'met' if s50 <= 50 else 'NOT met'})")
    print(f"  of which preflight             p50 {p50:6.1f} ms  p90 {p90:6.1f} ms")
    print(f"  whole process (main = true)    p50 {w50:6.1f} ms")
    print(f"smbclient session setup + ls     p50 {r50:6.1f} ms  p90 {r90:6.1f} ms")
    print(f"ratio smbclient / entrypoint-to-spawn: {r50 / s50:.2f}x")


if __name__ == "__main__":
    main()

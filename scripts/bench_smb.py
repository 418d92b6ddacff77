"""SMB throughput benchmark: see scripts/bench-smb. Usage: bench_smb.py [RUNS]."""

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMBCTL = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "examples" / "smbctl"
PASSWORD_FILE = os.environ["FARGATE_SMB_ADMIN_PASSWORD_FILE"]


def timed(argv, env=None) -> float:
    started = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    elapsed = time.monotonic() - started
    if out.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {out.stdout}{out.stderr}")
    return elapsed


def main(runs: int) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-smb-"))
    auth = work / "auth"
    auth.write_text(f"username = Administrator\npassword = {open(PASSWORD_FILE).read()}\ndomain = EXAMPLE\n")
    auth.chmod(0o600)
    big = work / "big.bin"
    big.write_bytes(os.urandom(256 * 1024 * 1024))
    small = work / "small"
    small.mkdir()
    for i in range(2000):
        (small / f"f{i:04}.html").write_bytes(os.urandom(8192))
    env = {"PATH": os.environ["PATH"], "SMB_SHARE": "\\\\127.0.0.1\\bench", "SMB_USERNAME": "EXAMPLE\\Administrator", "SMB_PASSWORD_FILE": PASSWORD_FILE,
           "SMB_CONNECTIONS": "2"}
    smbclient = ["smbclient", "//127.0.0.1/bench", "-A", str(auth), "-m", "SMB3", "--client-protection=encrypt"]
    tag = uuid.uuid4().hex[:6]
    figures = {}
    for label, ours, theirs in [
        ("256 MiB file", lambda r: [str(SMBCTL), "put", str(big), f"bench-{tag}-{r}-big.bin"],
         lambda r: smbclient + ["-c", f"put {big} bench-{tag}-{r}-big-c.bin"]),
        ("2,000 x 8 KiB files", lambda r: [str(SMBCTL), "put-tree", str(small), f"bench-{tag}-{r}-tree", "32"],
         lambda r: smbclient + ["-c", f"prompt off; recurse on; lcd {small}; mkdir bench-{tag}-{r}-tree-c; cd bench-{tag}-{r}-tree-c; mput *"]),
    ]:
        a = [timed(ours(r), env) for r in range(runs)]
        b = [timed(theirs(r)) for r in range(runs)]
        figures[label] = (statistics.median(a), statistics.median(b))
    # Clean up what the runs wrote.
    share_dir = Path(os.environ["FARGATE_SMB_SMB_CONF"]).parent.parent / "bench"
    for p in share_dir.glob(f"bench-{tag}-*"):
        subprocess.run(["rm", "-rf", str(p)], check=False)
    subprocess.run(["rm", "-rf", str(work)], check=False)

    print(f"SMB write throughput to //127.0.0.1/bench, encryption required on both sides, median of {runs} runs (each includes connect + logon;\n"
          "smb-share: 1 MiB requests 8 in flight per file; small files 32 in flight over 2 sessions):")
    for label, (ours, theirs) in figures.items():
        print(f"  {label:<20} smb-share {ours:6.2f} s   smbclient {theirs:6.2f} s   ratio {theirs / ours:5.2f}x")
    print("  targets: >= 1.0x on the large file, >= 3x on the small files")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))

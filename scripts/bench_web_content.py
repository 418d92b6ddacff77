"""WebContent benchmark: see scripts/bench-web-content. Usage: bench_web_content.py [FILES] [SESSIONS...]."""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lambda_harness import Bootstrap, CloudFormation, ResponseUrl, RuntimeApi, binary  # noqa: E402
from test_sync_content import PrivateMoto, client  # noqa: E402

import botocore.config  # noqa: E402

SHARE = "\\\\127.0.0.1\\bench"
FOLDERS = 200  # 100 files a folder at 20,000: a site's shape, not one flat folder


def site(files: int) -> dict[str, bytes]:
    """Small files of a few KiB, as a website's pages, styles and scripts are."""
    return {f"site/d{i % FOLDERS:03}/page-{i:05}.html": (f"<p>page {i}</p>\n" * (64 + i % 128)).encode()
            for i in range(files)}


def share_dir() -> Path:
    return Path(os.environ["FARGATE_SMB_SMB_CONF"]).parent.parent / "bench"


def main(files: int, sessions: list[int]) -> int:
    moto = PrivateMoto()
    runtime, responses = RuntimeApi(), ResponseUrl()
    tag = uuid.uuid4().hex[:6]
    work = Path(tempfile.mkdtemp(prefix="bench-wc-"))
    bootstrap = None
    try:
        s3 = client("s3", moto.url, config=botocore.config.Config(s3={"addressing_style": "path"},
                                                                   max_pool_connections=32))
        bucket = f"bench-{uuid.uuid4().hex[:10]}"
        s3.create_bucket(Bucket=bucket)
        objects = site(files)
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), objects.items()))
        total_bytes = sum(len(v) for v in objects.values())
        password = open(os.environ["FARGATE_SMB_ADMIN_PASSWORD_FILE"]).read()
        parameter = f"/fargate-smb-bench/admin-{tag}"
        client("ssm", moto.url).put_parameter(Name=parameter, Value=password, Type="SecureString")
        bootstrap = Bootstrap(binary("web-content", profile="release"), runtime, {
            "AWS_ENDPOINT_URL": moto.url, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"})
        cfn = CloudFormation(runtime, responses, "Custom::WebContent", "WebContent")

        def props(folder: str, n: int) -> dict:
            return {"ShareUnc": SHARE, "Folder": folder, "Bucket": bucket, "Prefix": "site",
                    "AdminUsername": "EXAMPLE\\Administrator", "AdminPasswordParameter": parameter,
                    "Parallelism": "32", "Sessions": str(n)}

        # Warm the container (first HTTPS client, first session), as Lambda reuses one.
        s3.put_object(Bucket=bucket, Key="warm/x.txt", Body=b"x")
        warm = cfn.create({**props(f"bench-wc-{tag}-warm", 1), "Prefix": "warm"}, timeout=600)
        assert warm["Status"] == "SUCCESS", warm

        # The source's ceiling: every object fetched by 32 threads, no share involved. moto is a
        # Python server on the same cores, so it can be the limit rather than SMB.
        started = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda k: s3.get_object(Bucket=bucket, Key=k)["Body"].read(), objects))
        source_seconds = time.monotonic() - started

        ours = {}
        for n in sessions:
            folder = f"bench-wc-{tag}-s{n}"
            started = time.monotonic()
            created = cfn.create(props(folder, n), deadline_s=1800, timeout=1800)
            ours[n] = time.monotonic() - started
            assert created["Status"] == "SUCCESS" and created["Data"]["Copied"] == str(files), created

        # smbclient from local disk: the same tree, mput with recurse (makes the folders).
        local = work / "site"
        for key, body in objects.items():
            path = local / key.removeprefix("site/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        auth = work / "auth"
        auth.write_text(f"username = Administrator\npassword = {password}\ndomain = EXAMPLE\n")
        auth.chmod(0o600)
        started = time.monotonic()
        out = subprocess.run(["smbclient", "//127.0.0.1/bench", "-A", str(auth), "-m", "SMB3", "--client-protection=encrypt",
                              "-c", f"prompt off; recurse on; lcd {local}; mkdir bench-wc-{tag}-smbclient; "
                                    f"cd bench-wc-{tag}-smbclient; mput *"], capture_output=True, text=True, timeout=3600)
        theirs = time.monotonic() - started
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        copied = sum(1 for p in (share_dir() / f"bench-wc-{tag}-smbclient").rglob("*") if p.is_file())
        assert copied == files, (copied, files)

        # The manifest: one object changes, the next Update saves one shard.
        first = f"bench-wc-{tag}-s{sessions[0]}"
        s3.put_object(Bucket=bucket, Key="site/d007/page-00007.html", Body=b"<p>changed</p>\n")
        mark = len(bootstrap.stdout_lines())
        p = props(first, sessions[0])
        updated = cfn.update(f"{SHARE}\\{first}", p, p, deadline_s=900, timeout=600)
        assert updated["Status"] == "SUCCESS" and updated["Data"]["Copied"] == "1", updated
        update_seconds = None
        saved = None
        for line in bootstrap.stdout_lines()[mark:]:
            if '"manifest saved"' in line:
                saved = json.loads(line)
            if '"copy finished"' in line:
                update_seconds = json.loads(line)["seconds"]
        assert saved, "no save logged"
        checkpoints = [json.loads(line)["bytes"] for line in bootstrap.stdout_lines() if '"manifest checkpoint"' in line]
        manifests = share_dir() / ".fargate-smb" / "content"
        heads = [h for h in manifests.glob("*.json")]
        shards_bytes, whole = {}, 0
        for head in heads:
            if json.loads(head.read_text()).get("folder") == first:
                shard_dir = manifests / head.stem
                shards_bytes = {s.name: s.stat().st_size for s in shard_dir.glob("*.json")}
                whole = head.stat().st_size + sum(shards_bytes.values())
        # Peak RSS of the bootstrap alone (moto and smbclient are children of this script too).
        bootstrap.process.terminate()
        _, _, usage = os.wait4(bootstrap.process.pid, 0)
        bootstrap.process.returncode = 0
        rss_mib = usage.ru_maxrss / 1024

        print(f"Custom::WebContent, release bootstrap, {files:,} files of {total_bytes / files / 1024:.1f} KiB average "
              f"in {FOLDERS} folders, private moto + Samba share //127.0.0.1/bench, encryption required, Parallelism 32:")
        for n, seconds in ours.items():
            print(f"  Create into an empty folder, {n} SMB session(s): {seconds:7.2f} s  {files / seconds:7.0f} files/s   "
                  f"smbclient/ours {theirs / seconds:5.2f}x")
        print(f"  smbclient mput (recurse) of the same files from local disk: {theirs:7.2f} s  {files / theirs:7.0f} files/s")
        print(f"  the source alone (moto, every object fetched by 32 Python threads, no share): {source_seconds:7.2f} s  "
              f"{files / source_seconds:7.0f} files/s")
        print(f"  load average over the run (2 cores, shared with other work): {os.getloadavg()[0]:.1f}")
        best = min(ours, key=ours.get)
        print(f"  several sessions: best {best} ({ours[sessions[0]] / ours[best]:.2f}x the {sessions[0]}-session time)")
        print(f"  manifest: {len(shards_bytes)} shards, {whole:,} bytes in all (what format 1 rewrote at every checkpoint); "
              f"the save after one changed file wrote {saved['shards']} shard(s), {saved['bytes']:,} bytes "
              f"({whole / max(saved['bytes'], 1):.0f}x less); the Update took {update_seconds:.2f} s")
        if checkpoints:
            print(f"  checkpoints during the {files:,}-file Creates: {len(checkpoints)}, median {statistics.median(checkpoints):,.0f} bytes")
        print(f"  peak RSS of the bootstrap over all runs: {rss_mib:.1f} MiB (MemorySize 512)")
        report = {
            "files": files,
            "bytes": total_bytes,
            "create_seconds_by_sessions": {str(n): round(s, 2) for n, s in ours.items()},
            "files_per_second_by_sessions": {str(n): round(files / s) for n, s in ours.items()},
            "smbclient_mput_seconds": round(theirs, 2),
            "source_only_get_seconds": round(source_seconds, 2),
            "load_average_1min": round(os.getloadavg()[0], 1),
            "smbclient_over_ours_by_sessions": {str(n): round(theirs / s, 2) for n, s in ours.items()},
            "best_sessions": best,
            "manifest_shards": len(shards_bytes),
            "manifest_total_bytes": whole,
            "save_after_one_change_bytes": saved["bytes"],
            "save_after_one_change_shards": saved["shards"],
            "update_one_change_seconds": update_seconds,
            "checkpoint_bytes_median": statistics.median(checkpoints) if checkpoints else None,
            "peak_rss_mib": round(rss_mib, 1),
        }
        print(json.dumps(report))
        return 0
    finally:
        if bootstrap:
            bootstrap.stop()
        runtime.close()
        responses.close()
        moto.stop()
        for p in share_dir().glob(f"bench-wc-{tag}-*"):
            subprocess.run(["rm", "-rf", str(p)], check=False)
        # The runs' manifests (heads and shards), by the folder each head records.
        for head in (share_dir() / ".fargate-smb" / "content").glob("*.json"):
            try:
                ours = json.loads(head.read_text()).get("folder", "").startswith(f"bench-wc-{tag}-")
            except (OSError, ValueError):
                continue
            if ours:
                subprocess.run(["rm", "-rf", str(head), str(head.with_suffix(""))], check=False)
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    sys.exit(main(args[0] if args else 20000, args[1:] or [1, 2, 4]))

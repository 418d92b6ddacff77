"""Reconcile benchmark of functions/sync-content: see scripts/bench-reconcile.

Usage: bench_reconcile.py [--quick] [--profile release|debug] [--binary PATH] [--parallelism P]
                          [--deadline S] [--cutoff-deadline S] [--invoke-timeout S] [N ...]

For each N, against a moto of its own and a fresh folder of the Samba share:
  1. N small objects (200 B - 4 KiB, folders of 1,000, a quarter of them nested three deep);
  2. reconcile into an empty folder: wall time, files/s, peak RSS; the folder is then listed
     with smbclient and must hold exactly the N files, at their sizes;
  3. 1 % drift (0.5 % rewritten, 0.25 % deleted from the bucket, 0.25 % deleted from the share)
     and reconcile again: the copied/removed counts must be exactly the drift;
  4. reconcile into another empty folder with a deadline too short to finish, repeated until the
     report says `complete`: the copies must add up to the objects, none twice;
then the RSS slope per object between the smallest and the largest N and its projection to
1,000,000 objects against the issue's 128 MiB target. The last line is one line of JSON.

A report without a `complete` field comes from a reconcile that cannot resume: it is taken as
complete, and step 4 then says so instead of failing.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lambda_harness import Bootstrap, RuntimeApi, binary  # noqa: E402
from test_sync_content import PREFIX, SHARE, PrivateMoto, client, create_table  # noqa: E402

import botocore.config  # noqa: E402

MIB = 1024 * 1024
TARGET_MIB = 128  # issue 15: peak RSS <= 128 MiB at 100,000 and, by the slope, at 1,000,000
FOLDER_SIZE = 1000
# The template's values for the function (cloudformation/template.yaml, SyncContentFunction).
TEMPLATE_TIMEOUT_S = 300
TEMPLATE_MEMORY_MB = "512"
TEMPLATE_PARALLELISM = 8
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchFailure(Exception):
    """A check of the benchmark did not hold (the figures around it are still printed)."""


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


class Stages:
    """Wall time per named stage, printed as it ends and kept for the JSON line."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn, *args, **kw):
        log(f"-- {name}")
        started = time.monotonic()
        try:
            return fn(*args, **kw)
        finally:
            self.seconds[name] = round(time.monotonic() - started, 1)
            log(f"-- {name}: {self.seconds[name]} s")


# --- /proc figures -------------------------------------------------------------------------

def proc_status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces and parentheses: the fields start after the last ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def reset_peak_rss(pid: int) -> bool:
    """Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0). Returns whether
    it took effect, so a kernel that ignores it cannot make a figure lie silently."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return proc_status_kib(pid, "VmHWM") <= proc_status_kib(pid, "VmRSS") + 64


# --- the share, through smbclient (independent of the function's SMB code) --------------------

LS_LINE = re.compile(r"^  (?P<name>.+?)\s+(?P<attr>[A-Z]*)\s+(?P<size>\d+)\s+\w{3} \w{3}\s+\d+ \d\d:\d\d:\d\d \d{4}$")


class Share:
    def __init__(self, work: Path) -> None:
        self.password = Path(os.environ["FARGATE_SMB_ADMIN_PASSWORD_FILE"]).read_text()
        self.auth = work / "admin.auth"
        self.auth.write_text(f"username = Administrator\npassword = {self.password}\ndomain = EXAMPLE\n")
        self.auth.chmod(0o600)
        self.work = work

    def run(self, command: str, directory: str | None = None, timeout: float = 120) -> str:
        args = ["smbclient", "//127.0.0.1/share", "-A", str(self.auth), "-m", "SMB3", "--client-protection=encrypt"]
        if directory:
            args += ["-D", directory]
        out = subprocess.run(args + ["-c", command], capture_output=True, text=True, timeout=timeout)
        said = out.stdout + out.stderr
        # smbclient exits 0 after some failed commands; their NT_STATUS is in the output.
        if out.returncode != 0 or "NT_STATUS_" in said:
            raise BenchFailure(f"smbclient {command[:80]!r} in {directory!r} failed: {said[-2000:]}")
        return out.stdout

    def mkdir(self, folder: str) -> None:
        self.run(f'mkdir "{folder}"')

    def files(self, folder: str, timeout: float) -> dict[str, int]:
        """Every file under `folder`: relative path (with /) -> size, from `recurse; ls`."""
        out = self.run("recurse ON; ls", directory=folder, timeout=timeout)
        files: dict[str, int] = {}
        current = ""
        # Each subfolder's entries follow a header line naming it from the share root.
        root = "\\" + folder.strip("\\") + "\\"
        for line in out.splitlines():
            if line.startswith("\\"):
                header = line.strip() + "\\"
                if not header.lower().startswith(root.lower()):
                    raise BenchFailure(f"smbclient listed {line!r} outside {folder!r}")
                current = header[len(root):].strip("\\").replace("\\", "/")
                continue
            m = LS_LINE.match(line)
            if not m or m["name"] in (".", "..") or "D" in m["attr"]:
                continue
            files[f"{current}/{m['name']}" if current else m["name"]] = int(m["size"])
        return files

    def get(self, path: str) -> bytes:
        local = self.work / f"get-{uuid.uuid4().hex[:8]}"
        self.run(f'get "{path}" "{local}"')
        data = local.read_bytes()
        local.unlink()
        return data

    def delete(self, folder: str, paths: list[str]) -> None:
        for i in range(0, len(paths), 200):
            self.run("; ".join(f'del "{p.replace("/", chr(92))}"' for p in paths[i:i + 200]), directory=folder)

    def deltree(self, folder: str, timeout: float) -> None:
        self.run(f'deltree "{folder}"', timeout=timeout)


def our_files(listing: dict[str, int]) -> tuple[dict[str, int], int]:
    """The content files, and how many bookkeeping files (.fargate-smb*, temporaries) were seen."""
    content = {}
    bookkeeping = 0
    for path, size in listing.items():
        name = path.rsplit("/", 1)[-1]
        if path.lower().startswith(".fargate-smb") or (name.startswith(".") and ".fargate-smb-tmp-" in name.lower()):
            bookkeeping += 1
        else:
            content[path] = size
    return content, bookkeeping


def compare(listing: dict[str, int], expected: dict[str, int], what: str) -> list[str]:
    missing = [p for p in expected if p not in listing]
    extra = [p for p in listing if p not in expected]
    wrong = [p for p in expected if p in listing and listing[p] != expected[p]]
    if missing or extra or wrong:
        return [f"{what}: {len(listing)} files on the share, {len(expected)} expected; "
                f"missing {len(missing)} {missing[:3]}, extra {len(extra)} {extra[:3]}, wrong size {len(wrong)} {wrong[:3]}"]
    return []


# --- the bucket ----------------------------------------------------------------------------

def layout(n: int) -> list[str]:
    """Relative paths of n objects: folders of 1,000; every fourth folder three levels deep."""
    paths = []
    for i in range(n):
        g = i // FOLDER_SIZE
        folder = f"g{g:04}/deep/er" if g % 4 == 3 else f"g{g:04}"
        paths.append(f"{folder}/obj-{i:07}.{('html', 'css', 'js', 'svg')[i % 4]}")
    return paths


class Putter:
    """PUTs objects into moto over plain keep-alive HTTP, one connection per thread.

    moto does not verify signatures, so a well-formed SigV4 header without a real signature
    is accepted; skipping botocore's request building and signing measured ~30 % more puts/s
    here (the server is the bottleneck either way, at 16 threads)."""

    AUTH = "AWS4-HMAC-SHA256 Credential=testing/20261201/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00"

    def __init__(self, url: str, bucket: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port, self.bucket = host, int(port), bucket
        self.local = threading.local()

    def put(self, key: str, body: bytes) -> None:
        for attempt in range(3):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                conn.request("PUT", f"/{self.bucket}/{key}", body=body, headers={
                    "Authorization": self.AUTH, "x-amz-date": "20261201T000000Z",
                    "x-amz-content-sha256": "UNSIGNED-PAYLOAD", "Content-Type": "application/octet-stream"})
                response = conn.getresponse()
                said = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
                continue
            if response.status != 200:
                raise BenchFailure(f"PUT {key}: HTTP {response.status}: {said[:300]!r}")
            expect = hashlib.md5(body).hexdigest()
            if response.getheader("ETag", "").strip('"') != expect:
                raise BenchFailure(f"PUT {key}: ETag {response.getheader('ETag')} is not the body's MD5 {expect}")
            return


def body_for(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def fill(putter: Putter, paths: list[str], seed: int, threads: int) -> dict[str, int]:
    """Put one object per path (sizes 200 B - 4 KiB); returns path -> size."""
    sizes = {}

    def chunk(start: int) -> None:
        rng = random.Random(seed * 1_000_003 + start)
        for p in paths[start:start + 500]:
            size = rng.randint(200, 4096)
            putter.put(PREFIX + p, body_for(rng, size))
            sizes[p] = size  # distinct keys per thread: no lock needed for dict item assignment

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(chunk, range(0, len(paths), 500)))
    return {p: sizes[p] for p in paths}


def list_pages(s3, bucket: str, keys: list[str]) -> dict:
    """The cost of ListObjectsV2 in moto on its own: one page of 1,000 from the start, the
    middle and the end of the bucket (StartAfter). moto builds the bucket's key list for every
    page and a late page costs more than an early one (at 100,000: a full walk measured 113 s,
    while its first pages took ~0.5 s each), so the full walk is projected from the three, not
    run (minutes at 100,000)."""
    ordered = sorted(keys)
    seconds = {}
    for where, index in (("first", None), ("middle", len(ordered) // 2), ("last", max(0, len(ordered) - 1001))):
        kw = {"StartAfter": PREFIX + ordered[index]} if index else {}
        started = time.monotonic()
        s3.list_objects_v2(Bucket=bucket, Prefix=PREFIX, MaxKeys=1000, **kw)
        seconds[where] = round(time.monotonic() - started, 3)
    mean = sum(seconds.values()) / len(seconds)
    return {"page_s": seconds, "full_walk_projected_s": round(mean * -(-len(keys) // 1000), 1)}


# --- invoking reconcile --------------------------------------------------------------------

class Reconciler:
    """One sync-content bootstrap (a warm Lambda container) for one folder and state table."""

    def __init__(self, path: Path, runtime: RuntimeApi, env: dict[str, str], moto_pid: int, invoke_timeout: float):
        self.runtime, self.moto_pid, self.invoke_timeout = runtime, moto_pid, invoke_timeout
        seen = len(runtime.next_calls)
        self.bootstrap = Bootstrap(path, runtime, env, name="sync-content")
        self.hwm_reset_works = None
        # Measure from a bootstrap that has finished init and waits for its first event (a
        # reading taken earlier could be of the forked Python child before exec).
        until = time.monotonic() + 30
        while len(runtime.next_calls) == seen:
            if not self.bootstrap.alive() or time.monotonic() > until:
                self.bootstrap.stop()
                raise BenchFailure(f"the bootstrap did not ask for an event within 30 s: {self.bootstrap.output()[-2000:]}")
            time.sleep(0.01)
        self.init_rss_mib = round(proc_status_kib(self.bootstrap.process.pid, "VmRSS") / 1024, 1)

    def invoke(self, deadline_s: float) -> dict:
        pid = self.bootstrap.process.pid
        if not self.bootstrap.alive():
            raise BenchFailure(f"the bootstrap exited ({self.bootstrap.process.returncode}): {self.bootstrap.output()[-2000:]}")
        reset = reset_peak_rss(pid)
        self.hwm_reset_works = reset if self.hwm_reset_works is None else self.hwm_reset_works and reset
        rss_before = proc_status_kib(pid, "VmRSS")
        cpu_before, moto_cpu_before = proc_cpu_s(pid), proc_cpu_s(self.moto_pid)
        started = time.monotonic()
        status, body = self.runtime.invoke({"reconcile": True}, timeout=self.invoke_timeout, deadline_s=deadline_s)
        wall = time.monotonic() - started
        if not self.bootstrap.alive():
            raise BenchFailure(f"the bootstrap exited ({self.bootstrap.process.returncode}) during reconcile")
        figures = {
            "wall_s": round(wall, 2),
            "peak_rss_mib": round(proc_status_kib(pid, "VmHWM") / 1024, 1),
            "rss_before_mib": round(rss_before / 1024, 1),
            "cpu_s": round(proc_cpu_s(pid) - cpu_before, 2),
            "moto_cpu_s": round(proc_cpu_s(self.moto_pid) - moto_cpu_before, 2),
            "deadline_s": deadline_s,
            "within_deadline": wall < deadline_s,
        }
        if status != "response" or not isinstance(body, dict) or "reconcile" not in body:
            raise BenchFailure(f"reconcile answered {status}: {json.dumps(body)[:2000]}")
        return {**figures, "report": body["reconcile"]}

    def until_complete(self, deadline_s: float, max_invocations: int) -> dict:
        """Invoke until a report is complete (a report without the field is complete)."""
        runs = []
        stalled = 0
        while True:
            r = self.invoke(deadline_s)
            runs.append(r)
            rep = r["report"]
            log(f"   invocation {len(runs)}: {r['wall_s']} s, peak RSS {r['peak_rss_mib']} MiB, "
                f"copied {rep.get('copied_count')}, removed {rep.get('removed_count')}, unchanged {rep.get('unchanged')}, "
                f"complete {rep.get('complete', '(no field)')}")
            if rep.get("complete", True):
                break
            moved = rep.get("copied_count", 0) + rep.get("removed_count", 0) + rep.get("unchanged", 0)
            stalled = stalled + 1 if moved == 0 else 0
            if stalled >= 3:
                raise BenchFailure(f"reconcile made no progress in 3 invocations with a {deadline_s} s deadline "
                                   "(is its safety margin longer than the deadline?)")
            if len(runs) >= max_invocations:
                raise BenchFailure(f"reconcile was not complete after {len(runs)} invocations")
        return summarize(runs)

    def stop(self) -> None:
        self.bootstrap.stop()


def summarize(runs: list[dict]) -> dict:
    reports = [r["report"] for r in runs]
    return {
        "invocations": len(runs),
        "wall_s": round(sum(r["wall_s"] for r in runs), 2),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "cpu_s": round(sum(r["cpu_s"] for r in runs), 2),
        "moto_cpu_s": round(sum(r["moto_cpu_s"] for r in runs), 2),
        "copied": sum(x.get("copied_count", 0) for x in reports),
        "removed": sum(x.get("removed_count", 0) for x in reports),
        "unchanged_last": reports[-1].get("unchanged"),
        "rejected": sum(len(x.get("rejected", [])) for x in reports),
        "all_within_deadline": all(r["within_deadline"] for r in runs),
        "resumable_build": all("complete" in x for x in reports),
        "copied_names": [k for x in reports for k in x.get("copied", [])],
        "removed_names": [k for x in reports for k in x.get("removed", [])],
        "per_invocation": [{k: v for k, v in r.items() if k != "report"} for r in runs],
    }


# --- one N ---------------------------------------------------------------------------------

def sdk_timeouts(seconds: float | None) -> dict[str, str]:
    """moto holding 100,000 objects (~1 GiB of Python objects) answers a DynamoDB Query page of
    a 100,000-item partition in more than the function's 10 s attempt timeout (seen: the drift
    reconcile failed with `dynamodb:Query ... operation timeout after 25s`; the same page takes
    ~5 s in an otherwise empty moto). The bench measures memory and counts, not moto's speed, so
    it gives the SDK room; `--sdk-timeout 0` keeps the function's defaults."""
    if not seconds:
        return {}
    return {"AWS_ATTEMPT_TIMEOUT_SECONDS": str(int(seconds)), "AWS_OPERATION_TIMEOUT_SECONDS": str(int(seconds * 3))}


def bench_one(n: int, args, runtime: RuntimeApi, share: Share, failures: list[str], result: dict) -> None:
    """Fills `result` as it goes, so the figures of the stages before a failure are kept."""
    stages = Stages()
    result["n"] = n
    moto = stages.run("start moto", PrivateMoto)
    folders: list[str] = []
    reconcilers: list[Reconciler] = []
    tag = uuid.uuid4().hex[:6]

    def check(problems: list[str]) -> None:
        for p in problems:
            log(f"CHECK FAILED: {p}")
        failures.extend(f"N={n}: {p}" for p in problems)

    try:
        s3 = client("s3", moto.url, config=botocore.config.Config(s3={"addressing_style": "path"}, max_pool_connections=32))
        dynamodb = client("dynamodb", moto.url)
        bucket = f"bench-rec-{tag}"
        s3.create_bucket(Bucket=bucket)
        parameter = f"/fargate-smb-bench/admin-{tag}"
        client("ssm", moto.url).put_parameter(Name=parameter, Value=share.password, Type="SecureString")

        def start(folder: str, table: str) -> Reconciler:
            r = Reconciler(args.binary, runtime, {
                "AWS_ENDPOINT_URL": moto.url, "BUCKET": bucket, "PREFIX": PREFIX, "SHARE_UNC": SHARE, "FOLDER": folder,
                "ADMIN_USERNAME": "EXAMPLE\\Administrator", "ADMIN_PASSWORD_PARAMETER": parameter,
                "STATE_TABLE": table, "PARALLELISM": str(args.parallelism),
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": TEMPLATE_MEMORY_MB,
                **sdk_timeouts(args.sdk_timeout),
            }, moto.process.pid, args.invoke_timeout)
            reconcilers.append(r)
            return r

        def new_folder(suffix: str) -> str:
            folder = f"bench-rec-{tag}-{suffix}"
            share.mkdir(folder)
            folders.append(folder)
            return folder

        # 1. The objects.
        paths = layout(n)
        started = time.monotonic()
        expected = stages.run(f"put {n} objects", fill, Putter(moto.url, bucket), paths, seed=n, threads=args.put_threads)
        put_s = time.monotonic() - started
        listing_cost = stages.run("time ListObjectsV2 pages (moto alone)", list_pages, s3, bucket, paths)
        result["load"] = {
            "put_s": round(put_s, 1), "puts_per_s": round(n / put_s), "threads": args.put_threads,
            "bytes": sum(expected.values()), "moto_rss_mib": round(proc_status_kib(moto.process.pid, "VmRSS") / 1024),
            "list_objects_v2": listing_cost,
        }
        print(f"N={n:,}: put {n:,} objects ({sum(expected.values()) / MIB:.0f} MiB) in {put_s:.1f} s = "
              f"{n / put_s:,.0f} puts/s ({args.put_threads} threads); moto RSS {result['load']['moto_rss_mib']} MiB; "
              "moto ListObjectsV2, one page of 1,000 at the first/middle/last key: "
              + "/".join(f"{x:.2f}" for x in listing_cost["page_s"].values())
              + f" s (a full walk: ~{listing_cost['full_walk_projected_s']:.1f} s)", flush=True)

        # 2. Into an empty folder.
        folder, table = new_folder("full"), create_table(dynamodb)
        rec = start(folder, table)
        first = stages.run("reconcile into an empty folder", rec.until_complete, args.deadline, args.max_invocations)
        rec.stop()
        listing, bookkeeping = our_files(stages.run("list the folder (smbclient)", share.files, folder, args.smb_timeout))
        check(compare(listing, expected, "after the first reconcile"))
        if first["copied"] != n:
            check([f"the first reconcile copied {first['copied']}, not {n}"])
        first.update({"files_per_s": round(n / first["wall_s"]), "files_on_share": len(listing),
                      "bookkeeping_files": bookkeeping, "rss_reset_between_invocations": rec.hwm_reset_works})
        result["empty"] = first
        print(f"N={n:,}: reconcile into an empty folder: {first['wall_s']:.1f} s, {first['files_per_s']:,} files/s, "
              f"peak RSS {first['peak_rss_mib']} MiB, {first['invocations']} invocation(s), copied {first['copied']:,}; "
              f"bootstrap CPU {first['cpu_s']} s, moto CPU {first['moto_cpu_s']} s; "
              f"smbclient sees {len(listing):,} files (+{bookkeeping} bookkeeping)", flush=True)
        if not first["all_within_deadline"]:
            print(f"N={n:,}:   an invocation ran past its {args.deadline} s deadline (on Lambda it would be killed)")

        # 3. 1 % drift.
        rng = random.Random(n + 1)
        chosen = rng.sample(paths, max(4, n // 100))
        k = len(chosen)
        rewritten, deleted, unshared = chosen[:k // 2], chosen[k // 2:k * 3 // 4], chosen[k * 3 // 4:]
        putter = Putter(moto.url, bucket)
        new_bodies = {}
        for i, p in enumerate(rewritten):
            # Half keep their size (only the ETag tells), half change it.
            size = expected[p] if i % 2 == 0 else expected[p] + rng.randint(1, 1500)
            new_bodies[p] = body_for(rng, size)

        def drift():
            with ThreadPoolExecutor(args.put_threads) as pool:
                list(pool.map(lambda p: putter.put(PREFIX + p, new_bodies[p]), rewritten))
                list(pool.map(lambda p: s3.delete_object(Bucket=bucket, Key=PREFIX + p), deleted))
            share.delete(folder, unshared)

        stages.run("drift", drift)
        for p in rewritten:
            expected[p] = len(new_bodies[p])
        for p in deleted:
            del expected[p]
        # The same folder and state table: a warm function's next scheduled reconcile.
        rec = start(folder, table)
        second = stages.run("reconcile the drift", rec.until_complete, args.deadline, args.max_invocations)
        rec.stop()
        listing, bookkeeping = our_files(stages.run("list the folder (smbclient)", share.files, folder, args.smb_timeout))
        check(compare(listing, expected, "after the drift reconcile"))
        want_copied, want_removed = len(rewritten) + len(unshared), len(deleted)
        if second["copied"] != want_copied or second["removed"] != want_removed:
            check([f"the drift reconcile copied {second['copied']} and removed {second['removed']}; "
                   f"the drift was {want_copied} to copy ({len(rewritten)} rewritten + {len(unshared)} deleted on the share) "
                   f"and {want_removed} to remove"])
        copy_keys = {PREFIX + p for p in rewritten + unshared}
        stray = [x for x in second["copied_names"] if x not in copy_keys]
        stray += [x for x in second["removed_names"] if x not in set(deleted)]
        if stray:
            check([f"the drift reconcile names files outside the drift: {stray[:5]}"])
        sample = rewritten[:10]
        wrong = [p for p in sample if share.get(f"{folder}\\{p}".replace("/", "\\")) != new_bodies[p]]
        if wrong:
            check([f"rewritten objects not on the share as rewritten: {wrong}"])
        second.update({"drift": {"rewritten": len(rewritten), "deleted_objects": len(deleted),
                                 "deleted_on_share": len(unshared)},
                       "expected_copied": want_copied, "expected_removed": want_removed,
                       "expected_unchanged": len(expected) - want_copied, "files_on_share": len(listing),
                       "contents_checked": len(sample)})
        result["drift"] = second
        print(f"N={n:,}: reconcile after 1 % drift: {second['wall_s']:.1f} s, peak RSS {second['peak_rss_mib']} MiB, "
              f"copied {second['copied']} (drift {want_copied}), removed {second['removed']} (drift {want_removed}), "
              f"unchanged {second['unchanged_last']} (expected {len(expected) - want_copied}); "
              f"{len(sample)} rewritten files downloaded and compared", flush=True)

        # 4. Cut off by a short deadline, resumed until complete.
        if not (first["resumable_build"] and second["resumable_build"]):
            print(f"N={n:,}: resume: not supported by this build (its reports have no `complete` field)")
            result["cutoff"] = {"supported": False}
        else:
            cutoff = args.cutoff_deadline or max(10.0, round(first["wall_s"] / 4))
            # A folder and a state table of its own: nothing done by the runs above may count.
            rec = start(new_folder("cut"), create_table(dynamodb))
            folder = folders[-1]
            cut = stages.run(f"reconcile with a {cutoff} s deadline until complete", rec.until_complete, cutoff,
                             args.max_invocations)
            rec.stop()
            listing, bookkeeping = our_files(stages.run("list the folder (smbclient)", share.files, folder, args.smb_timeout))
            check(compare(listing, expected, "after the cut-off reconciles"))
            if cut["copied"] != len(expected):
                check([f"the cut-off reconciles copied {cut['copied']} in all for {len(expected)} objects "
                       "(more means re-copying)"])
            if cut["invocations"] < 2:
                check([f"a {cutoff} s deadline did not cut the reconcile off (one invocation did it all): "
                       "pass a shorter --cutoff-deadline"])
            if not cut["all_within_deadline"]:
                check(["a cut-off invocation answered after its deadline"])
            cut.update({"supported": True, "deadline_s": cutoff, "objects": len(expected), "files_on_share": len(listing)})
            result["cutoff"] = cut
            print(f"N={n:,}: cut off at {cutoff} s: {cut['invocations']} invocations, {cut['wall_s']:.1f} s in all, "
                  f"copied {cut['copied']:,} for {len(expected):,} objects, peak RSS {cut['peak_rss_mib']} MiB "
                  f"(per invocation, reset between them: {rec.hwm_reset_works})", flush=True)
        result["moto_rss_end_mib"] = round(proc_status_kib(moto.process.pid, "VmRSS") / 1024)
    finally:
        for r in reconcilers:
            r.stop()
        for folder in folders:
            try:
                stages.run(f"deltree {folder}", share.deltree, folder, args.smb_timeout)
            except (BenchFailure, subprocess.TimeoutExpired) as e:
                log(f"could not remove {folder}: {e}")
        moto.stop()
        result["stage_s"] = stages.seconds
        for name, s in stages.seconds.items():
            print(f"N={n:,}:   stage {name}: {s} s")


def slope(results: list[dict], stage: str) -> dict | None:
    have = [r for r in results if stage in r and "peak_rss_mib" in r[stage]]
    if len(have) < 2:
        return None
    small, big = min(have, key=lambda r: r["n"]), max(have, key=lambda r: r["n"])
    if big["n"] == small["n"]:
        return None
    per_object = (big[stage]["peak_rss_mib"] - small[stage]["peak_rss_mib"]) * MIB / (big["n"] - small["n"])
    # A negative slope is noise (the allocator, the kernel's page accounting): memory that does
    # not grow with N is projected flat, never below what was measured.
    projected = big[stage]["peak_rss_mib"] + max(0.0, per_object) * (1_000_000 - big["n"]) / MIB
    return {"from_n": small["n"], "to_n": big["n"], "bytes_per_object": round(per_object),
            "projected_1m_mib": round(projected, 1)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", nargs="*", type=int)
    parser.add_argument("--quick", action="store_true", help="N = 1,000 and 2,000 (about a minute)")
    parser.add_argument("--profile", default="release", choices=["release", "debug"])
    parser.add_argument("--binary", type=Path, help="measure this bootstrap instead of target/<profile>/sync-content")
    parser.add_argument("--parallelism", type=int, default=TEMPLATE_PARALLELISM)
    parser.add_argument("--deadline", type=float, default=TEMPLATE_TIMEOUT_S,
                        help="seconds from invocation to the deadline (the template's Timeout)")
    parser.add_argument("--cutoff-deadline", type=float, help="default: a quarter of the first run's wall time, >= 10 s")
    parser.add_argument("--invoke-timeout", type=float, default=3600, help="give up on one invocation after this")
    parser.add_argument("--max-invocations", type=int, default=100)
    parser.add_argument("--smb-timeout", type=float, default=1800, help="bound on one smbclient listing or deltree")
    parser.add_argument("--put-threads", type=int, default=16)
    parser.add_argument("--sdk-timeout", type=float, default=120,
                        help="AWS SDK attempt timeout for the bootstrap (operation: 3x); 0: the function's defaults")
    args = parser.parse_args(argv)
    ns = args.n or ([1000, 2000] if args.quick else [10_000, 100_000])
    if any(n < 100 for n in ns):
        parser.error("N must be at least 100 (the drift is 1 %)")
    given = args.binary is not None
    args.binary = args.binary or binary("sync-content", profile=args.profile)
    digest = hashlib.sha256(args.binary.read_bytes()).hexdigest()[:12]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"functions/sync-content reconcile, {'given' if given else args.profile} bootstrap {args.binary} "
          f"(sha256 {digest}, built {time.strftime('%Y-%m-%d %H:%M', time.localtime(args.binary.stat().st_mtime))}, "
          f"HEAD {head}); PARALLELISM {args.parallelism}, deadline {args.deadline} s, "
          f"SDK timeouts {sdk_timeouts(args.sdk_timeout) or 'the defaults'}; moto (own server per N) + Samba on loopback",
          flush=True)

    # SIGTERM (a CI timeout, `kill`) must still run the cleanup below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    runtime = RuntimeApi()
    share = Share(work)
    failures: list[str] = []
    results = []
    try:
        for n in ns:
            results.append({})
            try:
                bench_one(n, args, runtime, share, failures, results[-1])
            except Exception as e:  # the next N, and the figures so far, still count
                log(f"N={n}: stopped: {type(e).__name__}: {e}")
                failures.append(f"N={n}: stopped: {type(e).__name__}: {e}")
    finally:
        runtime.close()
        shutil.rmtree(work, ignore_errors=True)

    figures = {"profile": args.profile, "binary_sha256": digest, "head": head, "parallelism": args.parallelism,
               "deadline_s": args.deadline, "sdk_timeouts": sdk_timeouts(args.sdk_timeout), "runs": {}, "targets": {}}
    for r in results:
        for stage in ("empty", "drift", "cutoff"):
            if isinstance(r.get(stage), dict):
                r[stage].pop("copied_names", None)
                r[stage].pop("removed_names", None)
        figures["runs"][str(r.get("n"))] = r
    def peaks(r: dict) -> dict[str, float]:
        return {stage: r[stage]["peak_rss_mib"] for stage in ("empty", "drift", "cutoff")
                if "peak_rss_mib" in r.get(stage, {})}

    print("peak RSS of the bootstrap per reconcile (MiB): " + "; ".join(
        f"N={r['n']:,}: " + ", ".join(f"{stage} {mib}" for stage, mib in peaks(r).items()) for r in results if peaks(r)))
    worst_projection = None
    for stage in ("empty", "drift"):
        s = slope(results, stage)
        figures[f"slope_{stage}"] = s
        if s:
            print(f"slope ({stage} folder run, N={s['from_n']:,} -> {s['to_n']:,}): {s['bytes_per_object']:,} bytes/object; "
                  f"projected at 1,000,000: {s['projected_1m_mib']:,} MiB")
            worst_projection = max(worst_projection or 0, s["projected_1m_mib"])
    at_100k = next((r for r in results if r.get("n") == 100_000 and peaks(r)), None)
    if at_100k:
        peak = max(peaks(at_100k).values())
        met = peak <= TARGET_MIB
        figures["targets"]["rss_at_100k"] = {"mib": peak, "target_mib": TARGET_MIB, "met": met}
        print(f"target: peak RSS <= {TARGET_MIB} MiB at 100,000: {peak} MiB: {'met' if met else 'MISSED'}")
    else:
        print(f"target: peak RSS <= {TARGET_MIB} MiB at 100,000: not measured in this run")
    if worst_projection is not None:
        met = worst_projection <= TARGET_MIB
        figures["targets"]["rss_projected_1m"] = {"mib": worst_projection, "target_mib": TARGET_MIB, "met": met}
        print(f"target: projected peak RSS <= {TARGET_MIB} MiB at 1,000,000: {worst_projection:,} MiB: "
              f"{'met' if met else 'MISSED'}")
    drift_exact = [r["n"] for r in results if "drift" in r and r["drift"]["copied"] == r["drift"]["expected_copied"]
                   and r["drift"]["removed"] == r["drift"]["expected_removed"]]
    figures["targets"]["drift_touches_only_drift"] = {"met_at": drift_exact}
    cut = [r["cutoff"] for r in results if "cutoff" in r]
    figures["targets"]["resume_without_recopy"] = (
        "not supported by this build" if cut and not any(c.get("supported") for c in cut) else
        {"met_at": [r["n"] for r in results if r.get("cutoff", {}).get("supported")
                    and r["cutoff"]["copied"] == r["cutoff"]["objects"]]})
    figures["failures"] = failures
    figures["ok"] = not failures
    for f in failures:
        print(f"FAILED: {f}")
    print(json.dumps(figures, separators=(",", ":")))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

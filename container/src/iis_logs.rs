//! IIS's request logs on the container's stdout, which the awslogs driver ships to CloudWatch.
//!
//! IIS does not write its W3C logs to stdout: HTTP.sys appends them to files, one folder per site
//! (`%SystemDrive%\inetpub\logs\LogFiles\W3SVC<siteId>\u_ex<yymmdd>.log`, UTF-8, a new file each
//! day by default). With `SMB_IIS_LOG_DIR` set, the entrypoint follows every `*.log` under that
//! folder while the main process runs and logs each new line as one JSON line (`message` `iis`,
//! `site` the folder, `line` the W3C line as written), through the same logger as everything else
//! it prints. Nothing is downloaded into the image for it, and nothing runs besides the
//! entrypoint itself.
//!
//! The follower polls (every [`POLL_INTERVAL`]) rather than watching: HTTP.sys writes in bursts
//! anyway (it buffers entries, see the README), and a poll needs no Windows API beyond reading
//! files. Its rules:
//! - files that exist when it starts are followed from their current end: history from an
//!   earlier run of the image (or the build) is not replayed; a file that appears later (the next
//!   day's, a new site's) is read from its beginning;
//! - only whole lines are logged: a line HTTP.sys has not finished yet waits for its newline;
//! - `#` directive lines (`#Software`, `#Fields`, ... which HTTP.sys repeats whenever it reopens a
//!   file) and blank lines are skipped;
//! - a file that shrinks, or whose first bytes change (deleted and written again), is read again
//!   from its beginning;
//! - memory is bounded: a line longer than [`MAX_LINE_BYTES`] is cut there (and says so), at most
//!   [`MAX_FILES`] files are followed, each poll reads at most [`READ_BUDGET`] of a file;
//! - it never stops or slows the main process: it runs on a thread of its own, and a folder or
//!   file it cannot read is a warning, logged once (and again only after it was readable).
//!
//! When the main process exits, [`stop`] reads what is left (after asking HTTP.sys, on Windows, to
//! write out what it still buffers) before the entrypoint exits, so the last requests before a
//! stop are not lost.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often the folder is looked at.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// IIS's own limit on a log line (`maxLogLineLength`, 64 KiB by default): a longer line is
/// logged cut to this many bytes, with `truncated: true`.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Each day adds one file per site and a task's filesystem starts empty, so this is years of
/// logs; past it, new files are not followed (and a warning says so).
pub const MAX_FILES: usize = 1024;
/// At most this much of one file is read per poll; the rest waits for the next one.
pub const READ_BUDGET: u64 = 8 * 1024 * 1024;
/// How far below the folder files are looked for: `W3SVC1\u_ex.log` is one level down.
pub const MAX_DEPTH: usize = 3;
/// The first bytes of a file, kept to tell a file from another written at the same path. IIS
/// starts every file with `#Software`, `#Version` and `#Date` (to the second) directives.
const HEAD_BYTES: usize = 256;
/// How long the final read after the main process exited may take.
const FINAL_DRAIN: Duration = Duration::from_secs(10);
const CHUNK: usize = 64 * 1024;

/// Where the follower's findings go: the JSON logger in the entrypoint, a list in the tests.
pub trait Sink {
    /// One W3C line of the site `site`. `truncated`: cut at [`MAX_LINE_BYTES`]; `partial`: the
    /// end of a file that never got its newline, logged at the final stop.
    fn line(&mut self, site: &str, line: &str, truncated: bool, partial: bool);
    /// A problem, already deduplicated: reported once until the thing works again.
    fn warn(&mut self, path: &Path, what: &'static str, error: &str);
    /// Something worth one line that is not a problem (a file read again from its start).
    fn info(&mut self, path: &Path, what: &'static str);
}

/// One followed file.
#[derive(Debug)]
struct Tracked {
    /// The site folder: the name of the file's parent directory (`W3SVC1`).
    site: String,
    /// Bytes of the file already read.
    offset: u64,
    /// Its size at the latest scan.
    size: u64,
    /// The first bytes of the file as last read (up to [`HEAD_BYTES`]).
    head: Vec<u8>,
    /// The start of a line still waiting for its newline.
    pending: Vec<u8>,
    /// `pending` reached [`MAX_LINE_BYTES`]: the rest of the line is dropped.
    overflow: bool,
    /// The file ended mid-line when the follower started: that line's end is history too.
    skip_first: bool,
    /// Seen in the latest scan; a file gone from the folder is forgotten.
    seen: bool,
    /// Scans in a row that found it the same size.
    idle: u32,
}

impl Tracked {
    fn new(site: String) -> Self {
        Self {
            site,
            offset: 0,
            size: 0,
            head: Vec::new(),
            pending: Vec::new(),
            overflow: false,
            skip_first: false,
            seen: true,
            idle: 0,
        }
    }

    fn restart(&mut self) {
        self.offset = 0;
        self.head.clear();
        self.pending.clear();
        self.overflow = false;
        self.skip_first = false;
    }
}

/// The follower's state, without the thread: every call does one bounded amount of work.
#[derive(Debug)]
pub struct Tailer {
    root: PathBuf,
    files: BTreeMap<PathBuf, Tracked>,
    /// Finished files let go of at [`MAX_FILES`]: never followed again (they would be read
    /// again from their start).
    forgotten: std::collections::BTreeSet<PathBuf>,
    /// Scans a file must stay the same size before it may be forgotten (an hour of polls).
    forget_after_idle: u32,
    /// What was warned about and has not worked since (a path with a reason).
    warned: HashSet<(PathBuf, &'static str)>,
    /// No scan has run yet: files found by the first are history.
    first_scan: bool,
    buf: Vec<u8>,
}

impl Tailer {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            files: BTreeMap::new(),
            forgotten: std::collections::BTreeSet::new(),
            forget_after_idle: 3600,
            warned: HashSet::new(),
            first_scan: true,
            buf: vec![0; CHUNK],
        }
    }

    /// Number of files followed.
    pub fn followed(&self) -> usize {
        self.files.len()
    }

    /// Look for files and read what was appended to each since the last poll (the first poll only
    /// notes where each existing file ends). Returns how many bytes were read.
    pub fn poll(&mut self, sink: &mut dyn Sink) -> u64 {
        let first = std::mem::replace(&mut self.first_scan, false);
        for tracked in self.files.values_mut() {
            tracked.seen = false;
        }
        let mut found = Vec::new();
        let root = self.root.clone();
        self.scan(&root, 0, &mut found, sink);
        // A forgotten file that is gone is forgotten for good: one made again at its path is new.
        if !self.forgotten.is_empty() {
            let present: std::collections::BTreeSet<&PathBuf> =
                found.iter().map(|(p, _)| p).collect();
            self.forgotten.retain(|p| present.contains(p));
        }
        for (path, size) in found {
            if self.forgotten.contains(&path) {
                continue;
            }
            if let Some(tracked) = self.files.get_mut(&path) {
                tracked.seen = true;
                tracked.idle = if size == tracked.size {
                    tracked.idle.saturating_add(1)
                } else {
                    0
                };
                tracked.size = size;
                continue;
            }
            if self.files.len() >= MAX_FILES && !self.forget_a_finished_file() {
                self.warn_once(
                    sink,
                    &root,
                    "too many log files: new ones are not followed",
                    "",
                );
                continue;
            }
            let site = path
                .parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut tracked = Tracked::new(site);
            tracked.size = size;
            if first {
                self.start_at_end(&path, &mut tracked, sink);
            }
            self.files.insert(path, tracked);
        }
        self.files.retain(|_, tracked| tracked.seen);
        if first {
            return 0;
        }
        const WHAT: &str = "cannot read an IIS log file";
        let mut read = 0;
        for (path, tracked) in &mut self.files {
            match read_file(path, tracked, &mut self.buf, sink) {
                Ok(n) => {
                    read += n;
                    if !self.warned.is_empty() {
                        self.warned.remove(&(path.clone(), WHAT));
                    }
                }
                // Removed since the scan: the next one forgets it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    if self.warned.insert((path.clone(), WHAT)) {
                        sink.warn(path, WHAT, &e.to_string());
                    }
                }
            }
        }
        read
    }

    /// Log the end of every file that never got its newline: nothing more will be read.
    pub fn finish(&mut self, sink: &mut dyn Sink) {
        for tracked in self.files.values_mut() {
            if !tracked.pending.is_empty() && !tracked.skip_first {
                let pending = std::mem::take(&mut tracked.pending);
                emit(sink, &tracked.site, &pending, tracked.overflow, true);
            }
            tracked.pending.clear();
            tracked.overflow = false;
        }
    }

    fn warn_once(&mut self, sink: &mut dyn Sink, path: &Path, what: &'static str, error: &str) {
        if self.warned.insert((path.to_path_buf(), what)) {
            sink.warn(path, what, error);
        }
    }

    /// It works again: a later failure is news again.
    fn clear_warning(&mut self, path: &Path, what: &'static str) {
        if !self.warned.is_empty() {
            self.warned.remove(&(path.to_path_buf(), what));
        }
    }

    /// Every log file under `dir`, with its size. The size comes from the path, not from the
    /// directory listing: on NTFS a listing may show a size that lags behind a file another
    /// process keeps open for writing, as HTTP.sys does.
    fn scan(
        &mut self,
        dir: &Path,
        depth: usize,
        found: &mut Vec<(PathBuf, u64)>,
        sink: &mut dyn Sink,
    ) {
        const UNREADABLE: &str = "cannot list an IIS log folder";
        // Not the reading's reason: a file one can look at but not open would otherwise clear
        // and raise the same warning on every poll.
        const UNSEEN: &str = "cannot look at an IIS log file";
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => {
                self.clear_warning(dir, UNREADABLE);
                entries
            }
            // IIS makes a site's folder when it logs the site's first request: not there yet
            // is normal, and so is the root before that on some images.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                self.warn_once(sink, dir, UNREADABLE, &e.to_string());
                return;
            }
        };
        // Sorted, so that one poll reads files in a stable order (W3SVC1 before W3SVC2).
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            // Follows symbolic links; a regular file or a folder, anything else (a pipe, whose
            // open would block) is ignored.
            let meta = match std::fs::metadata(&path) {
                Ok(meta) => {
                    self.clear_warning(&path, UNSEEN);
                    meta
                }
                Err(e) => {
                    if is_log(&path) {
                        self.warn_once(sink, &path, UNSEEN, &e.to_string());
                    }
                    continue;
                }
            };
            if meta.is_dir() {
                if depth + 1 < MAX_DEPTH {
                    self.scan(&path, depth + 1, found, sink);
                }
            } else if meta.is_file() && is_log(&path) {
                found.push((path, meta.len()));
            }
        }
    }

    /// A file that was there before the main process: follow it from its end (and from the end
    /// of the line it ends in, if it ends mid-line).
    fn start_at_end(&mut self, path: &Path, tracked: &mut Tracked, sink: &mut dyn Sink) {
        let result = (|| -> std::io::Result<()> {
            let mut file = File::open(path)?;
            let len = tracked.size;
            tracked.head = read_head(&mut file, len)?;
            if len > 0 {
                let mut last = [0u8; 1];
                file.seek(SeekFrom::Start(len - 1))?;
                file.read_exact(&mut last)?;
                tracked.skip_first = last[0] != b'\n';
            }
            tracked.offset = len;
            Ok(())
        })();
        if let Err(e) = result {
            // Still history: where it ends is all we need, and the scan knows that.
            tracked.offset = tracked.size;
            self.warn_once(sink, path, "cannot read an IIS log file", &e.to_string());
        }
    }
}

fn is_log(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("log"))
}

fn read_head(file: &mut File, len: u64) -> std::io::Result<Vec<u8>> {
    let want = usize::try_from(len.min(HEAD_BYTES as u64)).unwrap_or(HEAD_BYTES);
    let mut head = vec![0; want];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut head)?;
    Ok(head)
}

/// Read what was appended to `path` since `tracked.offset` (at most [`READ_BUDGET`]).
fn read_file(
    path: &Path,
    tracked: &mut Tracked,
    buf: &mut [u8],
    sink: &mut dyn Sink,
) -> std::io::Result<u64> {
    let len = tracked.size;
    if len < tracked.offset {
        sink.info(path, "IIS log file shrank: reading it again from its start");
        tracked.restart();
    }
    if len == tracked.offset {
        return Ok(0);
    }
    let mut file = File::open(path)?;
    let head = read_head(&mut file, len)?;
    let same = head.len().min(tracked.head.len());
    if head[..same] != tracked.head[..same] {
        sink.info(path, "IIS log file replaced: reading it from its start");
        tracked.restart();
    }
    if head.len() > tracked.head.len() {
        tracked.head = head;
    }
    file.seek(SeekFrom::Start(tracked.offset))?;
    let mut left = (len - tracked.offset).min(READ_BUDGET);
    let mut read_total = 0u64;
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        consume(tracked, &buf[..n], sink);
        tracked.offset += n as u64;
        read_total += n as u64;
        left -= n as u64;
    }
    Ok(read_total)
}

/// Split `bytes` into lines, keeping an unfinished one in `tracked.pending`.
fn consume(tracked: &mut Tracked, bytes: &[u8], sink: &mut dyn Sink) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let (piece, complete) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], true),
            None => (rest, false),
        };
        rest = if complete {
            &rest[piece.len() + 1..]
        } else {
            &[]
        };
        let room = MAX_LINE_BYTES.saturating_sub(tracked.pending.len());
        if piece.len() > room {
            tracked.overflow = true;
        }
        tracked
            .pending
            .extend_from_slice(&piece[..piece.len().min(room)]);
        if complete {
            let line = std::mem::take(&mut tracked.pending);
            let truncated = std::mem::replace(&mut tracked.overflow, false);
            if std::mem::replace(&mut tracked.skip_first, false) {
                continue;
            }
            emit(sink, &tracked.site, &line, truncated, false);
        }
    }
}

fn emit(sink: &mut dyn Sink, site: &str, raw: &[u8], truncated: bool, partial: bool) {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    // A byte-order mark, should a file start with one, is not part of the first line.
    let raw = raw.strip_prefix("\u{feff}".as_bytes()).unwrap_or(raw);
    if raw.iter().all(u8::is_ascii_whitespace) || raw.first() == Some(&b'#') {
        return;
    }
    // UTF-8 is IIS's default (logInUTF8); anything else shows as U+FFFD rather than being lost.
    sink.line(site, &String::from_utf8_lossy(raw), truncated, partial);
}

/// The entrypoint's sink: one JSON line per IIS line, on stdout with everything else.
#[derive(Debug, Default)]
pub struct Logger;

impl Sink for Logger {
    fn line(&mut self, site: &str, line: &str, truncated: bool, partial: bool) {
        // The password is not redacted here: by design the entrypoint holds no copy of it once
        // the main process runs (see `prepare` in lib.rs), and keeping one only to search IIS's
        // lines for it would undo that.
        match (truncated, partial) {
            (false, false) => tracing::info!(site, line, "iis"),
            _ => tracing::info!(site, line, truncated, partial, "iis"),
        }
    }

    fn warn(&mut self, path: &Path, what: &'static str, error: &str) {
        tracing::warn!(path = %path.display(), error, "{what}; IIS's own log files are unaffected");
    }

    fn info(&mut self, path: &Path, what: &'static str) {
        tracing::info!(path = %path.display(), "{what}");
    }
}

/// The follower thread of one run.
#[derive(Debug)]
pub struct Follower {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Follower {
    /// Note where the existing files end (now, before the main process can write), then follow
    /// `root` on a thread of its own. `None` (and a warning) if the thread cannot start.
    pub fn start(root: &Path) -> Option<Self> {
        let mut tailer = Tailer::new(root);
        tailer.poll(&mut Logger);
        let (stop, stopped) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("iis-logs".into())
            .spawn(move || run(tailer, &stopped));
        match spawned {
            Ok(thread) => {
                tracing::info!(
                    folder = %root.display(),
                    poll_ms = POLL_INTERVAL.as_millis() as u64,
                    "following IIS's log files: each new line is logged with message \"iis\""
                );
                Some(Self { stop, thread })
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not start following IIS's log files; IIS runs without them on stdout");
                None
            }
        }
    }

    /// Read what is left, then end the thread.
    pub fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::warn!("the IIS log follower failed; its last lines may be missing");
        }
    }
}

impl Tailer {
    /// Make room for a new file (today's log) at [`MAX_FILES`]: forget the oldest file that is
    /// read to its end, has not grown for [`Tailer::forget_after_idle`] scans (an hour) and is not
    /// the newest of its folder. IIS names its files by date (`u_exYYMMDD.log`) and writes only
    /// the newest, so such a file is finished (what it might still get would not be followed).
    /// False: none qualifies.
    fn forget_a_finished_file(&mut self) -> bool {
        let idle = self.forget_after_idle;
        let finished = self
            .files
            .iter()
            .zip(self.files.keys().skip(1))
            .find(|((path, t), next)| {
                t.offset >= t.size
                    && t.pending.is_empty()
                    && t.idle >= idle
                    && path.parent() == next.parent()
            })
            .map(|((path, _), _)| path.clone());
        match finished {
            Some(path) => {
                self.files.remove(&path);
                self.forgotten.insert(path);
                true
            }
            None => false,
        }
    }
}

fn run(mut tailer: Tailer, stopped: &mpsc::Receiver<()>) {
    let mut sink = Logger;
    loop {
        tailer.poll(&mut sink);
        match stopped.recv_timeout(POLL_INTERVAL) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    flush_http_sys();
    // Until a poll finds nothing new (a file may hold more than one poll's budget), within a
    // bound: the task is stopping.
    // HTTP.sys may still be writing what the flush asked for when a poll first finds nothing: a
    // second look after a moment before the end.
    let until = Instant::now() + FINAL_DRAIN;
    while Instant::now() < until {
        if tailer.poll(&mut sink) == 0 {
            std::thread::sleep(Duration::from_millis(500));
            if tailer.poll(&mut sink) == 0 {
                break;
            }
        }
    }
    tailer.finish(&mut sink);
}

/// HTTP.sys keeps entries in memory and writes them out in batches; ask it to write them now
/// (`netsh http flush logbuffer`), so that the final read finds them. Windows only.
fn flush_http_sys() {
    if !cfg!(windows) {
        return;
    }
    let mut child = match std::process::Command::new("netsh")
        .args(["http", "flush", "logbuffer"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!(error = %e, "could not run netsh to flush HTTP.sys's log buffer; the last IIS lines may be missing");
            return;
        }
    };
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return,
            Ok(Some(status)) => {
                tracing::warn!(
                    exit_code = status.code(),
                    "netsh http flush logbuffer failed; the last IIS lines may be missing"
                );
                return;
            }
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                tracing::warn!(
                    "netsh http flush logbuffer did not finish; the last IIS lines may be missing"
                );
                return;
            }
        }
    }
}

/// The run's follower, where the Windows console handler can reach it: on a close or shutdown
/// event that handler exits the process itself once the main process has exited.
static ACTIVE: Mutex<Option<Follower>> = Mutex::new(None);

/// Start following `root` for this run (see [`Follower::start`]).
pub fn start(root: &Path) {
    let follower = Follower::start(root);
    let mut active = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(previous) = std::mem::replace(&mut *active, follower) {
        previous.stop();
    }
}

/// Stop the run's follower, after reading what is left; nothing if none runs. The lock is held
/// throughout, so a second caller (the console handler, racing the entrypoint's own exit) waits
/// for the final lines rather than exiting over them.
pub fn stop() {
    let mut active = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(follower) = active.take() {
        follower.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A folder of its own under the system's temporary folder, removed afterwards.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "fargate-smb-iis-logs-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        fn site(&self, name: &str) -> PathBuf {
            let dir = self.0.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            dir
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[derive(Debug, Default)]
    struct Collected {
        lines: Vec<(String, String)>,
        flagged: Vec<(String, bool, bool)>,
        warnings: Vec<(PathBuf, &'static str)>,
        infos: Vec<&'static str>,
    }

    impl Sink for Collected {
        fn line(&mut self, site: &str, line: &str, truncated: bool, partial: bool) {
            self.lines.push((site.into(), line.into()));
            self.flagged.push((line.into(), truncated, partial));
        }
        fn warn(&mut self, path: &Path, what: &'static str, _error: &str) {
            self.warnings.push((path.to_path_buf(), what));
        }
        fn info(&mut self, _path: &Path, what: &'static str) {
            self.infos.push(what);
        }
    }

    impl Collected {
        fn take(&mut self) -> Vec<String> {
            self.flagged.clear();
            std::mem::take(&mut self.lines)
                .into_iter()
                .map(|(_, l)| l)
                .collect()
        }
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    const HEADER: &str = "#Software: Microsoft Internet Information Services 10.0\r\n#Version: 1.0\r\n#Date: 2025-01-02 03:04:05\r\n#Fields: date time s-ip cs-method cs-uri-stem sc-status\r\n";

    #[test]
    fn history_is_skipped_and_appended_lines_follow_in_order() {
        let dir = TempDir::new();
        let log = dir.site("W3SVC1").join("u_ex250102.log");
        append(&log, HEADER);
        append(&log, "2025-01-02 03:04:05 10.0.0.1 GET /old 200\r\n");
        let mut tailer = Tailer::new(&dir.0);
        let mut out = Collected::default();
        assert_eq!(tailer.poll(&mut out), 0);
        assert_eq!(tailer.followed(), 1);
        append(&log, "2025-01-02 03:04:06 10.0.0.1 GET /a 200\r\n");
        append(&log, "2025-01-02 03:04:07 10.0.0.1 GET /b 404\r\n");
        tailer.poll(&mut out);
        assert_eq!(
            out.lines,
            [
                (
                    "W3SVC1".to_string(),
                    "2025-01-02 03:04:06 10.0.0.1 GET /a 200".to_string()
                ),
                (
                    "W3SVC1".to_string(),
                    "2025-01-02 03:04:07 10.0.0.1 GET /b 404".to_string()
                ),
            ]
        );
        out.lines.clear();
        // Nothing new: nothing logged twice.
        assert_eq!(tailer.poll(&mut out), 0);
        assert!(out.lines.is_empty());
        append(&log, "2025-01-02 03:04:08 10.0.0.1 GET /c 200\r\n");
        tailer.poll(&mut out);
        assert_eq!(out.take(), ["2025-01-02 03:04:08 10.0.0.1 GET /c 200"]);
        assert!(out.warnings.is_empty());
    }

    #[test]
    fn at_the_file_cap_a_finished_file_makes_room_for_todays() {
        let dir = TempDir::new();
        let site = dir.site("W3SVC1");
        for day in 0..MAX_FILES {
            append(
                &site.join(format!("u_ex{day:06}.log")),
                "2025-01-02 old 200\r\n",
            );
        }
        let mut tailer = Tailer::new(&dir.0);
        tailer.forget_after_idle = 1;
        let mut out = Collected::default();
        tailer.poll(&mut out);
        assert!(out.take().is_empty(), "history is not shipped");
        // A file that just grew is not let go of: one scan with nothing new first.
        tailer.poll(&mut out);
        // Today's file, at the cap: the oldest finished one is forgotten, the new one followed.
        let today = site.join(format!("u_ex{MAX_FILES:06}.log"));
        append(&today, "2025-01-03 new 200\r\n");
        tailer.poll(&mut out);
        assert_eq!(out.take(), ["2025-01-03 new 200"]);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        assert_eq!(tailer.files.len(), MAX_FILES);
        assert!(!tailer.files.contains_key(&site.join("u_ex000000.log")));
        // The newest file of a folder is never the one forgotten: still followed.
        append(&today, "2025-01-03 again 200\r\n");
        tailer.poll(&mut out);
        assert_eq!(out.take(), ["2025-01-03 again 200"]);
    }

    #[test]
    fn a_partial_line_waits_for_its_newline() {
        let dir = TempDir::new();
        let log = dir.site("W3SVC1").join("u_ex250102.log");
        append(&log, HEADER);
        let mut tailer = Tailer::new(&dir.0);
        let mut out = Collected::default();
        tailer.poll(&mut out);
        append(&log, "2025-01-02 03:04:06 GET /a 2");
        tailer.poll(&mut out);
        assert!(out.lines.is_empty(), "{:?}", out.lines);
        append(&log, "00\r\n2025-01-02 03:04:07 GET");
        tailer.poll(&mut out);
        assert_eq!(out.take(), ["2025-01-02 03:04:06 GET /a 200"]);
        append(&log, " /b 200\n");
        tailer.poll(&mut out);
        assert_eq!(out.take(), ["2025-01-02 03:04:07 GET /b 200"]);
    }

    #[test]
    fn a_file_that_ends_mid_line_at_start_skips_that_line_s_end() {
        let dir = TempDir::new();
        let log = dir.site("W3SVC1").join("u_ex250102.log");
        append(&log, "2025-01-02 03:04:05 GET /old-and-unfin");
        let mut tailer = Tailer::new(&dir.0);
        let mut out = Collected::default();
        tailer.poll(&mut out);
        append(&log, "ished 200\r\n2025-01-02 03:04:06 GET /new 200\r\n");
        tailer.poll(&mut out);
        assert_eq!(out.take(), ["2025-01-02 03:04:06 GET /new 200"]);
    }

    #[test]
    fn new_files_and_new_sites_are_read_from_their_beginning() {
        let dir = TempDir::new();
        let day1 = dir.site("W3SVC1").join("u_ex250102.log");
        append(&day1, HEADER);
        append(&day1, "2025-01-02 23:59:59 GET /old 200\r\n");
        let mut tailer = Tailer::new(&dir.0);
        let mut out = Collected::default();
        tailer.poll(&mut out);
        // Rollover: the next day's file, and a second site's first file (its folder too).
        let day2 = dir.0.join("W3SVC1").join("u_ex250103.log");
        append(&day2, HEADER);
        append(&day2, "2025-01-03 00:00:01 GET /day2 200\r\n");
        let site2 = dir.site("W3SVC2").join("u_ex250103.log");
        append(&site2, HEADER);
        append(&site2, "2025-01-03 00:00:02 GET /site2 200\r\n");
        append(&day1, "2025-01-02 23:59:59 GET /late 200\r\n");
        tailer.poll(&mut out);
        assert_eq!(
            out.lines,
            [
                (
                    "W3SVC1".to_string(),
                    "2025-01-02 23:59:59 GET /late 200".to_string()
                ),
                (
                    "W3SVC1".to_string(),
                    "2025-01-03 00:00:01 GET /day2 200".to_string()
                ),
                (
                    "W3SVC2".to_string(),
                    "2025-01-03 00:00:02 GET /site2 200".to_string()
                ),
            ]
        );
        assert_eq!(tailer.followed(), 3);
        // A file removed from the folder is forgotten.
        std::fs::remove_file(&day1).unwrap();
        tailer.poll(&mut out);
        assert_eq!(tailer.followed(), 2);
    }

    #[test]
    fn a_missing_root_is_waited_for_quietly() {
        let dir = TempDir::new();
        let root = dir.0.join("LogFiles");
        let mut tailer = Tailer::new(&root);
        let mut out = Collected::default();
        tailer.poll(&mut out);
        tailer.poll(&mut out);
        let log = root.join("W3SVC1").join("u_ex250102.log");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        append(&log, HEADER);
        append(&log, "2025-01-02 03:04:05 GET /first 200\r\n");
        tailer.poll(&mut out);
        assert_eq!(out.take(), ["2025-01-02 03:04:05 GET /first 200"]);
        assert!(out.warnings.is_empty());
    }

    #[test]
    fn directive_and_blank_lines_are_skipped() {
        let dir = TempDir::new();
        let log = dir.site("W3SVC1").join("u_ex250102.log");
        let mut tailer = Tailer::new(&dir.0);
        let mut out = Collected::default();
        tailer.poll(&mut out);
        // A byte-order mark before the first directive, and the directives HTTP.sys writes
        // again when it reopens a file after 15 idle minutes.
        append(&log, "\u{feff}");
        append(&log, HEADER);
        append(&log, "2025-01-02 03:04:05 GET /a 200\r\n\r\n   \r\n");
        append(&log, HEADER);
        append(&log, "2025-01-02 03:20:00 GET /b 200\r\n");
        tailer.poll(&mut out);
        assert_eq!(
            out.take(),
            [
                "2025-01-02 03:04:05 GET /a 200",
                "2025-01-02 03:20:00 GET /b 200"
            ]
        );
    }

    #[test]
    fn a_truncated_file_is_read_again_from_its_start() {
        let dir = TempDir::new();
        let log = dir.site("W3SVC1").join("u_ex250102.log");
        append(&log, HEADER);
        append(&log, "2025-01-02 03:04:05 GET /old 200\r\n");
        let mut tailer = Tailer::new(&dir.0);
        let mut out = Collected::default();
        tailer.poll(&mut out);
        std::fs::write(&log, "2025-01-02 04:00:00 GET /x 200\r\n").unwrap();
        tailer.poll(&mut out);
        assert_eq!(out.take(), ["2025-01-02 04:00:00 GET /x 200"]);
        assert_eq!(
            out.infos,
            ["IIS log file shrank: reading it again from its start"]
        );
    }

    #[test]
    fn a_replaced_file_is_read_from_its_start_even_when_longer() {
        let dir = TempDir::new();
        let log = dir.site("W3SVC1").join("u_ex250102.log");
        append(&log, HEADER);
        append(&log, "2025-01-02 03:04:05 GET /old 200\r\n");
        let mut tailer = Tailer::new(&dir.0);
        let mut out = Collected::default();
        tailer.poll(&mut out);
        std::fs::remove_file(&log).unwrap();
        let other = HEADER.replace("03:04:05", "03:09:09");
        let lines: String = (0..5)
            .map(|i| format!("2025-01-02 03:09:1{i} GET /new{i} 200\r\n"))
            .collect();
        std::fs::write(&log, format!("{other}{lines}")).unwrap();
        tailer.poll(&mut out);
        assert_eq!(out.take().len(), 5);
        assert_eq!(
            out.infos,
            ["IIS log file replaced: reading it from its start"]
        );
    }

    #[test]
    fn a_long_line_is_cut_and_says_so() {
        let dir = TempDir::new();
        let log = dir.site("W3SVC1").join("u_ex250102.log");
        let mut tailer = Tailer::new(&dir.0);
        let mut out = Collected::default();
        tailer.poll(&mut out);
        let long = "x".repeat(MAX_LINE_BYTES * 3);
        append(&log, &format!("{long}\r\nshort 200\r\n"));
        tailer.poll(&mut out);
        assert_eq!(out.flagged.len(), 2);
        assert_eq!(out.flagged[0].0.len(), MAX_LINE_BYTES);
        assert!(out.flagged[0].1, "truncated");
        assert_eq!(out.flagged[1], ("short 200".to_string(), false, false));
    }

    #[test]
    fn each_poll_reads_a_bounded_amount_and_the_rest_follows() {
        let dir = TempDir::new();
        let log = dir.site("W3SVC1").join("u_ex250102.log");
        let mut tailer = Tailer::new(&dir.0);
        let mut out = Collected::default();
        tailer.poll(&mut out);
        let line = format!("{}\n", "y".repeat(1023));
        let count = (READ_BUDGET as usize / line.len()) * 2 + 3;
        append(&log, &line.repeat(count));
        assert_eq!(tailer.poll(&mut out), READ_BUDGET);
        let mut polls = 1;
        while tailer.poll(&mut out) > 0 {
            polls += 1;
        }
        assert_eq!(polls, 3);
        assert_eq!(out.lines.len(), count);
    }

    #[test]
    fn the_end_without_a_newline_is_logged_at_the_finish() {
        let dir = TempDir::new();
        let log = dir.site("W3SVC1").join("u_ex250102.log");
        let mut tailer = Tailer::new(&dir.0);
        let mut out = Collected::default();
        tailer.poll(&mut out);
        append(
            &log,
            "2025-01-02 03:04:05 GET /a 200\r\n2025-01-02 03:04:06 GET /torn",
        );
        tailer.poll(&mut out);
        tailer.finish(&mut out);
        assert_eq!(
            out.flagged,
            [
                ("2025-01-02 03:04:05 GET /a 200".to_string(), false, false),
                ("2025-01-02 03:04:06 GET /torn".to_string(), false, true),
            ]
        );
    }

    #[cfg(unix)]
    #[test]
    fn an_unreadable_file_is_warned_about_once_and_the_others_still_follow() {
        let dir = TempDir::new();
        let site = dir.site("W3SVC1");
        let good = site.join("u_ex250102.log");
        append(&good, HEADER);
        let mut tailer = Tailer::new(&dir.0);
        let mut out = Collected::default();
        tailer.poll(&mut out);
        // A link to itself: every open fails (as root too, unlike a file without permissions).
        let bad = site.join("u_ex250103.log");
        std::os::unix::fs::symlink(&bad, &bad).unwrap();
        for i in 0..3 {
            append(&good, &format!("2025-01-02 03:04:0{i} GET /ok 200\r\n"));
            tailer.poll(&mut out);
        }
        assert_eq!(out.take().len(), 3);
        assert_eq!(
            out.warnings,
            [(bad.clone(), "cannot look at an IIS log file")]
        );
        // Readable again, then broken again: that is news again.
        std::fs::remove_file(&bad).unwrap();
        append(&bad, "2025-01-02 03:05:00 GET /new 200\r\n");
        tailer.poll(&mut out);
        assert_eq!(out.take(), ["2025-01-02 03:05:00 GET /new 200"]);
        std::fs::remove_file(&bad).unwrap();
        std::os::unix::fs::symlink(&bad, &bad).unwrap();
        tailer.poll(&mut out);
        assert_eq!(out.warnings.len(), 2);
    }

    #[test]
    fn the_number_of_files_followed_is_capped() {
        let dir = TempDir::new();
        let mut tailer = Tailer::new(&dir.0);
        let mut out = Collected::default();
        tailer.poll(&mut out);
        // One file per site folder: each is the newest of its folder, so none can be let go of.
        for i in 0..MAX_FILES + 5 {
            append(&dir.site(&format!("W3SVC{i}")).join("u_ex250102.log"), "");
        }
        tailer.poll(&mut out);
        tailer.poll(&mut out);
        assert_eq!(tailer.followed(), MAX_FILES);
        assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    }

    #[test]
    fn only_log_files_are_followed() {
        let dir = TempDir::new();
        let site = dir.site("W3SVC1");
        let mut tailer = Tailer::new(&dir.0);
        let mut out = Collected::default();
        tailer.poll(&mut out);
        append(&site.join("notes.txt"), "not a log\n");
        append(
            &site.join("U_EX250102.LOG"),
            "2025-01-02 03:04:05 GET /a 200\n",
        );
        tailer.poll(&mut out);
        assert_eq!(out.take(), ["2025-01-02 03:04:05 GET /a 200"]);
    }
}

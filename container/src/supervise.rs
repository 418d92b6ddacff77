//! Child processes: the environment they get, the short-lived Windows commands, and the main
//! process the entrypoint supervises until it exits.
//!
//! IIS's ServiceMonitor copies its own environment into every application pool, so whatever the
//! main process inherits, the web application can read. It therefore gets the container's
//! environment minus every credential variable — by name (in task-role mode the task role's
//! too, see `Config::withholds_task_role`), and any other variable that holds the password's
//! value or contains it.

use crate::actions::{EnvValue, Invocation};
use secrets::Secret;
use std::ffi::{OsStr, OsString};
use std::process::Stdio;
use std::time::Duration;

/// Windows compares environment variable names without regard to case; so must we, there.
fn same_name(a: &OsStr, b: &str) -> bool {
    if cfg!(windows) {
        a.to_string_lossy().eq_ignore_ascii_case(b)
    } else {
        a == OsStr::new(b)
    }
}

/// A password at least this long is looked for inside values too (a connection string
/// `Server=x;Password=...;`); a shorter one only as a whole value. Generated passwords have 32
/// characters; a substring match of an absurdly short one (one character is in half the
/// environment) would strip variables that merely share a letter with it.
pub const MIN_CONTAINED_PASSWORD_CHARS: usize = 8;

/// Why a variable was kept from the children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// A credential variable, or the task role's: expected, by configuration.
    Named,
    /// Its value is the password.
    EqualsPassword,
    /// Its value contains the password.
    ContainsPassword,
}

impl Removal {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Named => "a credential variable",
            Self::EqualsPassword => "its value is the password",
            Self::ContainsPassword => "its value contains the password",
        }
    }
}

/// The environment every child gets, and what was left out of it (names only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildEnv {
    pub vars: Vec<(OsString, OsString)>,
    pub removed: Vec<(String, Removal)>,
}

impl ChildEnv {
    /// One warning per variable removed for its value, naming it (never the value), and one
    /// line with every name left out.
    pub fn log(&self) {
        for (name, removal) in &self.removed {
            if *removal != Removal::Named {
                tracing::warn!(
                    variable = %name,
                    reason = removal.reason(),
                    "a variable that holds the password was removed from the children's environment, the main process's included"
                );
            }
        }
        tracing::info!(
            removed = ?self.removed.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(),
            "children's environment"
        );
    }
}

/// The environment for a child: `parent` without the names in `remove` and without any variable
/// whose value is, or (for a password of [`MIN_CONTAINED_PASSWORD_CHARS`] or more) contains,
/// the password.
///
/// A variable that contains the password is removed, not refused: refusing would turn a
/// variable the operator may not even control (one baked into the image) into a task that
/// never starts, while removing keeps the secret from the application just the same; the
/// warning names the variable, so whatever needed it fails with a cause in the log.
pub fn child_env(
    parent: impl IntoIterator<Item = (OsString, OsString)>,
    remove: &[String],
    password: Option<&Secret>,
) -> ChildEnv {
    let mut env = ChildEnv {
        vars: Vec::new(),
        removed: Vec::new(),
    };
    for (name, value) in parent {
        let removal = if remove.iter().any(|r| same_name(&name, r)) {
            Some(Removal::Named)
        } else {
            password.and_then(|p| holds_password(&value, p))
        };
        match removal {
            Some(removal) => env
                .removed
                .push((name.to_string_lossy().into_owned(), removal)),
            None => env.vars.push((name, value)),
        }
    }
    env
}

fn holds_password(value: &OsStr, password: &Secret) -> Option<Removal> {
    let password = password.expose();
    if password.is_empty() {
        return None;
    }
    // On Windows the encoded bytes are WTF-8, which is UTF-8 wherever the value is valid
    // UTF-16: a password (a `str`) appears in them exactly when it appears in the value.
    let value = value.as_encoded_bytes();
    let needle = password.as_bytes();
    if value == needle {
        Some(Removal::EqualsPassword)
    } else if password.chars().count() >= MIN_CONTAINED_PASSWORD_CHARS
        && value.windows(needle.len()).any(|w| w == needle)
    {
        Some(Removal::ContainsPassword)
    } else {
        None
    }
}

/// What a short-lived command printed, with the password (should a tool ever echo it) replaced.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The last lines of stderr (or stdout), for an error message.
    pub fn tail(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(12)..].join("\n")
    }
}

pub fn redact(text: &str, password: &Secret) -> String {
    if password.is_empty() {
        text.to_owned()
    } else {
        text.replace(password.expose(), "***")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("could not start {program}: {source}: check that it exists in the image")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} did not finish within {timeout:?}")]
    Timeout { program: String, timeout: Duration },
    #[error("waiting for {program} failed: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
}

/// Run one Windows command (PowerShell, appcmd) to completion with no stdin.
pub async fn run(
    invocation: &Invocation,
    base_env: &[(OsString, OsString)],
    password: &Secret,
    timeout: Duration,
) -> Result<Output, RunError> {
    let mut command = tokio::process::Command::new(&invocation.program);
    command
        .args(&invocation.args)
        .env_clear()
        .envs(base_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in &invocation.env {
        match value {
            EnvValue::Plain(v) => command.env(name, v),
            EnvValue::Password => command.env(name, password.expose()),
        };
    }
    let child = command.spawn().map_err(|source| RunError::Spawn {
        program: invocation.program.clone(),
        source,
    })?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| RunError::Timeout {
            program: invocation.program.clone(),
            timeout,
        })?
        .map_err(|source| RunError::Wait {
            program: invocation.program.clone(),
            source,
        })?;
    Ok(Output {
        code: out.status.code(),
        stdout: redact(&String::from_utf8_lossy(&out.stdout), password),
        stderr: redact(&String::from_utf8_lossy(&out.stderr), password),
    })
}

/// The Windows service the main process runs, when it is IIS's ServiceMonitor
/// (`ServiceMonitor.exe w3svc`): the close/shutdown handler stops it itself. ServiceMonitor's own
/// handler only signals its main thread and returns TRUE, and Windows ends a process as soon as
/// its handler returns from a close or shutdown event, so ServiceMonitor's stop of the service
/// never runs (microsoft/IIS.ServiceMonitor, Main.cpp; HandlerRoutine's documentation).
static MAIN_SERVICE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// `argv`'s service when its program is ServiceMonitor (any path, any case, with or without
/// `.exe`) and names one.
pub fn service_of_main(argv: &[String]) -> Option<String> {
    let (program, args) = argv.split_first()?;
    let file = program.rsplit(['\\', '/']).next().unwrap_or(program);
    let file = file.to_ascii_lowercase();
    let is_monitor = file == "servicemonitor.exe" || file == "servicemonitor";
    args.first()
        .filter(|service| is_monitor && !service.trim().is_empty())
        .cloned()
}

/// Start the main process with `env` as its whole environment. Install [`StopSignals`] first:
/// a stop that arrives while the process is being created must not be lost.
pub fn spawn_main(
    argv: &[String],
    env: &[(OsString, OsString)],
) -> Result<std::process::Child, RunError> {
    let (program, args) = argv.split_first().ok_or_else(|| RunError::Spawn {
        program: String::new(),
        source: std::io::Error::other("no main process was given after --"),
    })?;
    if let Some(service) = service_of_main(argv) {
        let _ = MAIN_SERVICE.set(service);
    }
    std::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .spawn()
        .map_err(|source| RunError::Spawn {
            program: program.clone(),
            source,
        })
}

/// A stop request that arrived before the main process existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    /// The signal or console event, as logged.
    pub name: &'static str,
    /// What the entrypoint exits with: 128 + the signal, as a shell reports a process it ended.
    pub exit_code: i32,
}

/// What ends a run once the main process has exited, done once whichever thread gets here first
/// (the main thread after [`wait_main`], or on Windows the close/shutdown handler): on Windows,
/// after a close or shutdown event, stop the main process's service and wait for it (see
/// `MAIN_SERVICE`); then IIS's last log lines. A second caller waits until the first is done,
/// so neither exits the process in the middle of the other's work.
pub fn finish() {
    static DONE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    #[cfg(windows)]
    windows::stop_main_service();
    crate::iis_logs::stop();
    *done = true;
}

#[cfg(unix)]
pub use unix::{StopSignals, wait_main};
#[cfg(windows)]
pub use windows::{StopSignals, wait_main};

#[cfg(unix)]
mod unix {
    //! The entrypoint is PID 1's only child that ECS signals: `docker stop` sends SIGTERM to the
    //! entrypoint alone, so the main process stops gracefully only if we pass it on. The
    //! handlers are installed when a run begins, long before the main process exists: with the
    //! default disposition a SIGTERM in between would kill the entrypoint and orphan the main
    //! process (the container then never stops by itself), and a handler installed after the
    //! spawn has exactly that window.
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use std::os::unix::process::ExitStatusExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::signal::unix::{SignalKind, signal};
    use tokio::sync::mpsc;

    const FORWARDED: [Signal; 4] = [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ];

    /// The stop signals taken over from their default disposition, and every one received so
    /// far that has not been forwarded yet, in arrival order.
    #[derive(Debug)]
    pub struct StopSignals {
        received: mpsc::UnboundedReceiver<Signal>,
        main_running: Arc<AtomicBool>,
    }

    impl StopSignals {
        /// Take over SIGTERM, SIGINT, SIGHUP and SIGQUIT. From here on a stop signal neither
        /// kills the entrypoint nor is lost: it is queued until [`wait_main`] forwards it.
        pub fn install() -> std::io::Result<Self> {
            let mut streams = Vec::with_capacity(FORWARDED.len());
            for sig in FORWARDED {
                // Creating the stream is what installs tokio's process-wide handler, so it
                // happens here, synchronously, not later in the task.
                streams.push((sig, signal(SignalKind::from_raw(sig as i32))?));
            }
            let (tx, received) = mpsc::unbounded_channel();
            let main_running = Arc::new(AtomicBool::new(false));
            let running = Arc::clone(&main_running);
            tokio::spawn(async move {
                loop {
                    let next = next_signal(&mut streams).await;
                    let Some(sig) = next else { return };
                    if running.load(Ordering::SeqCst) {
                        tracing::info!(signal = %sig, "stop signal received");
                    } else {
                        tracing::info!(
                            signal = %sig,
                            "stop signal received before the main process started"
                        );
                    }
                    if tx.send(sig).is_err() {
                        return;
                    }
                }
            });
            tracing::info!(
                signals = ?FORWARDED.map(|s| s.as_str()),
                "stop signal handlers installed"
            );
            Ok(Self {
                received,
                main_running,
            })
        }
    }

    impl StopSignals {
        /// The first stop signal not yet forwarded; pending forever if none comes.
        pub async fn requested(&mut self) -> super::Stop {
            match self.received.recv().await {
                Some(sig) => stop(sig),
                None => std::future::pending().await,
            }
        }

        /// A stop signal already received and not yet forwarded, if any.
        pub fn pending(&mut self) -> Option<super::Stop> {
            self.received.try_recv().ok().map(stop)
        }
    }

    fn stop(sig: Signal) -> super::Stop {
        super::Stop {
            name: sig.as_str(),
            exit_code: 128 + sig as i32,
        }
    }

    /// The next signal on any of the streams; `None` once the signal driver is gone.
    async fn next_signal(streams: &mut [(Signal, tokio::signal::unix::Signal)]) -> Option<Signal> {
        std::future::poll_fn(|cx| {
            for (sig, stream) in streams.iter_mut() {
                match stream.poll_recv(cx) {
                    std::task::Poll::Ready(Some(())) => return std::task::Poll::Ready(Some(*sig)),
                    std::task::Poll::Ready(None) => return std::task::Poll::Ready(None),
                    std::task::Poll::Pending => {}
                }
            }
            std::task::Poll::Pending
        })
        .await
    }

    /// Forward every stop signal — those queued before the main process existed first — to the
    /// child until it exits. A child killed by a signal exits us with 128 + the signal, as a
    /// shell reports it.
    pub async fn wait_main(
        child: std::process::Child,
        mut stops: StopSignals,
    ) -> std::io::Result<i32> {
        let pid = Pid::from_raw(i32::try_from(child.id()).map_err(std::io::Error::other)?);
        stops.main_running.store(true, Ordering::SeqCst);
        let mut waiter = tokio::task::spawn_blocking(move || {
            let mut child = child;
            child.wait()
        });
        loop {
            tokio::select! {
                // Exit status first: once the child is gone there is nobody to forward to.
                biased;
                status = &mut waiter => {
                    let status = status.map_err(std::io::Error::other)??;
                    return Ok(status
                        .code()
                        .or_else(|| status.signal().map(|s| 128 + s))
                        .unwrap_or(1));
                }
                Some(forward) = stops.received.recv() => {
                    tracing::info!(signal = %forward, "forwarding the stop signal to the main process");
                    // The child may have exited between the signal and here; that is fine.
                    let _ = kill(pid, forward);
                }
            }
        }
    }
}

#[cfg(windows)]
#[allow(unsafe_code)]
mod windows {
    //! Every process attached to the container's console receives its control events (Ctrl+C,
    //! Ctrl+Break, close, shutdown) itself, the main process included, so once it runs there is
    //! nothing to re-send. What the entrypoint must do is stay alive until the main process has
    //! stopped: Windows ends a process as soon as its handler returns from a close or shutdown
    //! event, and the container ends with the entrypoint, cutting IIS's shutdown short.
    //!
    //! An event that arrives before the main process exists reached only us; the handler is
    //! installed when a run begins so that such an event is remembered (not lost, and not the
    //! end of the entrypoint half-way through a mapping) and re-sent to the console once the
    //! main process is attached to it.
    use std::os::windows::io::{AsHandle, AsRawHandle, IntoRawHandle};
    use std::sync::atomic::{AtomicIsize, AtomicU32, Ordering};
    use std::sync::{Condvar, Mutex};
    use std::time::{Duration, Instant};
    use windows_sys::Win32::Foundation::WAIT_OBJECT_0;
    use windows_sys::Win32::Foundation::{FALSE, TRUE};
    use windows_sys::Win32::System::Console::{
        CTRL_BREAK_EVENT, CTRL_C_EVENT, CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT,
        GenerateConsoleCtrlEvent, SetConsoleCtrlHandler,
    };
    use windows_sys::Win32::System::Services::{
        CloseServiceHandle, ControlService, OpenSCManagerW, OpenServiceW, QueryServiceStatus,
        SC_MANAGER_CONNECT, SERVICE_CONTROL_STOP, SERVICE_QUERY_STATUS, SERVICE_STATUS,
        SERVICE_STOP, SERVICE_STOPPED,
    };
    use windows_sys::Win32::System::Threading::{GetExitCodeProcess, WaitForSingleObject};

    /// The main process's handle, 0 until it exists.
    static CHILD: AtomicIsize = AtomicIsize::new(0);
    /// When a close, logoff or shutdown event arrived, the end of its grace, as milliseconds
    /// after [`EPOCH`] plus one (0: no such event): the service is stopped only then.
    static SHUTDOWN_UNTIL_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    /// The first event that arrived while CHILD was 0, plus one (0: none).
    static PENDING: AtomicU32 = AtomicU32::new(0);
    /// Wakes a close/shutdown handler that waits for the main process to exist.
    static STARTED: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
    /// How long a close or shutdown waits for the main process and then for its service
    /// (W3SVC, see `MAIN_SERVICE`) to stop. Windows ends the container's processes
    /// `WaitToKillServiceTimeout` after the event: 110 s in the image (container/Dockerfile),
    /// under the task's StopTimeout of 120 s. 90 s leaves the IIS log follower its flush and
    /// drain (up to 15 s) and the last log line before that cut; tests/test_dockerfile.py keeps
    /// the three in order.
    const GRACE: Duration = Duration::from_secs(90);

    fn name(event: u32) -> &'static str {
        match event {
            CTRL_C_EVENT => "ctrl_c",
            CTRL_BREAK_EVENT => "ctrl_break",
            CTRL_CLOSE_EVENT => "close",
            CTRL_LOGOFF_EVENT => "logoff",
            CTRL_SHUTDOWN_EVENT => "shutdown",
            _ => "other",
        }
    }

    /// Remember `event` if the main process does not exist yet; true when it was remembered.
    fn queue_if_not_started(event: u32) -> bool {
        // Hold the lock so `wait_main` cannot publish the child between our check and our store
        // and then miss the pending event.
        let _guard = STARTED.0.lock().unwrap_or_else(|e| e.into_inner());
        if CHILD.load(Ordering::SeqCst) != 0 {
            return false;
        }
        let _ = PENDING.compare_exchange(0, event + 1, Ordering::SeqCst, Ordering::SeqCst);
        true
    }

    /// Block until the main process exists, at most until `until`; its handle, or 0.
    fn wait_for_child(until: Instant) -> isize {
        let mut guard = STARTED.0.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let handle = CHILD.load(Ordering::SeqCst);
            let left = until.saturating_duration_since(Instant::now());
            if handle != 0 || left.is_zero() {
                return handle;
            }
            guard = match STARTED.1.wait_timeout(guard, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    unsafe extern "system" fn handler(event: u32) -> i32 {
        // Windows runs this on a thread of its own, so logging and blocking here are safe.
        let queued = queue_if_not_started(event);
        if queued {
            tracing::info!(
                event = name(event),
                "console control event before the main process started"
            );
        } else {
            tracing::info!(
                event = name(event),
                "console control event; the main process receives it too, waiting for it to exit"
            );
        }
        match event {
            CTRL_C_EVENT | CTRL_BREAK_EVENT => TRUE,
            CTRL_CLOSE_EVENT | CTRL_LOGOFF_EVENT | CTRL_SHUTDOWN_EVENT => {
                let until = Instant::now() + GRACE;
                let epoch = *EPOCH.get_or_init(Instant::now);
                let ms = u64::try_from(until.saturating_duration_since(epoch).as_millis())
                    .unwrap_or(u64::MAX - 1);
                let _ = SHUTDOWN_UNTIL_MS.compare_exchange(
                    0,
                    ms + 1,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                let handle = wait_for_child(until);
                if handle != 0 {
                    let mut code = 1u32;
                    let left = until.saturating_duration_since(Instant::now());
                    let left_ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX);
                    // SAFETY: the handle belongs to the Child that `wait_main` keeps alive until
                    // the process exits; both calls only read it.
                    let have_code = unsafe {
                        WaitForSingleObject(handle as _, left_ms) == WAIT_OBJECT_0
                            && GetExitCodeProcess(handle as _, &mut code) != 0
                    };
                    if !have_code {
                        tracing::warn!(
                            grace_s = GRACE.as_secs(),
                            "the main process did not exit within the grace period"
                        );
                        code = 143;
                    }
                    // ServiceMonitor is gone at once (see MAIN_SERVICE): W3SVC is stopped in
                    // `finish`, so IIS finishes the requests it serves, within what is left of
                    // GRACE; then IIS's last log lines. The main thread, back from `wait_main`,
                    // waits for the same `finish` before it exits.
                    super::finish();
                    std::process::exit(code as i32);
                }
                TRUE
            }
            _ => FALSE,
        }
    }

    /// After a close, logoff or shutdown event: stop the main process's service (W3SVC) and wait
    /// for it, within the event's grace. Nothing otherwise (the main process ended on its own).
    pub(super) fn stop_main_service() {
        let until_ms = SHUTDOWN_UNTIL_MS.load(Ordering::SeqCst);
        let (Some(service), Some(epoch)) = (super::MAIN_SERVICE.get(), EPOCH.get()) else {
            return;
        };
        if until_ms == 0 {
            return;
        }
        let until = *epoch + Duration::from_millis(until_ms - 1);
        // A stop request may block while the service manager handles another control: not
        // when the grace is (nearly) over, the log flush still has to fit before Windows' cut.
        if until.saturating_duration_since(Instant::now()) < Duration::from_secs(5) {
            tracing::warn!(service = %service, "no time left to stop the service");
            return;
        }
        stop_service(service, until);
    }

    /// Ask the service to stop and wait until it has, or until `until`. Every failure is logged
    /// and ends the wait: the stop goes on without it.
    fn stop_service(name: &str, until: Instant) {
        let wide: Vec<u16> = name.encode_utf16().chain(std::iter::once(0)).collect();
        // SAFETY: the name is NUL-terminated and outlives the calls; the handles are checked
        // and closed on every path; SERVICE_STATUS is plain data the calls fill in.
        unsafe {
            let manager = OpenSCManagerW(std::ptr::null(), std::ptr::null(), SC_MANAGER_CONNECT);
            if manager.is_null() {
                tracing::warn!(service = name, error = %std::io::Error::last_os_error(), "could not open the service manager");
                return;
            }
            let service = OpenServiceW(manager, wide.as_ptr(), SERVICE_STOP | SERVICE_QUERY_STATUS);
            if service.is_null() {
                tracing::warn!(service = name, error = %std::io::Error::last_os_error(), "could not open the service");
                CloseServiceHandle(manager);
                return;
            }
            let mut status: SERVICE_STATUS = std::mem::zeroed();
            let mut asked = false;
            let stopped = loop {
                if !asked {
                    if ControlService(service, SERVICE_CONTROL_STOP, &mut status) != 0 {
                        asked = true;
                    } else {
                        match std::io::Error::last_os_error().raw_os_error() {
                            // ERROR_SERVICE_NOT_ACTIVE: already stopped (the query says so).
                            Some(1062) => asked = true,
                            // ERROR_SERVICE_CANNOT_ACCEPT_CTRL: still starting or already
                            // stopping: asked again on the next round until it takes it.
                            Some(1061) => {}
                            _ => {
                                tracing::warn!(service = name, error = %std::io::Error::last_os_error(), "could not ask the service to stop");
                                asked = true;
                            }
                        }
                    }
                }
                if QueryServiceStatus(service, &mut status) == 0 {
                    tracing::warn!(service = name, error = %std::io::Error::last_os_error(), "could not query the service");
                    break false;
                }
                if status.dwCurrentState == SERVICE_STOPPED {
                    break true;
                }
                if Instant::now() >= until {
                    tracing::warn!(
                        service = name,
                        state = status.dwCurrentState,
                        "the service did not stop within the grace period"
                    );
                    break false;
                }
                std::thread::sleep(Duration::from_millis(250));
            };
            if stopped {
                tracing::info!(service = name, "service stopped");
            }
            CloseServiceHandle(service);
            CloseServiceHandle(manager);
        }
    }

    /// The console control handler, installed before anything is started.
    #[derive(Debug)]
    pub struct StopSignals {
        _installed: (),
    }

    fn stop(event: u32) -> super::Stop {
        super::Stop {
            name: name(event),
            // As a shell reports a process ended by Ctrl+C (SIGINT) or a termination request.
            exit_code: if event == CTRL_C_EVENT { 130 } else { 143 },
        }
    }

    impl StopSignals {
        /// The first console event that arrived before the main process existed; pending
        /// forever if none comes. The handler runs on a thread of Windows' own, so this polls.
        pub async fn requested(&mut self) -> super::Stop {
            loop {
                if let Some(stop) = self.pending() {
                    return stop;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }

        /// A console event that arrived before the main process existed, if any.
        pub fn pending(&mut self) -> Option<super::Stop> {
            match PENDING.load(Ordering::SeqCst) {
                0 => None,
                n => Some(stop(n - 1)),
            }
        }
        /// Never an error: the main process still receives the console's events itself, so
        /// without our handler only the wait for it is lost; that is a warning, not a reason
        /// to stop the task.
        pub fn install() -> std::io::Result<Self> {
            // SAFETY: `handler` is a plain function with the signature Windows expects.
            if unsafe { SetConsoleCtrlHandler(Some(handler), TRUE) } == 0 {
                tracing::warn!(
                    error = %std::io::Error::last_os_error(),
                    "could not install the console control handler; a stop may cut the main process short"
                );
            } else {
                tracing::info!(
                    events = ?["ctrl_c", "ctrl_break", "close", "logoff", "shutdown"],
                    "stop signal handlers installed"
                );
            }
            Ok(Self { _installed: () })
        }
    }

    pub async fn wait_main(
        mut child: std::process::Child,
        _stops: StopSignals,
    ) -> std::io::Result<i32> {
        let pending = {
            let _guard = STARTED.0.lock().unwrap_or_else(|e| e.into_inner());
            // A handle of our own, never closed: the Child's is closed once `wait` returns, and
            // the handler may wait on the process after that (a closed handle's value can be
            // reused by the next one the process opens).
            let handle = child
                .as_handle()
                .try_clone_to_owned()
                .map(|h| h.into_raw_handle() as isize)
                .unwrap_or_else(|_| child.as_raw_handle() as isize);
            CHILD.store(handle, Ordering::SeqCst);
            STARTED.1.notify_all();
            PENDING.swap(0, Ordering::SeqCst)
        };
        if pending != 0 {
            let event = pending - 1;
            // Only Ctrl+C and Ctrl+Break can be generated; a close or shutdown becomes Ctrl+Break,
            // which, unlike Ctrl+C, a process cannot turn off for itself and its children.
            let resend = if event == CTRL_C_EVENT {
                CTRL_C_EVENT
            } else {
                CTRL_BREAK_EVENT
            };
            tracing::info!(
                event = name(event),
                sent = name(resend),
                "forwarding the stop signal to the main process"
            );
            // Group 0: every process on our console, the main process included (and we, whose
            // handler then lets it pass).
            // SAFETY: plain call with constant arguments.
            if unsafe { GenerateConsoleCtrlEvent(resend, 0) } == 0 {
                tracing::warn!(
                    error = %std::io::Error::last_os_error(),
                    "could not re-send the console control event; the main process was not told to stop"
                );
            }
        }
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .map_err(std::io::Error::other)??;
        Ok(status.code().unwrap_or(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn names(env: &ChildEnv) -> Vec<&str> {
        env.vars.iter().map(|(k, _)| k.to_str().unwrap()).collect()
    }

    #[test]
    fn credential_variables_are_removed() {
        let password = Secret::new("Correct-Horse-9");
        let env = child_env(
            os(&[
                ("PATH", "/bin"),
                ("SMB_PASSWORD", "Correct-Horse-9"),
                ("SMB_USERNAME", "EXAMPLE\\svc"),
                ("password", "old"),
                ("COPY_OF_IT", "Correct-Horse-9"),
                ("SMB_SHARE", "\\\\fs\\share"),
            ]),
            &[
                "SMB_PASSWORD".into(),
                "SMB_USERNAME".into(),
                "password".into(),
            ],
            Some(&password),
        );
        assert_eq!(
            env.vars,
            os(&[("PATH", "/bin"), ("SMB_SHARE", "\\\\fs\\share")])
        );
        assert_eq!(
            env.removed,
            [
                ("SMB_PASSWORD".to_string(), Removal::Named),
                ("SMB_USERNAME".to_string(), Removal::Named),
                ("password".to_string(), Removal::Named),
                ("COPY_OF_IT".to_string(), Removal::EqualsPassword),
            ]
        );
    }

    #[test]
    fn a_variable_that_contains_the_password_is_removed() {
        let password = Secret::new("Correct-Horse-9");
        let env = child_env(
            os(&[
                // With no user name in it, and with one.
                ("DB", "Server=db;Password=Correct-Horse-9;"),
                (
                    "DB_FULL",
                    "Server=db;User Id=EXAMPLE\\svc;Password=Correct-Horse-9",
                ),
                ("URL", "smb://svc:Correct-Horse-9@fs/share"),
                // The user name alone, a prefix of the password, the password in another case:
                // none of them is the password.
                ("WHO", "EXAMPLE\\svc"),
                ("PREFIX", "Correct-Horse-"),
                ("UPPER", "CORRECT-HORSE-9"),
            ]),
            &[],
            Some(&password),
        );
        assert_eq!(names(&env), ["WHO", "PREFIX", "UPPER"]);
        assert!(
            env.removed
                .iter()
                .all(|(_, removal)| *removal == Removal::ContainsPassword)
        );
        assert_eq!(
            env.removed
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            ["DB", "DB_FULL", "URL"]
        );
        // What is logged is the name and the reason: nothing in `removed` holds the value.
        assert!(!format!("{:?}", env.removed).contains("Correct-Horse-9"));
    }

    #[test]
    fn a_short_password_is_matched_only_as_a_whole_value() {
        let password = Secret::new("a");
        let env = child_env(
            os(&[("PATH", "/bin:/usr/local/bin"), ("ONE", "a")]),
            &[],
            Some(&password),
        );
        assert_eq!(names(&env), ["PATH"]);
        assert_eq!(env.removed, [("ONE".to_string(), Removal::EqualsPassword)]);
        // Seven characters: still whole values only; eight: inside values too.
        let seven = Secret::new("Abcdef7");
        let eight = Secret::new("Abcdefg8");
        let inside = os(&[("X", "k=Abcdef7;"), ("Y", "k=Abcdefg8;")]);
        assert_eq!(
            names(&child_env(inside.clone(), &[], Some(&seven))),
            ["X", "Y"]
        );
        assert_eq!(names(&child_env(inside, &[], Some(&eight))), ["X"]);
        assert_eq!(MIN_CONTAINED_PASSWORD_CHARS, 8);
    }

    #[test]
    fn the_length_limit_counts_characters_not_bytes() {
        // Four characters in eight bytes: too short to be looked for inside values.
        let password = Secret::new("éééé");
        let env = child_env(os(&[("X", "xéééé")]), &[], Some(&password));
        assert_eq!(names(&env), ["X"]);
    }

    #[test]
    fn an_empty_password_removes_nothing_by_value() {
        let env = child_env(os(&[("EMPTY", "")]), &[], Some(&Secret::new("")));
        assert_eq!(env.vars.len(), 1);
        assert!(env.removed.is_empty());
    }

    #[test]
    fn redaction_and_tail() {
        let p = Secret::new("pw-123");
        assert_eq!(redact("x pw-123 y", &p), "x *** y");
        let out = Output {
            code: Some(1),
            stdout: "a\nb".into(),
            stderr: "\n".into(),
        };
        assert_eq!(out.tail(), "a\nb");
        assert!(!out.success());
    }

    #[test]
    fn the_service_servicemonitor_runs_is_the_one_stopped_at_shutdown() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            service_of_main(&argv(&[r"C:\ServiceMonitor.exe", "w3svc"])).as_deref(),
            Some("w3svc")
        );
        assert_eq!(
            service_of_main(&argv(&["servicemonitor", "w3svc", "MyPool"])).as_deref(),
            Some("w3svc")
        );
        assert_eq!(service_of_main(&argv(&[r"C:\ServiceMonitor.exe"])), None);
        assert_eq!(service_of_main(&argv(&["cmd.exe", "/c", "x"])), None);
        assert_eq!(
            service_of_main(&argv(&[r"C:\NotServiceMonitor.exe", "w3svc"])),
            None
        );
        assert_eq!(service_of_main(&[]), None);
    }
}

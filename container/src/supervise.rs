//! Child processes: the environment they get, the short-lived Windows commands, and the main
//! process the entrypoint supervises until it exits.
//!
//! IIS's ServiceMonitor copies its own environment into every application pool, so whatever the
//! main process inherits, the web application can read. It therefore gets the container's
//! environment minus every credential variable — by name, and any other variable that holds the
//! password's value.

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

/// The environment for a child: `parent` without the names in `remove` and without any variable
/// whose value is the password.
pub fn child_env(
    parent: impl IntoIterator<Item = (OsString, OsString)>,
    remove: &[String],
    password: Option<&Secret>,
) -> Vec<(OsString, OsString)> {
    parent
        .into_iter()
        .filter(|(name, value)| {
            let named = remove.iter().any(|r| same_name(name, r));
            let holds = password
                .filter(|p| !p.is_empty())
                .is_some_and(|p| value == OsStr::new(p.expose()));
            !named && !holds
        })
        .collect()
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

/// Start the main process and wait for it, passing stop requests on; returns the exit code the
/// entrypoint should exit with.
pub fn spawn_main(
    argv: &[String],
    env: &[(OsString, OsString)],
) -> Result<std::process::Child, RunError> {
    let (program, args) = argv.split_first().ok_or_else(|| RunError::Spawn {
        program: String::new(),
        source: std::io::Error::other("no main process was given after --"),
    })?;
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

#[cfg(unix)]
pub use unix::wait_main;
#[cfg(windows)]
pub use windows::wait_main;

#[cfg(unix)]
mod unix {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use std::os::unix::process::ExitStatusExt;
    use tokio::signal::unix::{SignalKind, signal};

    /// Forward SIGTERM, SIGINT, SIGHUP and SIGQUIT to the child until it exits. A child killed
    /// by a signal exits us with 128 + the signal, as a shell reports it.
    pub async fn wait_main(child: std::process::Child) -> std::io::Result<i32> {
        let pid = Pid::from_raw(i32::try_from(child.id()).map_err(std::io::Error::other)?);
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut quit = signal(SignalKind::quit())?;
        let mut waiter = tokio::task::spawn_blocking(move || {
            let mut child = child;
            child.wait()
        });
        loop {
            let forward = tokio::select! {
                status = &mut waiter => {
                    let status = status.map_err(std::io::Error::other)??;
                    return Ok(status
                        .code()
                        .or_else(|| status.signal().map(|s| 128 + s))
                        .unwrap_or(1));
                }
                _ = term.recv() => Signal::SIGTERM,
                _ = int.recv() => Signal::SIGINT,
                _ = hup.recv() => Signal::SIGHUP,
                _ = quit.recv() => Signal::SIGQUIT,
            };
            tracing::info!(signal = %forward, "forwarding the stop signal to the main process");
            // The child may have exited between the signal and here; that is fine.
            let _ = kill(pid, forward);
        }
    }
}

#[cfg(windows)]
#[allow(unsafe_code)]
mod windows {
    //! Every process attached to the container's console receives its control events (Ctrl+C,
    //! Ctrl+Break, close, shutdown) itself, the main process included, so there is nothing to
    //! re-send. What the entrypoint must do is stay alive until the main process has stopped:
    //! Windows ends a process as soon as its handler returns from a close or shutdown event,
    //! and the container ends with the entrypoint, cutting IIS's shutdown short.
    use std::os::windows::io::AsRawHandle;
    use std::sync::atomic::{AtomicIsize, Ordering};
    use windows_sys::Win32::Foundation::{FALSE, TRUE};
    use windows_sys::Win32::System::Console::{
        CTRL_BREAK_EVENT, CTRL_C_EVENT, CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT,
        SetConsoleCtrlHandler,
    };
    use windows_sys::Win32::System::Threading::{GetExitCodeProcess, WaitForSingleObject};

    static CHILD: AtomicIsize = AtomicIsize::new(0);
    /// How long a close or shutdown waits for the main process (ECS's stop timeout is 30 s by
    /// default and at most 120 s).
    const GRACE_MS: u32 = 120_000;

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

    unsafe extern "system" fn handler(event: u32) -> i32 {
        // Windows runs this on a thread of its own, so logging here is safe.
        tracing::info!(
            event = name(event),
            "console control event; the main process receives it too, waiting for it to exit"
        );
        match event {
            CTRL_C_EVENT | CTRL_BREAK_EVENT => TRUE,
            CTRL_CLOSE_EVENT | CTRL_LOGOFF_EVENT | CTRL_SHUTDOWN_EVENT => {
                let handle = CHILD.load(Ordering::SeqCst);
                if handle != 0 {
                    let mut code = 1u32;
                    // SAFETY: the handle belongs to the Child that `wait_main` keeps alive until
                    // the process exits; both calls only read it.
                    unsafe {
                        WaitForSingleObject(handle as _, GRACE_MS);
                        if GetExitCodeProcess(handle as _, &mut code) != 0 {
                            std::process::exit(code as i32);
                        }
                    }
                }
                TRUE
            }
            _ => FALSE,
        }
    }

    pub async fn wait_main(mut child: std::process::Child) -> std::io::Result<i32> {
        CHILD.store(child.as_raw_handle() as isize, Ordering::SeqCst);
        // SAFETY: `handler` is a plain function with the signature Windows expects.
        if unsafe { SetConsoleCtrlHandler(Some(handler), TRUE) } == 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "could not install the console control handler; a stop may cut the main process short"
            );
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
        assert_eq!(env, os(&[("PATH", "/bin"), ("SMB_SHARE", "\\\\fs\\share")]));
    }

    #[test]
    fn an_empty_password_removes_nothing_by_value() {
        let env = child_env(os(&[("EMPTY", "")]), &[], Some(&Secret::new("")));
        assert_eq!(env.len(), 1);
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
}

//! The Windows container's entrypoint for fargate-smb.
//!
//! `fargate-smb-mount.exe -- C:\ServiceMonitor.exe w3svc` reads the share and credential from
//! the environment (or SSM), proves the share usable, maps it with `New-SmbGlobalMapping`, adds
//! the IIS virtual directories, then runs the main process with the credential (and, in
//! task-role mode, the task role) removed from its environment and exits with its exit code.
//! `doctor` runs the checks alone; `--plan` prints the Windows commands a start would run.

pub mod actions;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod doctor;
pub mod iis_logs;
pub mod mount;
pub mod own_env;
pub mod preflight;
pub mod supervise;

use crate::cli::Mode;
use crate::config::Config;
use crate::preflight::{Credential, ms};
use std::time::Instant;

/// Exit codes of the entrypoint itself; any other code is the main process's.
pub mod exit {
    pub const USAGE_OR_CONFIG: i32 = 2;
    pub const PREFLIGHT: i32 = 3;
    pub const MOUNT: i32 = 4;
    pub const MAIN_PROCESS_START: i32 = 5;
}

/// `taken`: what [`own_env::take_from_process`] took out of the environment at the very start.
pub async fn main(args: Vec<String>, taken: own_env::Taken, started: Instant) -> i32 {
    let mode = match cli::parse(&args) {
        Ok(mode) => mode,
        Err(message) => {
            eprintln!("{message}\n\n{}", cli::USAGE);
            return exit::USAGE_OR_CONFIG;
        }
    };
    match mode {
        Mode::Help => {
            println!("{}", cli::USAGE);
            0
        }
        Mode::Version => {
            println!("fargate-smb-mount {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Mode::Plan { json, main } => plan(json, &main, &taken),
        Mode::Doctor { wait } => doctor(wait, &taken).await,
        Mode::Run { main } => start(&main, taken, started).await,
    }
}

fn init_logging(level: tracing::Level, stdout: bool) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let json = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false);
    // Our own lines only: the SMB, NTLM and SDK crates log at INFO about every round trip.
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(tracing::Level::WARN)
        .with_target("fargate_smb_mount", level);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if stdout {
        registry.with(json.with_writer(std::io::stdout)).try_init()
    } else {
        registry.with(json.with_writer(std::io::stderr)).try_init()
    };
}

fn plan(json: bool, main: &[String], taken: &own_env::Taken) -> i32 {
    let config = match Config::from_env(taken) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return exit::USAGE_OR_CONFIG;
        }
    };
    // The plan never reads SSM or Secrets Manager: it names where the user name would come from instead.
    let username = match &config.username {
        config::Source::Env { value, .. } => value.clone(),
        other => format!("<from {}>", other.describe()),
    };
    let plan = actions::plan(&config, &username, main);
    if json {
        match serde_json::to_string_pretty(&plan) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("could not print the plan: {e}");
                return 1;
            }
        }
    } else {
        print!("{}", cli::render_plan(&plan, &config));
    }
    0
}

async fn doctor(wait: bool, taken: &own_env::Taken) -> i32 {
    init_logging(tracing::Level::WARN, false);
    let config = match Config::from_env(taken) {
        Ok(c) => c,
        Err(e) => {
            println!("fargate-smb doctor\n  FAIL  configuration          [config] {e}");
            return exit::USAGE_OR_CONFIG;
        }
    };
    let credential = match credentials::resolve(&config).await {
        Ok(c) => c,
        Err(e) => {
            println!("fargate-smb doctor\n  FAIL  credential             [credential] {e}");
            return exit::PREFLIGHT;
        }
    };
    let results = doctor::run(
        &config,
        &Credential {
            username: &credential.username,
            password: &credential.password,
        },
        wait,
    )
    .await;
    let (text, ok) = doctor::report(&config, &results);
    print!("{text}");
    if ok { 0 } else { exit::PREFLIGHT }
}

async fn start(main: &[String], taken: own_env::Taken, started: Instant) -> i32 {
    init_logging(tracing::Level::INFO, true);
    log_taken(&taken);
    // First of all, so that a stop at any moment from here on is neither lost nor the end of
    // the entrypoint half-way through a mapping.
    let mut stops = match supervise::StopSignals::install() {
        Ok(stops) => stops,
        Err(e) => {
            tracing::error!(
                code = "signals",
                error = %e,
                "could not install the stop signal handlers; without them a stop would orphan the main process, so the task stops"
            );
            return exit::MAIN_PROCESS_START;
        }
    };
    // A stop before the main process exists means ECS is stopping the task: starting IIS only
    // to stop it would hold the stop up (a preflight may retry for minutes), so the preparation
    // is abandoned (its tool processes are killed) and the main process never starts.
    let (env, iis_log_dir) = tokio::select! {
        biased;
        stop = stops.requested() => return stopped_before_start(stop),
        prepared = prepare(taken) => match prepared {
            Ok(prepared) => prepared,
            Err(code) => return code,
        },
    };
    if main.is_empty() {
        tracing::info!("no main process after --: mapped, exiting");
        return 0;
    }
    // The last moment a stop can keep the main process from starting; after the spawn it is
    // forwarded to it.
    if let Some(stop) = stops.pending() {
        return stopped_before_start(stop);
    }
    // Before the spawn: where each existing log file ends is noted now, so that whatever the
    // main process logs from its first moment is new, not history.
    if let Some(dir) = &iis_log_dir {
        iis_logs::start(dir);
    }
    let child = match supervise::spawn_main(main, &env) {
        Ok(child) => child,
        Err(e) => {
            iis_logs::stop();
            tracing::error!(code = "main_process", error = %e, "the task stops");
            return exit::MAIN_PROCESS_START;
        }
    };
    tracing::info!(
        pid = child.id(),
        program = %main[0],
        since_start_ms = started.elapsed().as_secs_f64() * 1000.0,
        "main process started"
    );
    let waited = supervise::wait_main(child, stops).await;
    // After a console stop, W3SVC's stop (Windows), then IIS's last lines (those written as it
    // stopped), before the entrypoint's own last line; once, shared with the stop handler.
    supervise::finish();
    match waited {
        Ok(code) => {
            tracing::info!(exit_code = code, "main process exited");
            code
        }
        Err(e) => {
            tracing::error!(error = %e, "lost the main process");
            1
        }
    }
}

fn log_taken(taken: &own_env::Taken) {
    let removed = taken.removed();
    if !removed.is_empty() {
        tracing::info!(
            variables = ?removed,
            "credential removed from the entrypoint's own environment"
        );
    }
    if !taken.left_in_environment().is_empty() {
        tracing::warn!(
            variables = ?taken.left_in_environment(),
            "could not show that removing a variable is sound here (the process has more than one thread, or no way to tell): the credential stays in the entrypoint's own environment, and still reaches no child"
        );
    }
}

fn stopped_before_start(stop: supervise::Stop) -> i32 {
    tracing::warn!(
        signal = stop.name,
        exit_code = stop.exit_code,
        "stop requested before the main process started: not starting it; the task stops"
    );
    stop.exit_code
}

/// Everything before the main process: configuration, credential, preflight, mappings and
/// virtual directories. Returns the main process's environment (without the credential) and
/// the folder of IIS's logs to follow (`SMB_IIS_LOG_DIR`), or the exit code to stop with.
///
/// Every copy of the password the entrypoint holds is owned here — `taken`, the configuration's
/// and the credential's, each a [`secrets::Secret`] that wipes its memory when dropped — and
/// none outlives this function: what it returns holds no secret, so the password is gone from
/// the entrypoint before the main process starts.
async fn prepare(taken: own_env::Taken) -> Result<Prepared, i32> {
    let config = Config::from_env(&taken);
    drop(taken);
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(code = "config", error = %e, "configuration error; the task stops");
            return Err(exit::USAGE_OR_CONFIG);
        }
    };
    let deadline = Instant::now() + config.deadline;
    tracing::info!(
        mappings = ?config.mappings.iter().map(|m| format!("{}={}", m.local(), m.remote)).collect::<Vec<_>>(),
        username_from = %config.username.describe(),
        password_from = %config.password.describe(),
        task_role = task_role_use(&config),
        deadline_s = config.deadline.as_secs(),
        "starting"
    );
    if config.reads_ssm() && config.app_uses_task_role {
        tracing::warn!(
            "SMB_APP_USES_TASK_ROLE=true: the main process keeps the task role, which may read the password's SSM parameter or secret; the application can read the password"
        );
    }
    let credential = match credentials::resolve(&config).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(code = "credential", error = %e, "could not read the credential; the task stops");
            return Err(exit::PREFLIGHT);
        }
    };
    let check = Credential {
        username: &credential.username,
        password: &credential.password,
    };
    for mapping in &config.mappings {
        match preflight::until_ready(&config, mapping, &check, deadline).await {
            Ok(attempt) => tracing::info!(
                drive = %mapping.local(),
                remote = %mapping.remote,
                elapsed_ms = ms(attempt.elapsed()),
                "preflight passed"
            ),
            Err(attempt) => {
                if let Some((check, e)) = attempt.failure() {
                    tracing::error!(
                        drive = %mapping.local(),
                        remote = %mapping.remote,
                        check = ?check,
                        code = preflight::code(e),
                        error = %e,
                        "preflight failed until the deadline; the task stops"
                    );
                }
                return Err(exit::PREFLIGHT);
            }
        }
    }

    // From here on, every child gets the environment without the credential. It is built from
    // the process environment as it is now, which no longer holds what `own_env` took.
    let env = supervise::child_env(
        std::env::vars_os(),
        &config.credential_vars,
        Some(&credential.password),
    );
    env.log();
    let env = env.vars;
    if let Err(e) = mount::map_all(&config, &credential.username, &credential.password, &env).await
    {
        tracing::error!(code = e.code().unwrap_or("mapping"), error = %e, "the task stops");
        return Err(exit::MOUNT);
    }
    if let Err(e) = mount::virtual_directories(&config, &credential.password, &env).await {
        tracing::error!(code = "virtual_directory", error = %e, "the task stops");
        return Err(exit::MOUNT);
    }
    if let Err(e) = mount::uncached(&config, &credential.password, &env).await {
        tracing::error!(code = "no_cache", error = %e, "the task stops");
        return Err(exit::MOUNT);
    }
    let iis_log_dir = config.iis_log_dir.clone();
    // The last copies of the password: wiped here, before the main process exists.
    drop(credential);
    drop(config);
    Ok((env, iis_log_dir))
}

/// What [`prepare`] hands the start: nothing in it holds a secret.
type Prepared = (
    Vec<(std::ffi::OsString, std::ffi::OsString)>,
    Option<std::path::PathBuf>,
);

/// The `starting` line's account of the task role (see `Config::withholds_task_role`).
fn task_role_use(config: &Config) -> &'static str {
    match (config.reads_ssm(), config.app_uses_task_role) {
        (true, false) => "the entrypoint's alone: withheld from every child",
        (true, true) => "shared with the main process (SMB_APP_USES_TASK_ROLE=true)",
        (false, _) => "not used by the entrypoint: left to the application",
    }
}

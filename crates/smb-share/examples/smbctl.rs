//! A small command-line client over `smb-share`, for the end-to-end tests and by hand.
//!
//! The share and the account come from the environment — `SMB_SHARE` (`\\server\share`),
//! `SMB_USERNAME` (`DOMAIN\name`), `SMB_PASSWORD_FILE` (a file holding the password, never an
//! argument), optional `SMB_PORT` — and each command prints JSON or nothing; an error prints
//! one line and exits 2.
//!
//! ```text
//! smbctl check | mkdir PATH | put LOCAL REMOTE | put-tree LOCALDIR REMOTEDIR [PARALLEL]
//!        get REMOTE LOCAL | stat PATH | ls PATH
//!        mv FROM TO | rm PATH | acl PATH | grant PATH SID RIGHTS INHERITANCE replace|merge
//!        replace LOCAL REMOTE
//! ```
//!
//! `replace` does what the copy engine does per file: it writes LOCAL to a temporary name beside
//! REMOTE, prints `{"temp": ...}`, waits for a line on stdin (so a test can open either file from
//! another session first), then renames the temporary file over REMOTE, retrying on a sharing
//! violation (`SMB_RENAME_ATTEMPTS`, `SMB_RENAME_PAUSE_MS`); each retry is logged on stderr.

use secrets::Secret;
use serde_json::json;
use smb_share::{
    Share, ShareConfig,
    acl::{self, Grant, Inheritance, Mode, Rights},
};
use std::time::Duration;

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

async fn run(args: &[String]) -> Result<(), String> {
    let password = std::fs::read_to_string(env("SMB_PASSWORD_FILE")?)
        .map_err(|e| format!("SMB_PASSWORD_FILE: {e}"))?;
    let mut config = ShareConfig::new(
        env("SMB_SHARE")?,
        env("SMB_USERNAME")?,
        Secret::new(password.trim_end_matches(['\r', '\n'])),
    );
    if let Ok(port) = std::env::var("SMB_PORT") {
        config.port = port
            .parse()
            .map_err(|_| "SMB_PORT is not a port number".to_string())?;
    }
    if let Ok(depth) = std::env::var("SMB_PIPELINE") {
        config.pipeline = depth
            .parse()
            .map_err(|_| "SMB_PIPELINE is not a number".to_string())?;
    }
    if std::env::var("SMB_ENCRYPTION").as_deref() == Ok("off") {
        // The signed path, for the tests (see ShareConfig::offer_encryption).
        config.require_encryption = false;
        config.offer_encryption = false;
    }
    config.timeout = Duration::from_secs(5);
    let share = Share::connect(&config).await.map_err(|e| e.to_string())?;
    let arg = |i: usize| {
        args.get(i)
            .cloned()
            .ok_or_else(|| format!("{}: missing argument {i}", args[0]))
    };
    let out = match args[0].as_str() {
        "check" => json!({"connected": true, "max_write": share.max_write()}),
        "mkdir" => share
            .create_dir_all(&arg(1)?)
            .await
            .map(|_| json!(null))
            .map_err(|e| e.to_string())?,
        "put" => {
            // Streamed: memory stays bounded whatever the file's size.
            let file = tokio::fs::File::open(arg(1)?)
                .await
                .map_err(|e| e.to_string())?;
            let bytes = share
                .write_from(&arg(2)?, file)
                .await
                .map_err(|e| e.to_string())?;
            json!({"bytes": bytes})
        }
        "put-tree" => {
            // Every regular file of LOCALDIR (not recursive) into REMOTEDIR, PARALLEL at a time.
            let (local, remote) = (arg(1)?, arg(2)?);
            let parallel: usize = args
                .get(3)
                .map(|p| {
                    p.parse()
                        .map_err(|_| "PARALLEL must be a number".to_string())
                })
                .transpose()?
                .unwrap_or(16);
            share
                .create_dir_all(&remote)
                .await
                .map_err(|e| e.to_string())?;
            let mut files = Vec::new();
            for entry in std::fs::read_dir(&local).map_err(|e| e.to_string())? {
                let entry = entry.map_err(|e| e.to_string())?;
                if entry.file_type().map_err(|e| e.to_string())?.is_file() {
                    let name = entry.file_name().to_string_lossy().to_string();
                    files.push((
                        format!("{remote}\\{name}"),
                        std::fs::read(entry.path()).map_err(|e| e.to_string())?,
                    ));
                }
            }
            // In name order, so that a test can put some files after others.
            files.sort();
            // SMB_CONNECTIONS sessions share the work (default 1).
            let connections: usize = std::env::var("SMB_CONNECTIONS")
                .ok()
                .map(|n| {
                    n.parse()
                        .map_err(|_| "SMB_CONNECTIONS is not a number".to_string())
                })
                .transpose()?
                .unwrap_or(1);
            let mut extra = Vec::new();
            for _ in 1..connections.max(1) {
                extra.push(Share::connect(&config).await.map_err(|e| e.to_string())?);
            }
            let sessions: Vec<&Share> = std::iter::once(&share).chain(extra.iter()).collect();
            let results = smb_share::write_many_on(&sessions, &files, parallel).await;
            for s in extra {
                s.close().await;
            }
            let failed: Vec<String> = results
                .iter()
                .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
                .collect();
            if !failed.is_empty() {
                return Err(format!(
                    "{} of {} files failed; first: {}",
                    failed.len(),
                    files.len(),
                    failed[0]
                ));
            }
            json!({"files": files.len()})
        }
        "get" => {
            let data = share.read(&arg(1)?).await.map_err(|e| e.to_string())?;
            tokio::fs::write(arg(2)?, &data)
                .await
                .map_err(|e| e.to_string())?;
            json!({"bytes": data.len()})
        }
        "stat" => {
            let m = share.stat(&arg(1)?).await.map_err(|e| e.to_string())?;
            json!({"size": m.size, "is_dir": m.is_dir, "modified": m.modified})
        }
        "ls" => {
            let entries = share.list(&arg(1)?).await.map_err(|e| e.to_string())?;
            json!(
                entries
                    .iter()
                    .map(|e| json!({"name": e.name, "is_dir": e.is_dir, "size": e.size}))
                    .collect::<Vec<_>>()
            )
        }
        "replace" => {
            let (local, remote) = (arg(1)?, arg(2)?);
            let remote = remote.replace('/', "\\");
            let (parent, name) = remote.rsplit_once('\\').unwrap_or(("", remote.as_str()));
            let temp_name = format!(".{name}.fargate-smb-tmp-{}", std::process::id());
            let temp = if parent.is_empty() {
                temp_name
            } else {
                format!("{parent}\\{temp_name}")
            };
            let data = std::fs::read(&local).map_err(|e| format!("{local}: {e}"))?;
            share.write(&temp, &data).await.map_err(|e| e.to_string())?;
            println!("{}", json!({"temp": temp}));
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            let mut retry = smb_share::Retry::default();
            if let Ok(n) = std::env::var("SMB_RENAME_ATTEMPTS") {
                retry.attempts = n
                    .parse()
                    .map_err(|_| "SMB_RENAME_ATTEMPTS is not a number")?;
            }
            if let Ok(ms) = std::env::var("SMB_RENAME_PAUSE_MS") {
                retry.first_pause = Duration::from_millis(
                    ms.parse()
                        .map_err(|_| "SMB_RENAME_PAUSE_MS is not a number")?,
                );
            }
            let renamed = share.rename_retrying(&temp, &remote, &retry).await;
            if renamed.is_err() {
                let _ = share.remove(&temp).await;
            }
            let meta = renamed.map_err(|e| e.to_string())?;
            json!({"size": meta.size, "modified": meta.modified})
        }
        "mv" => share
            .rename(&arg(1)?, &arg(2)?, false)
            .await
            .map(|_| json!(null))
            .map_err(|e| e.to_string())?,
        "rm" => share
            .remove(&arg(1)?)
            .await
            .map(|_| json!(null))
            .map_err(|e| e.to_string())?,
        "acl" => {
            let s = share.security(&arg(1)?).await.map_err(|e| e.to_string())?;
            json!({"owner": s.owner, "group": s.group, "protected": s.protected,
                   "aces": s.aces.iter().map(|a| a.to_string()).collect::<Vec<_>>()})
        }
        "grant" => {
            let path = arg(1)?;
            let grant = Grant {
                sid: arg(2)?,
                rights: Rights::parse(&arg(3)?)?,
                inheritance: Inheritance::parse(&arg(4)?)?,
            };
            let mode = match arg(5)?.as_str() {
                "replace" => Mode::Replace,
                "merge" => Mode::Merge,
                other => return Err(format!("mode {other:?}: use replace or merge")),
            };
            let current = share.security(&path).await.map_err(|e| e.to_string())?;
            let aces = acl::build(&[grant], &current.aces, mode);
            share
                .set_dacl(&path, &aces, mode == Mode::Replace)
                .await
                .map_err(|e| e.to_string())?;
            let after = share.security(&path).await.map_err(|e| e.to_string())?;
            let wanted: Vec<_> = aces.iter().filter(|a| !a.inherited()).cloned().collect();
            if !acl::satisfies(&after.aces, &wanted) {
                return Err(format!(
                    "read-back differs: wanted {wanted:?}, found {:?}",
                    after.aces
                ));
            }
            json!({"aces": after.aces.iter().map(|a| a.to_string()).collect::<Vec<_>>(), "protected": after.protected})
        }
        other => return Err(format!("unknown command {other:?}")),
    };
    share.close().await;
    println!("{out}");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // The library's log (retries) on stderr, as plain lines.
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: smbctl check|mkdir|put|get|stat|ls|mv|rm|acl|grant ... (see the source)");
        std::process::exit(2);
    }
    if let Err(e) = run(&args).await {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

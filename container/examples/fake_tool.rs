//! A stand-in for powershell.exe and appcmd.exe in the tests, where Windows' own tools do not
//! exist (Linux, Wine). It records how it was called — argv and the whole environment — as one
//! JSON line in $FAKE_TOOL_LOG, so the tests can check where the password went and where it did
//! not, and answers the way the real tool does:
//! - PowerShell (`-EncodedCommand`): prints $FAKE_TOOL_MAP_OUTCOME (default `created`) and exits
//!   $FAKE_TOOL_MAP_EXIT (default 0); it fails like the script would if no password arrived.
//! - `appcmd list vdir`: prints $FAKE_TOOL_VDIR_PATH and exits 0, or exits 1 when it is unset.
//! - `appcmd list config`: prints $FAKE_TOOL_CONFIG (default: a request filtering section with
//!   IIS's default hidden segments only) and exits 0.
//! - `appcmd add|set ...`: exits 0.
//!
//! With $FAKE_TOOL_MAP_WAIT_FOR set, PowerShell first waits (at most two minutes) until that file
//! exists: a mapping that takes as long as the test wants, so a test can act while the
//! entrypoint is provably past its start and before its main process exists.

use std::io::Write as _;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    if let Ok(path) = std::env::var("FAKE_TOOL_LOG") {
        let line = serde_json::json!({ "argv": argv, "env": env });
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
    if argv.iter().any(|a| a == "-EncodedCommand") {
        if let Ok(path) = std::env::var("FAKE_TOOL_MAP_WAIT_FOR") {
            let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while !std::path::Path::new(&path).exists() && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        if std::env::var("FARGATE_SMB_PASSWORD").map_or(true, |p| p.is_empty()) {
            eprintln!(
                "ConvertTo-SecureString : Cannot bind argument to parameter 'String' because it is null."
            );
            std::process::exit(1);
        }
        let outcome = std::env::var("FAKE_TOOL_MAP_OUTCOME").unwrap_or_else(|_| "created".into());
        println!("{outcome}");
        let code = std::env::var("FAKE_TOOL_MAP_EXIT")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        std::process::exit(code);
    }
    if argv.get(1).map(String::as_str) == Some("list")
        && argv.get(2).map(String::as_str) == Some("config")
    {
        let section = std::env::var("FAKE_TOOL_CONFIG").unwrap_or_else(|_| {
            "<system.webServer>\r\n  <security>\r\n    <requestFiltering>\r\n      <hiddenSegments applyToWebDAV=\"true\">\r\n        <add segment=\"web.config\" />\r\n        <add segment=\"bin\" />\r\n      </hiddenSegments>\r\n    </requestFiltering>\r\n  </security>\r\n</system.webServer>".into()
        });
        println!("{section}");
        return;
    }
    if argv.get(1).map(String::as_str) == Some("list") {
        match std::env::var("FAKE_TOOL_VDIR_PATH") {
            Ok(path) => println!("{path}"),
            Err(_) => std::process::exit(1),
        }
    }
}

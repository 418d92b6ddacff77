//! Command line: `[--plan [--json]] [--] MAIN...`, `doctor [--wait]`, `--help`, `--version`.

use crate::actions::{self, Plan};
use crate::config::Config;
use std::fmt::Write as _;

pub const USAGE: &str = r"fargate-smb-mount: map an SMB share in a Windows container, then run the main process.

usage:
  fargate-smb-mount [--] MAIN [ARGS...]   preflight, map, add IIS virtual directories, run MAIN
                                          (no MAIN: map and exit)
  fargate-smb-mount doctor [--wait]       run the preflight checks and print a report
                                          (--wait: retry until SMB_DEADLINE_SECONDS)
  fargate-smb-mount --plan [--json] [-- MAIN...]
                                          print the Windows commands a start would run (no secrets)
  fargate-smb-mount --help | --version

configuration (environment):
  SMB_SHARE            \\server\share[\folder] to map (compatibility name: fileshare)
  SMB_DRIVE            drive letter for SMB_SHARE (default G:)
  SMB_MAPPINGS         several mappings instead: G:=\\fs\share;H:=\\fs\other
  SMB_USERNAME         DOMAIN\name or name@domain, or SMB_USERNAME_PARAMETER (SSM name)
  SMB_PASSWORD         the password, or SMB_PASSWORD_PARAMETER (SSM SecureString read with the task role)
  SMB_CREDENTIAL_SECRET
                       instead of the four above: a Secrets Manager secret (ARN or name), read with
                       the task role, whose JSON has the keys username (DOMAIN\name) and password
  SMB_APP_USES_TASK_ROLE
                       true: with the credential read from SSM or Secrets Manager, the main process
                       keeps the task role (AWS_CONTAINER_*), and with it the means to read the
                       password (default false)
  SMB_IIS_VDIRS        /content=G:\content;... virtual directories of SMB_IIS_SITE (default Default Web Site)
  SMB_DEADLINE_SECONDS how long the preflight may retry (default 120)
  SMB_CONNECT_TIMEOUT_SECONDS, SMB_WRITE_TEST (true: write and delete a file), SMB_PORT (default 445)

exit codes: 2 usage or configuration, 3 credential or preflight, 4 mapping or virtual directory,
5 the main process did not start; otherwise the main process's own exit code.";

#[derive(Debug, PartialEq, Eq)]
pub enum Mode {
    Run { main: Vec<String> },
    Plan { json: bool, main: Vec<String> },
    Doctor { wait: bool },
    Help,
    Version,
}

pub fn parse(args: &[String]) -> Result<Mode, String> {
    if args.first().map(String::as_str) == Some("doctor") {
        let mut wait = false;
        for a in &args[1..] {
            match a.as_str() {
                "--wait" => wait = true,
                other => return Err(format!("doctor: unknown argument {other:?}")),
            }
        }
        return Ok(Mode::Doctor { wait });
    }
    let mut plan = false;
    let mut json = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--" => {
                i += 1;
                break;
            }
            "--plan" => plan = true,
            "--json" => json = true,
            "--help" | "-h" | "/?" => return Ok(Mode::Help),
            "--version" => return Ok(Mode::Version),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag:?}")),
            // The main process without `--`.
            _ => break,
        }
        i += 1;
    }
    let main = args[i..].to_vec();
    if json && !plan {
        return Err("--json goes with --plan".into());
    }
    Ok(if plan {
        Mode::Plan { json, main }
    } else {
        Mode::Run { main }
    })
}

pub fn render_plan(plan: &Plan, config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# fargate-smb-mount plan: the commands a start runs, in order (the password is never on a command line)"
    );
    let _ = writeln!(
        out,
        "# 1. preflight of each share (resolve, TCP {}, SMB session{}), retried for up to {} s",
        config.port,
        if config.write_test {
            ", write test"
        } else {
            ""
        },
        config.deadline.as_secs()
    );
    for (n, m) in plan.mappings.iter().enumerate() {
        let _ = writeln!(out, "\n# 2.{} map {} to {}", n + 1, m.local, m.remote);
        let _ = writeln!(out, "{}", actions::display(&m.invocation));
        for (name, value) in &m.invocation.env {
            let shown = match value {
                actions::EnvValue::Plain(v) => v.clone(),
                actions::EnvValue::Password => {
                    format!("<the password, from {}>", config.password.describe())
                }
            };
            let _ = writeln!(
                out,
                "#   environment of this PowerShell only: {name}={shown}"
            );
        }
        if let Some(script) = &m.invocation.script {
            let _ = writeln!(out, "#   the encoded script:");
            for line in script.lines() {
                let _ = writeln!(out, "#     {line}");
            }
        }
    }
    if let Some(h) = &plan.hidden_segment {
        let _ = writeln!(
            out,
            "\n# 3. IIS request filtering: hide {} (the share's bookkeeping) on the site",
            h.segments.join(" and ")
        );
        let _ = writeln!(out, "{}", actions::display(&h.query));
        let _ = writeln!(
            out,
            "#   if the answer does not list them (only the missing ones are added):"
        );
        let _ = writeln!(out, "{}", actions::display(&h.add_if_missing));
    }
    for (n, v) in plan.virtual_directories.iter().enumerate() {
        let _ = writeln!(
            out,
            "\n# 3.{} IIS virtual directory {} -> {}",
            n + 1,
            v.id,
            v.physical_path
        );
        let _ = writeln!(out, "{}", actions::display(&v.query));
        let _ = writeln!(out, "#   if it does not exist:");
        let _ = writeln!(out, "{}", actions::display(&v.add_if_missing));
        let _ = writeln!(out, "#   if it points elsewhere:");
        let _ = writeln!(out, "{}", actions::display(&v.set_if_different));
    }
    let _ = writeln!(
        out,
        "\n# 4. main process, with {} removed from its environment",
        plan.removed_from_child_environment.join(", ")
    );
    if plan.main_process.is_empty() {
        let _ = writeln!(out, "# (none given: the entrypoint exits after mapping)");
    } else {
        let _ = writeln!(out, "{}", plan.main_process.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn modes() {
        assert_eq!(
            parse(&args(&["--", r"C:\ServiceMonitor.exe", "w3svc"])).unwrap(),
            Mode::Run {
                main: args(&[r"C:\ServiceMonitor.exe", "w3svc"])
            }
        );
        assert_eq!(
            parse(&args(&["cmd", "/c", "--plan"])).unwrap(),
            Mode::Run {
                main: args(&["cmd", "/c", "--plan"])
            }
        );
        assert_eq!(parse(&[]).unwrap(), Mode::Run { main: vec![] });
        assert_eq!(
            parse(&args(&["--plan", "--json", "--", "x"])).unwrap(),
            Mode::Plan {
                json: true,
                main: args(&["x"])
            }
        );
        assert_eq!(
            parse(&args(&["doctor", "--wait"])).unwrap(),
            Mode::Doctor { wait: true }
        );
        assert!(parse(&args(&["doctor", "-x"])).is_err());
        assert!(parse(&args(&["--nope"])).is_err());
        assert!(parse(&args(&["--json"])).is_err());
        assert_eq!(parse(&args(&["--help"])).unwrap(), Mode::Help);
    }
}

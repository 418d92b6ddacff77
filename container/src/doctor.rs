//! `doctor`: the preflight alone, as a report a person reads (over ECS Exec, say).

use crate::config::{Config, Source};
use crate::preflight::{self, Attempt, Credential};
use std::fmt::Write as _;

pub fn report(config: &Config, results: &[(String, Attempt)]) -> (String, bool) {
    let mut out = String::new();
    let from = match (&config.username, &config.password) {
        // One secret holds both: said once.
        (Source::Secret { id, .. }, Source::Secret { id: same, .. }) if id == same => {
            format!(
                "credential from Secrets Manager secret {id} (keys \"username\" and \"password\")"
            )
        }
        (username, password) => format!(
            "user name from {}, password from {}",
            username.describe(),
            password.describe()
        ),
    };
    let _ = writeln!(
        out,
        "fargate-smb doctor: {} mapping(s); {from}",
        config.mappings.len(),
    );
    let mut all_ok = true;
    for (title, attempt) in results {
        let _ = writeln!(out, "\n{title}");
        for step in &attempt.steps {
            let ms = step.elapsed.as_secs_f64() * 1000.0;
            match &step.result {
                Ok(detail) => {
                    let _ = writeln!(
                        out,
                        "  ok    {:<22} {detail} ({ms:.0} ms)",
                        step.check.label()
                    );
                }
                Err(e) => {
                    all_ok = false;
                    let _ = writeln!(
                        out,
                        "  FAIL  {:<22} [{}] {e} ({ms:.0} ms)",
                        step.check.label(),
                        preflight::code(e)
                    );
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "\nresult: {}",
        if all_ok {
            "every check passed"
        } else {
            "FAILED — the README's troubleshooting table explains each code"
        }
    );
    (out, all_ok)
}

pub async fn run(
    config: &Config,
    credential: &Credential<'_>,
    wait: bool,
) -> Vec<(String, Attempt)> {
    let mut results = Vec::new();
    for mapping in &config.mappings {
        let title = format!("{} -> {}", mapping.local(), mapping.remote);
        let attempt = if wait {
            let deadline = std::time::Instant::now() + config.deadline;
            match preflight::until_ready(config, mapping, credential, deadline).await {
                Ok(a) | Err(a) => a,
            }
        } else {
            preflight::check_once(config, mapping, credential).await
        };
        results.push((title, attempt));
    }
    results
}

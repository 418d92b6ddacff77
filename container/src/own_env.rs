//! The entrypoint's own environment: the password leaves it as the process starts.
//!
//! With ECS `secrets`, ECS puts `SMB_PASSWORD` in the container's environment, so the
//! entrypoint starts with it. Left there, it would stay in the process for the entrypoint's whole
//! life, long after the mapping needed it: in a crash dump, for a debugger, for anything that
//! lists the process's environment, and for any later code that builds an environment from ours.
//! [`take_from_process`] reads it into a [`Secret`] (wiped when dropped) and removes it from the
//! process environment, first thing in `main`. The configuration then finds it in [`Taken`];
//! the one mapping PowerShell still gets it through its own environment, as before.
//!
//! Removing a variable is `unsafe` in edition 2024: on Unix libc's environment is not
//! synchronized, so a thread reading it while another changes it is undefined behaviour. Windows
//! synchronizes it, and std documents `remove_var` as always safe there. This module is the
//! crate's second and last `unsafe` (the first is the console handler in `supervise::windows`):
//! on Windows it removes; elsewhere only when the process provably has one thread, as it has in
//! `main` before the async runtime starts its threads. Where that cannot be shown, the variable
//! stays (and the log says so); the value is still taken, so nothing else changes.
#![allow(unsafe_code)]

use crate::config::vars;
use secrets::Secret;
use std::ffi::OsString;

/// The variables taken out of the entrypoint's own environment: the password, under either of
/// the names the configuration reads it by. (The user name is not a secret.)
pub const TAKEN: [&str; 2] = [vars::PASSWORD, vars::COMPAT_PASSWORD];

/// What [`take`] took out of an environment. Prints no value.
#[derive(Debug, Default)]
pub struct Taken {
    values: Vec<(&'static str, Secret)>,
    /// Taken, but still in the environment: removing them was not provably safe.
    left: Vec<&'static str>,
}

impl Taken {
    /// The value a taken variable had, by the name the configuration asks for.
    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.values
            .iter()
            .find(|(taken, _)| *taken == name)
            .map(|(_, value)| value)
    }

    /// The variables that were in the environment and no longer are.
    pub fn removed(&self) -> Vec<&'static str> {
        self.values
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| !self.left.contains(name))
            .collect()
    }

    /// The variables that were taken but could not be removed.
    pub fn left_in_environment(&self) -> &[&'static str] {
        &self.left
    }
}

/// An environment variables can be read from and removed from: the process's, or a map in tests.
pub trait Environment {
    fn get(&self, name: &str) -> Option<OsString>;
    /// Remove `name`; false when it was left in place.
    fn remove(&mut self, name: &str) -> bool;
}

/// Read each of [`TAKEN`] that is set and remove it from `env`.
pub fn take(env: &mut impl Environment) -> Taken {
    let mut taken = Taken::default();
    for name in TAKEN {
        let Some(value) = env.get(name) else { continue };
        if !env.remove(name) {
            taken.left.push(name);
        }
        // A value that is not Unicode cannot be a password the configuration accepts: it is
        // removed all the same, and the configuration then reports no password.
        if let Ok(value) = value.into_string() {
            taken.values.push((name, Secret::new(value)));
        }
    }
    taken
}

/// [`take`] from the process's own environment. Call it first thing in `main`, before the async
/// runtime exists: only then does the process have the one thread that makes removing a
/// variable sound outside Windows.
pub fn take_from_process() -> Taken {
    take(&mut Process)
}

/// The process environment.
#[derive(Debug)]
struct Process;

impl Environment for Process {
    fn get(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name)
    }

    fn remove(&mut self, name: &str) -> bool {
        if !removing_is_sound() {
            return false;
        }
        // SAFETY: on Windows `remove_var` is always safe (std's documentation: the OS
        // synchronizes the environment). Elsewhere `removing_is_sound` has just seen that this
        // thread is the process's only one, and only this thread could start another: nothing
        // can read the environment while it changes.
        unsafe { std::env::remove_var(name) };
        true
    }
}

#[cfg(windows)]
fn removing_is_sound() -> bool {
    true
}

/// One entry in /proc/self/task: the calling thread is the only one.
#[cfg(target_os = "linux")]
fn removing_is_sound() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|threads| threads.count() == 1)
}

#[cfg(not(any(windows, target_os = "linux")))]
fn removing_is_sound() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Source};
    use std::collections::BTreeMap;

    /// An environment of the test's own: the test process's is shared by every test thread.
    #[derive(Debug, Default)]
    struct Map {
        vars: BTreeMap<String, OsString>,
        refuse_removal: bool,
    }

    impl Map {
        fn of(pairs: &[(&str, &str)]) -> Self {
            Self {
                vars: pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), OsString::from(v)))
                    .collect(),
                refuse_removal: false,
            }
        }
    }

    impl Environment for Map {
        fn get(&self, name: &str) -> Option<OsString> {
            self.vars.get(name).cloned()
        }
        fn remove(&mut self, name: &str) -> bool {
            if self.refuse_removal {
                return false;
            }
            self.vars.remove(name);
            true
        }
    }

    const PASSWORD: &str = "Correct-Horse-Battery-9";

    #[test]
    fn the_password_leaves_the_environment_and_the_configuration_still_has_it() {
        let mut env = Map::of(&[
            ("SMB_SHARE", r"\\fs\share"),
            ("SMB_USERNAME", r"EXAMPLE\svc"),
            ("SMB_PASSWORD", PASSWORD),
            ("PATH", "/bin"),
        ]);
        let taken = take(&mut env);
        assert_eq!(taken.removed(), ["SMB_PASSWORD"]);
        assert!(taken.left_in_environment().is_empty());
        // The environment no longer holds it; everything else is as it was.
        assert_eq!(
            env.vars.keys().collect::<Vec<_>>(),
            ["PATH", "SMB_SHARE", "SMB_USERNAME"]
        );
        assert!(!env.vars.values().any(|v| v == PASSWORD));
        // The configuration reads it from what was taken, as `Config::from_env` does.
        let config = Config::from_lookup(|name| match taken.get(name) {
            Some(secret) => Some(secret.expose().to_owned()),
            None => env.get(name).and_then(|v| v.into_string().ok()),
        })
        .unwrap();
        assert!(
            matches!(&config.password, Source::Env { var, value } if var == "SMB_PASSWORD" && value.expose() == PASSWORD)
        );
        assert!(!format!("{taken:?}").contains(PASSWORD));
    }

    #[test]
    fn the_compatibility_name_is_taken_too() {
        let mut env = Map::of(&[("password", PASSWORD), ("username", r"EXAMPLE\svc")]);
        let taken = take(&mut env);
        assert_eq!(taken.removed(), ["password"]);
        assert_eq!(taken.get("password").map(Secret::expose), Some(PASSWORD));
        assert!(
            env.vars.contains_key("username"),
            "the user name is no secret"
        );
    }

    #[test]
    fn nothing_to_take_with_the_credential_in_ssm() {
        let mut env = Map::of(&[("SMB_PASSWORD_PARAMETER", "/app/password")]);
        let taken = take(&mut env);
        assert!(taken.removed().is_empty());
        assert_eq!(env.vars.len(), 1);
    }

    #[test]
    fn a_removal_that_is_not_sound_leaves_the_variable_and_says_so() {
        let mut env = Map::of(&[("SMB_PASSWORD", PASSWORD)]);
        env.refuse_removal = true;
        let taken = take(&mut env);
        assert!(taken.removed().is_empty());
        assert_eq!(taken.left_in_environment(), ["SMB_PASSWORD"]);
        assert_eq!(
            taken.get("SMB_PASSWORD").map(Secret::expose),
            Some(PASSWORD)
        );
    }
}

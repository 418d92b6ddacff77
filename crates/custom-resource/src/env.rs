//! A function's configuration comes from its environment (the template sets it); an error names
//! the variable, what is wrong with it and how to fix it, like [`crate::Invalid`] does for a
//! property.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}; {fix}")]
pub struct EnvError {
    pub variable: &'static str,
    pub problem: String,
    pub fix: String,
}

/// Shorthand for building an [`EnvError`].
pub fn env_error(
    variable: &'static str,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> EnvError {
    EnvError {
        variable,
        problem: problem.into(),
        fix: fix.into(),
    }
}

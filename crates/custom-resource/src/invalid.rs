/// A property that fails validation: which one, what is wrong, and how to fix it. Resources
/// return it (wrapped in their error type) before making any change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{property} {problem}: {fix}")]
pub struct Invalid {
    pub property: &'static str,
    pub problem: String,
    pub fix: String,
}

/// Shorthand for building an [`Invalid`].
pub fn invalid(
    property: &'static str,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> Invalid {
    Invalid {
        property,
        problem: problem.into(),
        fix: fix.into(),
    }
}

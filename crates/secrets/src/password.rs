use crate::Secret;

/// Symbols that need no escaping inside PowerShell single or double quotes, cmd.exe / `appcmd`
/// arguments (no `%`, `^`, `&`, `|`, `<`, `>`, `!` for delayed expansion), ConvertTo-SecureString,
/// or an LDAP string. Quotes, backtick, `$`, `;`, `,`, braces, parentheses, spaces are excluded.
pub const SAFE_SYMBOLS: &str = "-_.+=:~*#";

const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const DIGITS: &str = "0123456789";

/// Shortest password accepted: long enough for AD's default policy and for a brute-force margin.
pub const MIN_LENGTH: usize = 16;
/// Longest password accepted: AWS Directory Service's ResetUserPassword takes at most 127.
pub const MAX_LENGTH: usize = 127;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("length {0} is out of range: use {MIN_LENGTH} to {MAX_LENGTH} characters")]
    Length(usize),
    #[error(
        "excluding {0:?} leaves the {1} class empty: remove some of those characters from the exclusion list"
    )]
    EmptyClass(String, &'static str),
    #[error("the operating system's random number generator failed: {0}")]
    Rng(String),
}

/// How to generate a password. Every generated password contains at least one upper-case
/// letter, one lower-case letter, one digit and (when `symbols` is on) one symbol, which
/// satisfies Active Directory's complexity rule (three of four classes) with margin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordRules {
    pub length: usize,
    pub symbols: bool,
    /// Characters never to use, on top of everything outside the safe alphabet.
    pub exclude: String,
}

impl Default for PasswordRules {
    fn default() -> Self {
        Self {
            length: 32,
            symbols: true,
            exclude: String::new(),
        }
    }
}

impl PasswordRules {
    /// The character classes after exclusions, checked for emptiness.
    fn classes(&self) -> Result<Vec<Vec<char>>, PasswordError> {
        if !(MIN_LENGTH..=MAX_LENGTH).contains(&self.length) {
            return Err(PasswordError::Length(self.length));
        }
        let mut named = vec![
            ("upper-case", UPPER),
            ("lower-case", LOWER),
            ("digit", DIGITS),
        ];
        if self.symbols {
            named.push(("symbol", SAFE_SYMBOLS));
        }
        named
            .into_iter()
            .map(|(name, set)| {
                let chars: Vec<char> = set.chars().filter(|c| !self.exclude.contains(*c)).collect();
                if chars.is_empty() {
                    Err(PasswordError::EmptyClass(self.exclude.clone(), name))
                } else {
                    Ok(chars)
                }
            })
            .collect()
    }

    /// Check the rules without generating anything (for up-front property validation).
    pub fn validate(&self) -> Result<(), PasswordError> {
        self.classes().map(|_| ())
    }

    /// A fresh password from the OS CSPRNG.
    pub fn generate(&self) -> Result<Secret, PasswordError> {
        let classes = self.classes()?;
        let alphabet: Vec<char> = classes.iter().flatten().copied().collect();
        let mut rng = OsRng::default();
        let mut chars: Vec<char> = Vec::with_capacity(self.length);
        // One of each class first, the rest from the whole alphabet, then a uniform shuffle so the
        // guaranteed characters are not at predictable positions.
        for class in &classes {
            chars.push(class[rng.below(class.len())?]);
        }
        while chars.len() < self.length {
            chars.push(alphabet[rng.below(alphabet.len())?]);
        }
        for i in (1..chars.len()).rev() {
            let j = rng.below(i + 1)?;
            chars.swap(i, j);
        }
        let password: String = chars.iter().collect();
        // Overwrite the scratch buffer; `password` itself is wiped by `Secret` on drop.
        chars.iter_mut().for_each(|c| *c = '\0');
        Ok(Secret::new(password))
    }

    /// Whether `password` obeys these rules (used by tests and by rotation's self-check).
    pub fn accepts(&self, password: &str) -> bool {
        let Ok(classes) = self.classes() else {
            return false;
        };
        password.chars().count() == self.length
            && classes
                .iter()
                .all(|class| password.chars().any(|c| class.contains(&c)))
            && password
                .chars()
                .all(|c| classes.iter().any(|class| class.contains(&c)))
    }
}

/// Uniform integers from getrandom, buffered, by rejection sampling (no modulo bias).
struct OsRng {
    buf: [u8; 64],
    pos: usize,
    filled: bool,
}

impl Default for OsRng {
    fn default() -> Self {
        Self {
            buf: [0; 64],
            pos: 0,
            filled: false,
        }
    }
}

impl OsRng {
    fn byte(&mut self) -> Result<u8, PasswordError> {
        if !self.filled || self.pos == self.buf.len() {
            getrandom::fill(&mut self.buf).map_err(|e| PasswordError::Rng(e.to_string()))?;
            self.pos = 0;
            self.filled = true;
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(b)
    }

    /// Uniform in `0..n` for `n <= 256`.
    fn below(&mut self, n: usize) -> Result<usize, PasswordError> {
        debug_assert!(n > 0 && n <= 256);
        let limit = 256 - (256 % n);
        loop {
            let b = usize::from(self.byte()?);
            if b < limit {
                return Ok(b % n);
            }
        }
    }
}

impl Drop for OsRng {
    fn drop(&mut self) {
        self.buf.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn default_password_has_every_class_and_only_safe_characters() {
        let rules = PasswordRules::default();
        for _ in 0..200 {
            let p = rules.generate().unwrap();
            assert_eq!(p.expose().chars().count(), 32);
            assert!(rules.accepts(p.expose()));
            assert!(p.expose().chars().any(|c| c.is_ascii_uppercase()));
            assert!(p.expose().chars().any(|c| c.is_ascii_lowercase()));
            assert!(p.expose().chars().any(|c| c.is_ascii_digit()));
            assert!(p.expose().chars().any(|c| SAFE_SYMBOLS.contains(c)));
        }
    }

    #[test]
    fn never_emits_characters_that_break_quoting() {
        let rules = PasswordRules {
            length: MAX_LENGTH,
            ..Default::default()
        };
        let forbidden = "\"'`$;,&|<>^%!(){}[]@ \t\\/";
        for _ in 0..200 {
            let p = rules.generate().unwrap();
            assert!(
                !p.expose().chars().any(|c| forbidden.contains(c)),
                "{}",
                p.expose()
            );
        }
    }

    #[test]
    fn passwords_differ_and_cover_the_alphabet() {
        let rules = PasswordRules::default();
        let mut seen = HashSet::new();
        let mut chars = HashSet::new();
        for _ in 0..500 {
            let p = rules.generate().unwrap();
            chars.extend(p.expose().chars());
            assert!(seen.insert(p.expose().to_owned()), "repeated password");
        }
        // 26 + 26 + 10 + 9 symbols: 16,000 draws reach every one.
        assert_eq!(chars.len(), 26 + 26 + 10 + SAFE_SYMBOLS.len());
    }

    #[test]
    fn exclusions_and_no_symbols_are_honoured() {
        let rules = PasswordRules {
            length: 40,
            symbols: false,
            exclude: "0O1lI".into(),
        };
        for _ in 0..100 {
            let p = rules.generate().unwrap();
            assert!(p.expose().chars().all(|c| c.is_ascii_alphanumeric()));
            assert!(!p.expose().chars().any(|c| "0O1lI".contains(c)));
        }
    }

    #[test]
    fn bad_rules_are_explained() {
        let short = PasswordRules {
            length: 8,
            ..Default::default()
        };
        assert_eq!(short.generate().unwrap_err(), PasswordError::Length(8));
        assert!(
            short
                .validate()
                .unwrap_err()
                .to_string()
                .contains("16 to 127")
        );
        let empty = PasswordRules {
            exclude: DIGITS.into(),
            ..Default::default()
        };
        let err = empty.validate().unwrap_err().to_string();
        assert!(err.contains("digit"), "{err}");
    }
}

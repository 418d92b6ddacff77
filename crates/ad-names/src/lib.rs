//! Active Directory naming rules, shared by everything that takes a name from a user: the
//! custom resources' validation, the directory adapters and the container entrypoint. Each check
//! returns the problem in words (the caller adds which property it was).

/// Characters AD forbids in a sAMAccountName.
pub const ACCOUNT_FORBIDDEN: &str = "\"/\\[]:;|=,+*?<>@";
/// AD's limit on a user's sAMAccountName.
pub const MAX_USER_NAME: usize = 20;

/// Check a pre-Windows-2000 logon name (sAMAccountName) of at most `max` characters.
pub fn account_name_problem(name: &str, max: usize) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.chars().count() > max {
        return Some(format!(
            "{name:?} is longer than {max} characters (AD's limit for sAMAccountName)"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| ACCOUNT_FORBIDDEN.contains(*c) || c.is_control())
    {
        return Some(format!(
            "{name:?} contains {bad:?}; AD forbids {ACCOUNT_FORBIDDEN} in account names"
        ));
    }
    if name.ends_with('.') || name.trim() != name {
        return Some(format!(
            "{name:?} ends with a dot or has leading or trailing spaces"
        ));
    }
    None
}

/// Check a DNS domain name such as `corp.example.com`.
pub fn dns_domain_problem(domain: &str) -> Option<String> {
    let labels: Vec<&str> = domain.split('.').collect();
    let bad_label = |l: &str| {
        l.is_empty()
            || l.len() > 63
            || l.starts_with('-')
            || l.ends_with('-')
            || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if labels.len() < 2 || labels.iter().any(|l| bad_label(l)) || domain.len() > 253 {
        return Some(format!(
            "{domain:?} is not a DNS domain name such as corp.example.com"
        ));
    }
    None
}

/// Check a NetBIOS domain name such as `CORP`.
pub fn netbios_problem(name: &str) -> Option<String> {
    if name.is_empty()
        || name.len() > 15
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Some(format!(
            "{name:?} is not a NetBIOS domain name (1 to 15 letters, digits or -)"
        ));
    }
    None
}

/// A qualified user name, `DOMAIN\name` or `name@domain.fqdn`, split into (domain, name).
pub fn split_qualified(username: &str) -> Result<(&str, &str), String> {
    let (domain, name) = if let Some((domain, name)) = username.split_once('\\') {
        (domain, name)
    } else if let Some((name, domain)) = username.rsplit_once('@') {
        (domain, name)
    } else {
        return Err(format!(
            "{username:?} has no domain: write it as DOMAIN\\name or name@domain.example"
        ));
    };
    if domain.is_empty() || name.is_empty() {
        return Err(format!(
            "{username:?} has an empty domain or name: write it as DOMAIN\\name or name@domain.example"
        ));
    }
    if domain
        .chars()
        .any(|c| !(c.is_ascii_alphanumeric() || "-.".contains(c)))
    {
        return Err(format!(
            "the domain {domain:?} is not a NetBIOS or DNS domain name"
        ));
    }
    if let Some(problem) = account_name_problem(name, MAX_USER_NAME) {
        return Err(format!("the account name {problem}"));
    }
    Ok((domain, name))
}

/// `corp.example.com` → `DC=corp,DC=example,DC=com`.
pub fn domain_to_dn(domain: &str) -> String {
    domain
        .split('.')
        .map(|l| format!("DC={l}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The NetBIOS name AD proposes by default for a DNS domain: its first label, upper-cased,
/// cut to 15 characters.
pub fn default_netbios(domain: &str) -> String {
    domain
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase()
        .chars()
        .take(15)
        .collect()
}

/// Whether `dn` lies within the domain `domain` (case-insensitive, spaces after commas ignored).
pub fn dn_in_domain(dn: &str, domain: &str) -> bool {
    let norm = |s: &str| {
        s.split(',')
            .map(|p| p.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    let (dn, base) = (norm(dn), norm(&domain_to_dn(domain)));
    dn.len() > base.len() && dn.ends_with(&base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names() {
        assert_eq!(account_name_problem("svc-web", 20), None);
        assert!(
            account_name_problem("a-very-long-account-name", 20)
                .unwrap()
                .contains("20 characters")
        );
        assert!(
            account_name_problem("svc*web", 20)
                .unwrap()
                .contains("forbids")
        );
        assert!(account_name_problem("svc.", 20).unwrap().contains("dot"));
        assert!(account_name_problem("", 20).is_some());
    }

    #[test]
    fn qualified_names() {
        assert_eq!(
            split_qualified("EXAMPLE\\svc-web"),
            Ok(("EXAMPLE", "svc-web"))
        );
        assert_eq!(
            split_qualified("svc-web@example.test"),
            Ok(("example.test", "svc-web"))
        );
        assert!(
            split_qualified("svc-web")
                .unwrap_err()
                .contains("no domain")
        );
        assert!(
            split_qualified("@example.test")
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            split_qualified("EXAMPLE\\svc?x")
                .unwrap_err()
                .contains("forbids")
        );
        assert!(
            split_qualified("EX AMPLE\\svc")
                .unwrap_err()
                .contains("not a NetBIOS")
        );
    }

    #[test]
    fn domains_and_dns() {
        assert_eq!(dns_domain_problem("example.test"), None);
        assert!(dns_domain_problem("example").is_some());
        assert!(dns_domain_problem("exa mple.test").is_some());
        assert_eq!(netbios_problem("EXAMPLE"), None);
        assert!(netbios_problem("EXAMPLE-TOO-LONG-NAME").is_some());
        assert_eq!(
            domain_to_dn("corp.example.com"),
            "DC=corp,DC=example,DC=com"
        );
        assert_eq!(default_netbios("corp.example.com"), "CORP");
        assert!(dn_in_domain(
            "OU=fargate-smb, DC=Example,DC=test",
            "example.test"
        ));
        assert!(!dn_in_domain("DC=example,DC=test", "example.test"));
        assert!(!dn_in_domain("OU=x,DC=other,DC=test", "example.test"));
    }
}

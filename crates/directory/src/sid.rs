/// The textual form (`S-1-5-21-...`) of a binary security identifier as AD stores it in
/// `objectSid`: revision, sub-authority count, a 48-bit big-endian identifier authority, then
/// 32-bit little-endian sub-authorities. `None` if the bytes are not a SID.
pub fn sid_to_string(bytes: &[u8]) -> Option<String> {
    let (&revision, rest) = bytes.split_first()?;
    let (&count, rest) = rest.split_first()?;
    if revision != 1 || rest.len() != 6 + 4 * usize::from(count) {
        return None;
    }
    let authority = rest[..6]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let mut text = format!("S-1-{authority}");
    for chunk in rest[6..].chunks_exact(4) {
        let sub = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        text.push_str(&format!("-{sub}"));
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_domain_user_sid() {
        // S-1-5-21-1885554006-3932311725-3159684437-1104
        let mut b = vec![1u8, 5, 0, 0, 0, 0, 0, 5];
        for sub in [21u32, 1_885_554_006, 3_932_311_725, 3_159_684_437, 1104] {
            b.extend_from_slice(&sub.to_le_bytes());
        }
        assert_eq!(
            sid_to_string(&b).as_deref(),
            Some("S-1-5-21-1885554006-3932311725-3159684437-1104")
        );
    }

    #[test]
    fn well_known_and_malformed() {
        assert_eq!(
            sid_to_string(&[1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0]).as_deref(),
            Some("S-1-5-18")
        );
        assert_eq!(sid_to_string(&[1, 2, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0]), None);
        assert_eq!(sid_to_string(&[2, 0, 0, 0, 0, 0, 0, 5]), None);
        assert_eq!(sid_to_string(&[]), None);
    }
}

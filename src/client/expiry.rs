//! When does a signed CDN URL expire? Reads the four forms seen in the wild (docs/protocol.md):
//! `?<exp>_<token>`, `verify=<exp>-<sig>`, `__token__=exp=<exp>~hmac=…`, `Expires=<exp>~…`,
//! all Unix seconds. An unreadable URL is treated as never expiring.

/// The expiry of `url` in Unix seconds, if it carries one of the known forms.
pub fn url_expiry(url: &str) -> Option<u64> {
    let url = url::Url::parse(url).ok()?;
    if let Some(exp) = leading_number_before(url.query()?, b'_') {
        return Some(exp);
    }
    for (key, value) in url.query_pairs() {
        let found = match key.as_ref() {
            "verify" => leading_number_before(&value, b'-'),
            "__token__" => value
                .split('~')
                .find_map(|part| part.strip_prefix("exp="))
                .and_then(|v| v.parse().ok()),
            "Expires" => leading_number_before(&value, b'~').or_else(|| value.parse().ok()),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// `1700000000_abc` with `sep = b'_'` → 1700000000; needs at least one digit, then `sep`.
fn leading_number_before(text: &str, sep: u8) -> Option<u64> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || text.as_bytes().get(digits) != Some(&sep) {
        return None;
    }
    text[..digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::url_expiry;

    #[test]
    fn reads_the_four_forms() {
        assert_eq!(
            url_expiry("http://h/audio/ab?1700000000_c2lnbmF0dXJl"),
            Some(1700000000)
        );
        assert_eq!(
            url_expiry("https://h/x?verify=1700000001-abcdef"),
            Some(1700000001)
        );
        assert_eq!(
            url_expiry("https://h/x?__token__=exp=1700000002~hmac=0123abcd"),
            Some(1700000002)
        );
        assert_eq!(
            url_expiry("https://h/x?Expires=1700000003~Signature=xyz"),
            Some(1700000003)
        );
        assert_eq!(
            url_expiry("https://h/x?a=b&Expires=1700000004&Signature=xyz"),
            Some(1700000004)
        );
    }

    #[test]
    fn unreadable_urls_never_expire() {
        assert_eq!(url_expiry("http://h/audio/ab"), None);
        assert_eq!(url_expiry("http://h/audio/ab?token=xyz"), None);
        assert_eq!(url_expiry("http://h/audio/ab?_xyz"), None);
        assert_eq!(url_expiry("http://h/audio/ab?verify=soon-abc"), None);
        assert_eq!(
            url_expiry("http://h/audio/ab?99999999999999999999999_x"),
            None
        );
    }
}

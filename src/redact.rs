//! Keeps secrets out of logs and error messages: URL signatures, tokens, passwords.
//!
//! Every URL that reaches a log line or an error passes through [`url`], which keeps the scheme,
//! host and path (enough to debug) and drops the query, where CDNs put their signatures.

/// `https://cdn.example/audio/abcd?1700000000_sig` → `https://cdn.example/audio/abcd?<redacted>`.
pub fn url(url: &str) -> String {
    let without_fragment = url.split('#').next().unwrap_or("");
    match without_fragment.split_once('?') {
        Some((base, _)) => format!("{}?<redacted>", strip_userinfo(base)),
        None => strip_userinfo(without_fragment),
    }
}

/// Drops `user:password@` from a URL's authority.
fn strip_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://<redacted>@{host}{path}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn queries_and_userinfo_are_redacted() {
        assert_eq!(
            super::url("http://h:1/audio/ab?1700000000_deadbeef"),
            "http://h:1/audio/ab?<redacted>"
        );
        assert_eq!(super::url("http://u:pw@h/x"), "http://<redacted>@h/x");
        assert_eq!(super::url("http://h/x"), "http://h/x");
    }
}

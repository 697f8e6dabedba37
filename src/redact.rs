//! Keeps secrets out of logs and error messages: URL signatures, tokens, passwords.
//!
//! Every URL that reaches a log line or an error passes through [`url`], which keeps the scheme,
//! host and path (enough to debug) and drops the query, where CDNs put their signatures.

/// `https://cdn.example/audio/abcd?1700000000_sig` → `https://cdn.example/audio/abcd?<redacted>`.
/// Userinfo becomes `<redacted>@`; the fragment goes. Text that does not parse as a URL (a
/// mistyped origin) keeps only what lies before any `?`, `#` or `@`, so the typo still shows.
pub fn url(url: &str) -> String {
    let parsed = url::Url::parse(url).ok().filter(|u| !u.cannot_be_a_base());
    let Some(parsed) = parsed else {
        let head = url.split(['?', '#', '@']).next().unwrap_or("");
        return format!("{head}<rest redacted>");
    };
    let userinfo = match !parsed.username().is_empty() || parsed.password().is_some() {
        true => "<redacted>@",
        false => "",
    };
    let host = parsed.host_str().unwrap_or("");
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    let query = parsed.query().map_or("", |_| "?<redacted>");
    let (scheme, path) = (parsed.scheme(), parsed.path());
    format!("{scheme}://{userinfo}{host}{port}{path}{query}")
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
        assert_eq!(
            super::url("https://u@h/x?a#frag"),
            "https://<redacted>@h/x?<redacted>"
        );
        assert_eq!(super::url("h:x@y/z?q"), "h:x<rest redacted>");
        assert_eq!(super::url("127.0.0.1:80?q"), "127.0.0.1:80<rest redacted>");
    }
}

//! The `Content-Range` header: the one place a CDN says which bytes it sent and how big the
//! file is, so it is parsed strictly (digits only, `first <= last < total`).

/// A parsed `Content-Range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes first-last/total`
    Range { first: u64, last: u64, total: u64 },
    /// `bytes */total` (with a 416)
    Unsatisfied { total: u64 },
}

/// Parses `bytes a-b/total` or `bytes */total`; an unknown total (`*`) is not accepted.
pub fn parse_content_range(value: &str) -> Option<ContentRange> {
    let value = value.trim();
    // Range units are case-insensitive (RFC 9110 §14.1).
    let unit = value.get(..5)?;
    let rest = unit
        .eq_ignore_ascii_case("bytes")
        .then(|| value[5..].trim_start())?;
    let (range, total) = rest.split_once('/')?;
    let total: u64 = parse_digits(total)?;
    if range.trim() == "*" {
        return Some(ContentRange::Unsatisfied { total });
    }
    let (first, last) = range.split_once('-')?;
    let (first, last) = (parse_digits(first)?, parse_digits(last)?);
    (first <= last && last < total).then_some(ContentRange::Range { first, last, total })
}

fn parse_digits(text: &str) -> Option<u64> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

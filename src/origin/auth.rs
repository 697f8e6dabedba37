//! Who may ask what: Basic auth for tokens, bearer tokens for the control plane, signed URLs
//! for the CDN. All three are checked in constant time against the library's secret files.
//!
//! Tokens are stateless (`<expiry ms>.<nonce>.<hmac>`), so they need no table and survive a
//! restart of the origin; CDN URLs carry `?<expiry>_<sig>` as docs/protocol.md says, with `sig` the
//! first 16 bytes (hex) of HMAC-SHA256 over the file id and the expiry.

use crate::protocol::model::FileId;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Hex characters of a URL signature (16 bytes of the HMAC).
const SIG_HEX_LEN: usize = 32;

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// Signs and checks tokens and URLs with the library's secret.
pub struct Signer {
    secret: Vec<u8>,
}

impl Signer {
    pub fn new(secret: Vec<u8>) -> Self {
        Signer { secret }
    }

    fn mac_hex(&self, label: &str, message: &str) -> String {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = match HmacSha256::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(label.as_bytes());
        mac.update(b"\0");
        mac.update(message.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..SIG_HEX_LEN / 2])
    }

    /// A new access token valid for `ttl`.
    pub fn issue_token(&self, ttl: Duration) -> String {
        let expiry_ms = (now() + ttl).as_millis();
        let nonce = hex::encode(rand::random::<[u8; 8]>());
        let body = format!("{expiry_ms}.{nonce}");
        let sig = self.mac_hex("token", &body);
        format!("{body}.{sig}")
    }

    /// Whether `token` was issued by this origin and has not expired.
    pub fn check_token(&self, token: &str) -> bool {
        let Some((body, sig)) = token.rsplit_once('.') else {
            return false;
        };
        let expected = self.mac_hex("token", body);
        if !bool::from(expected.as_bytes().ct_eq(sig.as_bytes())) {
            return false;
        }
        let expiry_ms = body.split('.').next().and_then(|e| e.parse::<u128>().ok());
        expiry_ms.is_some_and(|e| now().as_millis() < e)
    }

    /// `<expiry>_<sig>` for a CDN URL of `file` valid for `ttl` (expiry in Unix seconds).
    pub fn sign_url(&self, file: &FileId, ttl: Duration) -> String {
        let until = now() + ttl;
        let expiry = until.as_secs() + u64::from(until.subsec_nanos() > 0);
        let sig = self.mac_hex("cdn", &format!("{file}:{expiry}"));
        format!("{expiry}_{sig}")
    }

    /// Whether a CDN query string `<expiry>_<sig>` is a valid, unexpired signature for `file`.
    pub fn check_url(&self, file: &FileId, query: Option<&str>) -> bool {
        let Some((expiry, sig)) = query.and_then(|q| q.split_once('_')) else {
            return false;
        };
        let Ok(expiry_secs) = expiry.parse::<u64>() else {
            return false;
        };
        let expected = self.mac_hex("cdn", &format!("{file}:{expiry_secs}"));
        let valid = bool::from(expected.as_bytes().ct_eq(sig.as_bytes()));
        valid && now() < Duration::from_secs(expiry_secs)
    }
}

/// Checks an `Authorization: Basic ...` header against the library's credentials.
pub fn check_basic(header: Option<&str>, user: &str, password: &str) -> bool {
    // The scheme name is case-insensitive (RFC 9110 §11.1).
    let Some((scheme, encoded)) = header.and_then(|h| h.trim().split_once(' ')) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let expected = format!("{user}:{password}");
    bool::from(decoded.as_slice().ct_eq(expected.as_bytes()))
}

/// The token of an `Authorization: Bearer ...` header.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, token) = header?.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_expire() {
        let s = Signer::new(b"0123456789abcdef0123".to_vec());
        let t = s.issue_token(Duration::from_secs(60));
        assert!(s.check_token(&t));
        assert!(!s.check_token(&format!("{t}0")));
        assert!(!Signer::new(b"another secret, 16+".to_vec()).check_token(&t));
        assert!(!s.check_token(&s.issue_token(Duration::ZERO)));
        assert!(!s.check_token(""));
    }

    #[test]
    fn urls_verify_and_expire() {
        let s = Signer::new(b"0123456789abcdef0123".to_vec());
        let f = FileId([7; 20]);
        let q = s.sign_url(&f, Duration::from_secs(60));
        assert!(s.check_url(&f, Some(&q)));
        assert!(!s.check_url(&FileId([8; 20]), Some(&q)));
        assert!(!s.check_url(&f, None));
        let (exp, sig) = q.split_once('_').unwrap();
        let later = format!("{}_{sig}", exp.parse::<u64>().unwrap() + 1);
        assert!(!s.check_url(&f, Some(&later)));
        let past = format!("1_{}", s.mac_hex("cdn", &format!("{f}:1")));
        assert!(!s.check_url(&f, Some(&past)));
    }

    #[test]
    fn basic_and_bearer_headers() {
        let h = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("trackfs:pw")
        );
        assert!(check_basic(Some(&h), "trackfs", "pw"));
        assert!(!check_basic(Some(&h), "trackfs", "pw2"));
        assert!(!check_basic(None, "trackfs", "pw"));
        let lower = h.replacen("Basic", "basic", 1);
        assert!(
            check_basic(Some(&lower), "trackfs", "pw"),
            "scheme is case-insensitive"
        );
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
    }
}

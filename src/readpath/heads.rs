//! Head files: the first bytes of a file in plaintext, served by the origin without auth.
//!
//! They are fetched alongside a file's first block and used twice: to check that the key
//! decrypts the first block into exactly these bytes (a wrong key fails loudly instead of
//! playing noise), and to answer reads of the file's start at once when its blocks are not
//! cached, while the CDN fetch runs. A `404` is remembered: the origin has no head for it; a
//! failure to ask (timeout, 5xx) is not, so a later read asks again.

use crate::client::seams::ControlPlane;
use crate::protocol::model::FileId;
use bytes::Bytes;
use lru::LruCache;
use std::sync::{Arc, Mutex};

pub struct HeadStore {
    control: Arc<dyn ControlPlane>,
    known: Mutex<LruCache<FileId, Option<Bytes>>>,
    /// Bytes of heads kept in memory (a head is 64–128 KiB).
    budget: usize,
}

impl HeadStore {
    pub fn new(control: Arc<dyn ControlPlane>, budget: usize) -> Self {
        HeadStore {
            control,
            known: Mutex::new(LruCache::unbounded()),
            budget,
        }
    }

    /// The head if it is in memory, without I/O.
    pub fn cached(&self, file: FileId) -> Option<Bytes> {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.get(&file).cloned().flatten()
    }

    /// The head, fetching it once; `None` when the origin has none.
    pub async fn get(&self, file: FileId) -> Option<Bytes> {
        {
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(head) = known.get(&file) {
                return head.clone();
            }
        }
        let head = self.control.head(file).await.ok()?;
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.put(file, head.clone());
        let mut bytes: usize = known
            .iter()
            .map(|(_, h)| h.as_ref().map_or(0, Bytes::len))
            .sum();
        while bytes > self.budget {
            match known.pop_lru() {
                Some((_, evicted)) => bytes -= evicted.map_or(0, |h| h.len()),
                None => break,
            }
        }
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::api::{Api, Credentials};
    use crate::client::testing::{response, scripted_origin};
    use std::time::Duration;

    #[tokio::test]
    async fn a_failed_head_is_asked_again_and_a_missing_one_is_remembered() {
        let base = scripted_origin(vec![
            response("503 Busy", b""),
            response("200 OK", b"head"),
            response("404 Not Found", b""),
        ])
        .await;
        let http = crate::client::http_client(None, Duration::from_secs(5)).unwrap();
        let credentials = Credentials::from_text("user:secret").unwrap();
        let api = Api::new(http, &base, credentials, Arc::default());
        let heads = HeadStore::new(Arc::new(api), 1 << 20);
        let (a, b) = (FileId([1; 20]), FileId([2; 20]));
        assert_eq!(heads.get(a).await, None, "503: no head this time");
        assert_eq!(
            heads.get(a).await.as_deref(),
            Some(&b"head"[..]),
            "asked again"
        );
        assert_eq!(heads.get(b).await, None, "404");
        // Remembered: the scripted origin has no answers left, so asking again would fail.
        assert_eq!(heads.cached(a).as_deref(), Some(&b"head"[..]));
        assert_eq!(heads.get(b).await, None);
        assert!(heads.known.lock().unwrap().contains(&b));
    }

    #[tokio::test]
    async fn heads_beyond_the_budget_are_forgotten_oldest_first() {
        let base = scripted_origin(vec![
            response("200 OK", &[1; 100]),
            response("200 OK", &[2; 100]),
            response("200 OK", &[3; 100]),
        ])
        .await;
        let http = crate::client::http_client(None, Duration::from_secs(5)).unwrap();
        let credentials = Credentials::from_text("user:secret").unwrap();
        let api = Api::new(http, &base, credentials, Arc::default());
        let heads = HeadStore::new(Arc::new(api), 250);
        for n in 1..=3 {
            assert!(heads.get(FileId([n; 20])).await.is_some());
        }
        assert_eq!(
            heads.cached(FileId([1; 20])),
            None,
            "over budget: the oldest went"
        );
        assert!(heads.cached(FileId([2; 20])).is_some());
        assert!(heads.cached(FileId([3; 20])).is_some());
    }
}

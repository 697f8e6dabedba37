//! A range source that plays a script: each request takes the next step (honest once the
//! script is empty, or the step set with [`ScriptedRanges::always`]), and is recorded.

use crate::client::error::FetchError;
use crate::client::seams::{BoxFuture, Fetched, RangeRequest, RangeSource, Transform};
use crate::protocol::model::FileId;
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tokio::sync::watch;

/// How one request is answered.
#[derive(Debug, Clone)]
pub enum Step {
    /// The bytes asked for, clipped at the end of the file.
    Honest,
    /// This error (use a transient one, e.g. a `Status` 503, for "try again").
    Fail(FetchError),
    /// At most this many bytes from the start of the range (a source breaking its contract).
    Short(u64),
    /// "Not here": `Ok(None)`.
    NotHere,
    /// Waits until [`ScriptedRanges::release`], then answers honestly: a fetch kept in flight.
    Hold,
    /// An honest answer claiming another total size (a file that changed on the CDN).
    TotalIs(u64),
}

pub struct ScriptedRanges {
    files: Mutex<HashMap<FileId, Bytes>>,
    script: Mutex<VecDeque<Step>>,
    /// The step once the script is empty.
    default: Mutex<Step>,
    requests: Mutex<Vec<RangeRequest>>,
    released: watch::Sender<bool>,
}

impl Default for ScriptedRanges {
    fn default() -> Self {
        ScriptedRanges {
            files: Mutex::default(),
            script: Mutex::default(),
            default: Mutex::new(Step::Honest),
            requests: Mutex::default(),
            released: watch::channel(false).0,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ScriptedRanges {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves every file of a memory control plane's catalogue.
    pub fn serving(control: &super::MemoryControlPlane) -> Self {
        let ranges = Self::new();
        for (file, bytes) in control.all_ciphertext() {
            ranges.add_file(file, bytes);
        }
        ranges
    }

    /// Serves `bytes` as `file` (replacing what was there: a file changed on the CDN).
    pub fn add_file(&self, file: FileId, bytes: Bytes) {
        lock(&self.files).insert(file, bytes);
    }

    /// Appends steps to the script.
    pub fn push(&self, step: Step) {
        lock(&self.script).push_back(step);
    }

    /// The step for every request once the script is empty.
    pub fn always(&self, step: Step) {
        *lock(&self.default) = step;
    }

    /// Lets every held request (and every later `Hold`) go on.
    pub fn release(&self) {
        self.released.send_replace(true);
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RangeRequest> {
        lock(&self.requests).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.requests).len()
    }

    fn honest(
        &self,
        r: RangeRequest,
        total_claimed: Option<u64>,
        cap: Option<u64>,
    ) -> Result<Option<Fetched>, FetchError> {
        let Some(bytes) = lock(&self.files).get(&r.file).cloned() else {
            return Err(FetchError::NotFound {
                url: format!("scripted://{}", r.file),
            });
        };
        let total = total_claimed.unwrap_or(bytes.len() as u64);
        if let Some(old) = r.known_total.filter(|&old| old != total) {
            return Err(FetchError::SizeChanged {
                file: r.file,
                old,
                new: total,
            });
        }
        let len = r
            .expected_len(bytes.len() as u64)
            .min(cap.unwrap_or(u64::MAX));
        let start = r.first.min(bytes.len() as u64) as usize;
        let data = BytesMut::from(&bytes[start..start + len as usize]);
        Ok(Some(Fetched { total, data }))
    }
}

impl RangeSource for ScriptedRanges {
    fn fetch<'a>(
        &'a self,
        request: RangeRequest,
        transform: Option<Transform<'a>>,
    ) -> BoxFuture<'a, Result<Option<Fetched>, FetchError>> {
        lock(&self.requests).push(request);
        let step = lock(&self.script)
            .pop_front()
            .unwrap_or_else(|| lock(&self.default).clone());
        let mut released = self.released.subscribe();
        Box::pin(async move {
            let answer = match step {
                Step::Honest => self.honest(request, None, None),
                Step::Fail(error) => Err(error),
                Step::Short(n) => self.honest(request, None, Some(n)),
                Step::NotHere => Ok(None),
                Step::Hold => {
                    // The sender lives as long as `self`, so this only ends on release.
                    let _ = released.wait_for(|&open| open).await;
                    self.honest(request, None, None)
                }
                Step::TotalIs(total) => self.honest(request, Some(total), None),
            };
            let mut answer = answer?;
            if let (Some(fetched), Some(transform)) = (answer.as_mut(), transform) {
                transform(request.first, &mut fetched.data);
            }
            Ok(answer)
        })
    }
}

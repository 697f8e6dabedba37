//! The disk tier's writer threads and what they are sent: pieces to store, and flushes.
//!
//! Why threads of their own: storing a piece is blocking file I/O (create, write, rename),
//! which must never run on the runtime's few workers, and the tier must see how far behind
//! the disk is (`Queued`) to decide whether a fetch waits for room (`tier` module docs).

use super::store::Store;
use crate::protocol::model::FileId;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

/// Writer threads. Storing a piece is mostly waiting (creating an inode, journaling a
/// rename), not CPU: two overlap those waits, so the disk keeps up with the CDN.
const WRITERS: usize = 2;

pub(super) enum Job {
    Write {
        file: FileId,
        block: u64,
        total: u64,
        data: Bytes,
        /// Its room and its share of the backlog, given back once written.
        _room: OwnedSemaphorePermit,
        _queued: Queued,
    },
    Flush(mpsc::Sender<()>),
}

/// Bytes queued for the writers and not yet stored: whether the disk keeps up.
pub(super) struct Queued {
    backlog: Arc<AtomicU64>,
    bytes: u64,
}

impl Queued {
    pub(super) fn new(backlog: &Arc<AtomicU64>, bytes: u64) -> Queued {
        backlog.fetch_add(bytes, Ordering::Relaxed);
        Queued {
            backlog: backlog.clone(),
            bytes,
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.backlog.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Starts the writers: one queue each (empty when no thread could be started: then nothing
/// new is stored), and in tests their threads, to be joined.
pub(super) fn spawn(
    store: &Arc<Store>,
    #[cfg(test)] hold: &Arc<super::test_hold::Hold>,
) -> (Vec<mpsc::Sender<Job>>, Vec<std::thread::JoinHandle<()>>) {
    let mut senders = Vec::with_capacity(WRITERS);
    let mut threads = Vec::new();
    for n in 0..WRITERS {
        let (tx, rx) = mpsc::channel::<Job>();
        let writer_store = store.clone();
        #[cfg(test)]
        let writer_hold = hold.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("trackfs-disk{n}"))
            .spawn(move || {
                for job in rx {
                    #[cfg(test)]
                    writer_hold.pass();
                    match job {
                        Job::Write {
                            file,
                            block,
                            total,
                            data,
                            ..
                        } => writer_store.write(file, block, total, &data),
                        Job::Flush(done) => drop(done.send(())),
                    }
                }
            });
        match spawned {
            Ok(handle) => {
                // Only tests join them; a mount lets them end with their queues.
                if cfg!(test) {
                    threads.push(handle);
                }
                senders.push(tx)
            }
            Err(e) => {
                tracing::warn!("disk cache: no writer thread ({e}); nothing new will be stored");
                senders.clear();
                break;
            }
        }
    }
    (senders, threads)
}

//! A gate tests close to make the disk "hang": the store's reads and writes, the scan and the
//! tier's writers pass through it, and wait while it is closed, like I/O on a spun-down or
//! hung disk.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Gate {
    closed: bool,
    /// Threads waiting at it now.
    waiting: usize,
}

#[derive(Default)]
pub(crate) struct Hold {
    gate: Mutex<Gate>,
    changed: Condvar,
}

impl Hold {
    pub(crate) fn set(&self, closed: bool) {
        self.gate.lock().unwrap_or_else(|p| p.into_inner()).closed = closed;
        self.changed.notify_all();
    }

    /// Returns once the hold is open.
    pub(crate) fn pass(&self) {
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        gate.waiting += 1;
        self.changed.notify_all();
        while gate.closed {
            gate = self.changed.wait(gate).unwrap_or_else(|p| p.into_inner());
        }
        gate.waiting -= 1;
    }

    /// Returns once `n` threads wait at the hold; panics (a test's hang guard) after 30 s.
    pub(crate) fn await_waiting(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        while gate.waiting < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "nothing reached the hold");
            gate = self.changed.wait_timeout(gate, left).unwrap().0;
        }
    }
}

/// A count tests wait on: something happened (a thread found a lock taken, a step ended).
#[derive(Default)]
pub(crate) struct Signal {
    fired: Mutex<usize>,
    changed: Condvar,
}

impl Signal {
    pub(crate) fn fire(&self) {
        *self.fired.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.notify_all();
    }

    /// Returns once it has fired `n` times; panics (a test's hang guard) after 30 s.
    pub(crate) fn await_fired(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut fired = self.fired.lock().unwrap_or_else(|p| p.into_inner());
        while *fired < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "it never fired");
            fired = self.changed.wait_timeout(fired, left).unwrap().0;
        }
    }
}

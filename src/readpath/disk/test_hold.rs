//! A gate tests close to make the disk "hang": the store's reads and the tier's writers pass
//! through it, and wait while it is closed, like I/O on a spun-down or hung disk.

use std::sync::{Condvar, Mutex};

#[derive(Default)]
pub(crate) struct Hold {
    closed: Mutex<bool>,
    opened: Condvar,
}

impl Hold {
    pub(crate) fn set(&self, closed: bool) {
        *self.closed.lock().unwrap_or_else(|p| p.into_inner()) = closed;
        self.opened.notify_all();
    }

    /// Returns once the hold is open.
    pub(crate) fn pass(&self) {
        let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        while *closed {
            closed = self.opened.wait(closed).unwrap_or_else(|p| p.into_inner());
        }
    }
}

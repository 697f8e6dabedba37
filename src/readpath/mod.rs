//! The read path: "plaintext bytes of this stored file, at this offset" answered from cached,
//! decrypted blocks, fetching what is missing through the network seams.
//!
//! - `reader`: block assembly, single-flight fetch runs, decrypt once, first-block checks
//!   (`opening`).
//! - `block_cache`: the memory LRU of decrypted blocks, with claims for single flight.
//! - `readahead`: per-file sequential streams and how far ahead they fetch.
//! - `kernel_window`: the kernel's read-ahead for each open, narrow while a scanner is at work.
//! - `range_set`: the byte ranges already handed to the kernel (so passed blocks can go).
//! - `keys`, `heads`: audio keys and plaintext head files, cached.
//! - `images`: cover pictures, fetched whole once and kept within a budget.
//! - `buffers`: reuse of large response buffers.
//! - `background`: the disk writes of keys and pictures, bounded in number.
//! - `budget`: `--cache-size` split into the parts' limits.

pub(crate) mod background;
pub mod block_cache;
pub(crate) mod budget;
pub(crate) mod buffers;
pub mod disk;
pub(crate) mod heads;
pub(crate) mod images;
pub(crate) mod kernel_window;
pub(crate) mod keys;
pub(crate) mod opening;
pub(crate) mod range_set;
pub mod readahead;
pub mod reader;
#[cfg(test)]
pub(crate) mod test_rig;

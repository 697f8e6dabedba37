//! The disk tier: ciphertext by file id, kept across mounts in the cache directory,
//! checksummed, bounded, least recently used first, pinned files last (docs/design.md, "Disk cache").
//!
//! - `dir`: where the cache lives (per origin, 0700) and its one-mount-at-a-time lock.
//! - `block`: the checked on-disk form of one stored piece.
//! - `store`: the pieces on disk, their order, the bound, pins.
//! - `scan`: reading back what earlier mounts stored, in the background.
//! - `keys`: audio keys, stored only wrapped under the credentials.
//! - `read`: the tier's reads from the store, bounded in time so a hung disk hangs no read.
//! - `tier`: the store as a `RangeSource` over the CDN, writing on threads of its own.
//! - `writers`: those threads, and the backlog that tells the tier whether the disk keeps up.
//! - `offline`: knowing the origin is unreachable, so uncached reads fail at once.

pub(crate) mod block;
pub mod dir;
pub mod keys;
pub mod offline;
pub(crate) mod read;
pub(crate) mod scan;
pub mod store;
#[cfg(test)]
pub(crate) mod test_hold;
pub mod tier;
pub(crate) mod writers;

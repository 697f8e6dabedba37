//! trackfs: mount a catalogue of encrypted, CDN-hosted audio tracks as a read-only directory.
//!
//! One folder per layer, dependencies pointing one way:
//! `mount → fs → readpath → {client, protocol}` and `mount → catalogue → client → protocol`.
//! The origin (`publish`, `serve`) shares only `protocol` (wire types, domain model, crypto and
//! the file formats both sides read) with the client, never its fetch code, so the two cannot
//! agree on the same misreading of the protocol.

pub mod catalogue;
pub mod client;
pub mod demo;
pub(crate) mod fs;
pub mod mount;
pub mod origin;
pub mod protocol;
pub mod readpath;
pub(crate) mod redact;
pub mod stdout;
#[cfg(test)]
pub(crate) mod test_logs;
pub mod units;

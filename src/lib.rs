//! trackfs: mount a catalogue of encrypted, CDN-hosted audio tracks as a read-only directory.
//!
//! Dependencies point one way: `cli → mount → fs → reader → {client, cache, crypto} → model →
//! proto`. The origin (`publish`, `serve`) shares only the protocol's types (`proto`, `model`),
//! `crypto` and the file formats both sides read (`keyfile`, `credentials`, plus `units` for
//! flags) with the client, never its fetch code, so the two cannot agree on the same
//! misreading of the protocol.

pub mod buffers;
pub mod cache;
pub mod catalogue;
pub mod client;
pub mod credentials;
pub mod crypto;
pub mod demo;
pub mod fs;
pub mod fuse;
pub mod heads;
pub mod keyfile;
pub mod keys;
pub mod model;
pub mod mount;
pub mod origin;
pub mod proto;
pub mod readahead;
pub mod reader;
pub mod redact;
pub mod served;
pub mod stdout;
pub mod units;

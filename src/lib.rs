//! trackfs: mount a catalogue of encrypted, CDN-hosted audio tracks as a read-only directory.
//!
//! Dependencies point one way: `cli → fs → reader → {cdn, cache, crypto} → model → proto`.
//! The origin (`publish`, `serve`) shares only `proto`, `model` and `crypto` with the client.

pub mod crypto;
pub mod model;
pub mod origin;
pub mod proto;
pub mod units;

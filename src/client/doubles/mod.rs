//! Test doubles for the two network seams (`client::seams`): the read path, the catalogue
//! loader and the filesystem core run against these in unit tests, with no origin, no socket
//! and no `/dev/fuse`. They are public so integration tests and benchmarks can use them too;
//! nothing in a real mount does.
//!
//! - [`MemoryControlPlane`]: a catalogue of albums, tracks, files, keys and heads built in the
//!   test; each file's plaintext is encrypted with AES-CTR (`protocol::crypto`) on the way in.
//! - [`ScriptedRanges`]: ciphertext per file, answered by a script of steps (honest, failing,
//!   short, not here, held until released, another total), counting every request.

mod memory;
mod scripted;

pub use memory::{MemoryControlPlane, TrackSpec};
pub use scripted::{ScriptedRanges, Step};

//! What the client and the origin agree on: the protobuf wire types, the domain model they are
//! converted into, AES-128-CTR, and the small file formats both sides read (key files,
//! credentials). Nothing here does I/O over the network.

pub mod credentials;
pub mod crypto;
pub mod keyfile;
pub mod model;
pub mod proto;

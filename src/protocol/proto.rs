//! Generated protobuf types, kept in this one module. The rest of the crate works with the
//! domain types of [`crate::protocol::model`], converted with `TryFrom`, so a schema detail never leaks.
#![allow(clippy::all, missing_docs)]

pub mod metadata {
    include!(concat!(env!("OUT_DIR"), "/spotify.metadata.rs"));
}

pub mod storage {
    include!(concat!(env!("OUT_DIR"), "/spotify.download.proto.rs"));
}

pub mod library {
    include!(concat!(env!("OUT_DIR"), "/trackfs.rs"));
}

pub mod playlist4 {
    include!(concat!(env!("OUT_DIR"), "/spotify.playlist4.proto.rs"));
}

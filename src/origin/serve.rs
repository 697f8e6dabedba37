//! `trackfs serve`: placeholder until the origin lands.
use super::ServeConfig;
use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("not implemented")]
    NotImplemented,
}

pub struct RunningOrigin {
    pub addr: SocketAddr,
}

pub async fn start(_config: ServeConfig) -> Result<RunningOrigin, ServeError> {
    Err(ServeError::NotImplemented)
}

pub async fn run(_config: ServeConfig) -> Result<(), ServeError> {
    Err(ServeError::NotImplemented)
}

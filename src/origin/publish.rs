//! `trackfs publish`: placeholder until the origin lands.
use std::path::Path;

#[derive(Debug, Default, Clone)]
pub struct PublishOptions {}

#[derive(Debug, Default, Clone)]
pub struct PublishSummary {}

impl std::fmt::Display for PublishSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "published")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not implemented")]
    NotImplemented,
}

pub fn publish(
    _src: &Path,
    _dst: &Path,
    _o: &PublishOptions,
) -> Result<PublishSummary, PublishError> {
    Err(PublishError::NotImplemented)
}

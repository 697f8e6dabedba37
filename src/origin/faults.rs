//! Faults on demand for the client's tests: which kind, how often, deterministic with a seed.

use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// `500 Internal Server Error`.
    Status500,
    /// `503 Service Unavailable`.
    Status503,
    /// The connection is reset in the middle of the body.
    Reset,
    /// The body ends early (connection closed after fewer bytes than announced).
    Truncate,
    /// The response stalls for `FaultConfig::stall` before (or while) sending the body.
    Stall,
    /// `200` with the whole body, ignoring `Range`.
    IgnoreRange,
    /// `403` as if the signed URL had expired.
    Expired,
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Status500,
        FaultKind::Status503,
        FaultKind::Reset,
        FaultKind::Truncate,
        FaultKind::Stall,
        FaultKind::IgnoreRange,
        FaultKind::Expired,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Status500 => "500",
            FaultKind::Status503 => "503",
            FaultKind::Reset => "reset",
            FaultKind::Truncate => "truncate",
            FaultKind::Stall => "stall",
            FaultKind::IgnoreRange => "ignore-range",
            FaultKind::Expired => "expired",
        }
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault kind {s:?}; choose from {}", names.join(","))
            })
    }
}

#[derive(Debug, Clone)]
pub struct FaultConfig {
    /// Probability in 0..=1 that a CDN request gets a fault.
    pub rate: f64,
    pub kinds: Vec<FaultKind>,
    pub stall: Duration,
    pub seed: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            rate: 0.0,
            kinds: FaultKind::ALL.to_vec(),
            stall: Duration::from_secs(2),
            seed: 0,
        }
    }
}

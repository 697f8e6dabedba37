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

/// One fault drawn for one CDN request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    /// For faults in the body (reset, truncate, mid-body stall): the fraction of the body sent
    /// before the fault, in `0.1..0.9`.
    pub cut: f64,
    /// For `Stall`: stall after part of the body instead of before it.
    pub mid_body: bool,
}

impl Fault {
    /// Bytes of a `len`-byte body sent before the fault.
    pub fn cut_at(&self, len: u64) -> u64 {
        ((len as f64) * self.cut) as u64
    }
}

/// The per-request fault sequence. Every request draws the same number of values whatever
/// the outcome, so a seed gives the same sequence of faults for the same sequence of requests.
#[derive(Debug)]
pub struct FaultPlan {
    rate: f64,
    kinds: Vec<FaultKind>,
    rng: std::sync::Mutex<rand::rngs::StdRng>,
}

impl FaultPlan {
    pub fn new(config: &FaultConfig) -> Self {
        use rand::SeedableRng;
        FaultPlan {
            rate: config.rate.clamp(0.0, 1.0),
            kinds: config.kinds.clone(),
            rng: std::sync::Mutex::new(rand::rngs::StdRng::seed_from_u64(config.seed)),
        }
    }

    /// Decides the next request's fault, if any.
    pub fn next(&self) -> Option<Fault> {
        use rand::Rng;
        if self.rate <= 0.0 || self.kinds.is_empty() {
            return None;
        }
        let (roll, pick, cut, mid_body) = {
            // A poisoned lock only means another request panicked; the RNG state is still fine.
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            (
                rng.gen::<f64>(),
                rng.gen_range(0..self.kinds.len()),
                rng.gen_range(0.1..0.9),
                rng.gen::<bool>(),
            )
        };
        (roll < self.rate).then(|| Fault {
            kind: self.kinds[pick],
            cut,
            mid_body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_a_repeatable_sequence() {
        let config = FaultConfig {
            rate: 0.5,
            seed: 42,
            ..Default::default()
        };
        let draw = |c: &FaultConfig| {
            let plan = FaultPlan::new(c);
            (0..200).map(|_| plan.next()).collect::<Vec<_>>()
        };
        let a = draw(&config);
        assert_eq!(a, draw(&config));
        let faults = a.iter().flatten().count();
        assert!(
            (60..140).contains(&faults),
            "{faults} faults of 200 at rate 0.5"
        );
        let other = FaultConfig { seed: 43, ..config };
        assert_ne!(a, draw(&other));
        let none = FaultConfig::default();
        assert!(draw(&none).iter().all(Option::is_none));
    }

    #[test]
    fn kinds_parse_by_name() {
        assert_eq!("ignore-range".parse(), Ok(FaultKind::IgnoreRange));
        assert!("boom".parse::<FaultKind>().is_err());
    }
}

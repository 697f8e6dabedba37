//! The network side of the client: control plane (`api`), ranged CDN fetches with expiry and
//! failover (`cdn`), one retry policy for both (`retry`), behind a small `transport` trait
//! that tests can fake. The read path sees the network only through the two traits of
//! `seams` (`ControlPlane`, `RangeSource`); `doubles` answers them in memory for tests.

pub mod api;
pub mod cdn;
pub(crate) mod content_range;
pub mod doubles;
pub mod error;
pub(crate) mod expiry;
pub(crate) mod http1;
pub(crate) mod retry;
pub mod seams;
pub mod stats;
#[cfg(test)]
pub(crate) mod testing;
pub(crate) mod transport;

use std::time::Duration;

/// The client's timeouts besides the CDN's own (`cdn::CdnConfig`: stalls, response heads), in
/// one place, so a mount passes them as configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a TCP (and TLS) connection, to the origin or a CDN host.
    pub connect: Duration,
    /// One control-plane request, body included (token, metadata, storage-resolve, key,
    /// head): answers are small protobufs a healthy origin sends in well under this.
    pub control_request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            control_request: Duration::from_secs(15),
        }
    }
}

/// Builds the shared HTTP client: keep-alive pool, rustls, an optional private CA.
pub(crate) fn http_client(
    ca_cert: Option<&[u8]>,
    connect_timeout: Duration,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(http1::MAX_IDLE_TIME)
        .tcp_nodelay(true)
        .use_rustls_tls();
    if let Some(pem) = ca_cert {
        // A bundle may hold several CAs; a file with none would silently trust nothing new.
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("the CA certificate is not valid PEM: {e}"))?;
        if certs.is_empty() {
            return Err("the CA certificate file holds no PEM certificate".into());
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

//! The one HTTP client setup (ureq over rustls): notifications, FleetLock and Prometheus queries.

use std::time::Duration;

/// An agent with a global time limit that returns HTTP error statuses as responses (callers word
/// the error), verifying TLS against the platform's roots.
pub fn agent(timeout: Duration) -> ureq::Agent {
    agent_trusting(timeout, ureq::tls::RootCerts::PlatformVerifier)
}

/// `agent`, verifying TLS against `roots` (e.g. the certificates of `--http-ca-file`).
pub fn agent_trusting(timeout: Duration, roots: ureq::tls::RootCerts) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(roots)
                // The crypto provider libcurl's rustls backend already links: one TLS stack, no OpenSSL.
                .unversioned_rustls_crypto_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .build(),
        )
        .build()
        .into()
}

/// The User-Agent every request sends.
pub const USER_AGENT: &str = concat!("gitops/", env!("CARGO_PKG_VERSION"));

//! Security: mutual TLS 1.3 between every instance, identities, allow-lists, the cluster CA.
//!
//! For deployers and tools; an app author only writes `colony.toml` (see [`Settings`]).
//!
//! Owns: the cluster CA ([`Ca`]), this process's certificate and its renewal
//! ([`MutualTls`]), the TLS [`Dialer`] and [`Listener`] ([`TlsDialer`], [`TlsListener`]),
//! identities ([`spiffe_id`]) and allow-lists ([`CallerPolicy`]), the security settings,
//! and the gateway's HTTPS configuration ([`https_server_config`]). Promises: with TLS on
//! (the default) no connection carries an application byte before both sides proved
//! membership of the cluster; every refusal is logged with its reason. Must not touch:
//! frames and payloads (it hands the `transport` module verified byte streams).
//!
//! # Identities
//!
//! Each instance's certificate carries one URI SAN per service it hosts,
//! `spiffe://<app>/<service path>` (`shop::checkout::pay` → `spiffe://shop/shop/checkout/pay`),
//! or a role for a process that hosts nothing (`@client` → `spiffe://shop/-/client`).
//! A dialer checks that the instance's certificate names the service it meant to call; a
//! listener checks that the caller's certificate names a member of the app that some hosted
//! service's allow-list admits, and the host answers a call to any other service with
//! `Forbidden`.
//!
//! The link to the orchestrator of `colony up` uses the same dialer, expecting the role
//! [`ROLE_ORCHESTRATOR`]; the orchestrator listens with a [`TlsListener`] that hosts
//! nothing (any member of the cluster completes the handshake) and reports each refusal
//! ([`MutualTls::listener_reporting`]), then decides by identity what a peer may do: an
//! instance registers only for the services its certificate names, and only the CLI
//! ([`ROLE_CONTROL`]) may ask for status, scaling or a stop.
//!
//! # Where certificates come from
//!
//! - `APP serve` / `APP run` / `APP call` (with peers) find the cluster CA in
//!   `COLONY_CA_DIR` or `./.colony` (created by `colony certs init`), issue their own
//!   short-lived certificate with it, and renew it before it expires. Convenient on one
//!   machine, but every instance then holds the CA key.
//! - With an issuer (the orchestrator of `colony up --docker`; Kubernetes Secrets) the CA
//!   key stays with the issuer: it calls [`Ca::issue`] for each instance and hands over the
//!   result as files, `COLONY_TLS_CERT`, `COLONY_TLS_KEY` and `COLONY_TLS_CA`; the instance
//!   reloads them when they are rewritten ([`MutualTls::from_files`]).
//! - With neither, and TLS not turned off, a process that must talk to others stops at
//!   start with a message that says how to create a CA.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use colony::control::security::{Ca, CallerPolicy, CertLifetime, MutualTls};
//!
//! let ca = Arc::new(Ca::generate("shop").expect("a CA"));
//! // Certificates valid for a minute, renewed 20 seconds before they expire.
//! let lifetime = CertLifetime::new(Duration::from_secs(60), Duration::from_secs(20)).expect("ok");
//! let tls = MutualTls::from_ca(ca, "shop", &["shop::payment::charge"], lifetime).expect("issued");
//! let callers = CallerPolicy::new().allow("shop::payment::charge", ["shop::checkout::*"]);
//! let listener = tls
//!     .bind("127.0.0.1:0", &["shop::payment::charge"], callers)
//!     .await
//!     .expect("listening");
//! // Serve it with `colony::control::serve(listener, host, shutdown)`.
//! # drop(listener);
//! # }
//! ```

mod ca;
mod https;
mod names;
mod rotation;
mod settings;
mod tls;
mod verify;

use std::sync::Arc;

pub use ca::{CA_CERT_FILE, CA_KEY_FILE, Ca, IssuedCert};
pub use https::{HttpsConfig, https_server_config};
pub use names::{
    CallerPolicy, ROLE_CLIENT, ROLE_CONTROL, ROLE_GATEWAY, ROLE_ORCHESTRATOR, name_of,
    names_in_certificate, pattern_matches, spiffe_id, trust_domain,
};
pub use rotation::{CertLifetime, LeafFiles};
pub use settings::{DEFAULT_CA_DIR, Mode, Settings};
pub use tls::{ListenerStats, MutualTls, RefusalReport, TlsDialer, TlsListener};
pub use verify::Refusal;

pub use crate::error::SecurityError;
use crate::transport::{Dialer, Listener, TcpDialer, TcpListener};

impl SecurityError {
    pub(crate) fn cert(what: &str, reason: impl std::fmt::Display) -> SecurityError {
        SecurityError::Issue {
            what: what.to_owned(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn rustls(e: rustls::Error) -> SecurityError {
        SecurityError::Tls {
            reason: e.to_string(),
        }
    }
}

/// A dialer for a process whose certificate names `names` (its services, or a role such as
/// [`ROLE_GATEWAY`]; none means [`ROLE_CLIENT`]), as this process's settings say: mutual
/// TLS with a certificate from the cluster CA (`COLONY_CA_DIR`, `./.colony`) or from
/// `COLONY_TLS_CERT`, or plaintext TCP after a loud warning when TLS is off.
///
/// For callers other than the binary's own roles: `colony::client::Client`, the gateway.
pub fn dialer_from_env(names: &[&str]) -> Result<Arc<dyn Dialer>, SecurityError> {
    // A dialer hosts nothing, so no allow-list of its own is enforced here.
    Ok(Transport::from_settings(Settings::from_env(&|_| true)?, names, false)?.dialer())
}

/// How a role of the binary connects: mutual TLS as its settings say, or plaintext.
pub(crate) struct Transport {
    tls: Option<MutualTls>,
    callers: CallerPolicy,
}

impl Transport {
    /// For a process that hosts `hosted` and listens (`run`, `serve`); `known` says
    /// whether a name is a service of this binary, for checking the allow-lists.
    pub(crate) fn for_host(
        hosted: &[String],
        known: &dyn Fn(&str) -> bool,
    ) -> Result<Transport, SecurityError> {
        let names: Vec<&str> = hosted.iter().map(String::as_str).collect();
        Transport::from_settings(Settings::from_env(known)?, &names, true)
    }

    /// For `call`, which hosts `hosted` and calls peers if it `has_peers`: TLS only if it
    /// will dial.
    pub(crate) fn for_caller(
        hosted: &[&str],
        has_peers: bool,
        known: &dyn Fn(&str) -> bool,
    ) -> Result<Transport, SecurityError> {
        // No peer and no orchestrator to learn them from: nothing will be dialed.
        if !has_peers && crate::config::env().orchestrator.is_none() {
            return Ok(Transport {
                tls: None,
                callers: CallerPolicy::new(),
            });
        }
        Transport::from_settings(Settings::from_env(known)?, hosted, false)
    }

    fn from_settings(
        settings: Settings,
        hosted: &[&str],
        listens: bool,
    ) -> Result<Transport, SecurityError> {
        if let Mode::Off { by } = &settings.mode {
            tracing::warn!(
                "TLS IS OFF ({by}): this process's connections are plaintext and \
                 unauthenticated, and anyone who reaches its port can call its services. Use \
                 this only for local development and benchmarks."
            );
            if !settings.callers.is_empty() {
                tracing::warn!(
                    "the `callers` allow-lists in colony.toml are not enforced without TLS"
                );
            }
            return Ok(Transport {
                tls: None,
                callers: settings.callers,
            });
        }
        let names: Vec<&str> = if hosted.is_empty() {
            vec![ROLE_CLIENT]
        } else {
            hosted.to_vec()
        };
        let tls = match &settings.leaf {
            Some(files) => {
                let tls = MutualTls::from_files(&settings.app, files)?;
                let unnamed: Vec<&str> = hosted
                    .iter()
                    .copied()
                    .filter(|s| !tls.names().iter().any(|n| n == s))
                    .collect();
                if !unnamed.is_empty() {
                    tracing::warn!(
                        services = %unnamed.join(","),
                        cert = %files.cert.display(),
                        "this instance hosts services its certificate does not name; callers will refuse it for them"
                    );
                }
                tls
            }
            None if Ca::exists_in(&settings.ca_dir) => {
                let ca = Arc::new(Ca::load(&settings.ca_dir)?);
                MutualTls::from_ca(ca, &settings.app, &names, settings.lifetime)?
            }
            None => {
                return Err(SecurityError::NoCa {
                    dir: settings.ca_dir,
                });
            }
        };
        let valid_for = tls
            .not_after()
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            .as_secs();
        if listens {
            tracing::info!(
                identity = %tls.names().join(","),
                trust_domain = %trust_domain(tls.app()),
                valid_for = %format!("{valid_for}s"),
                "mutual TLS on"
            );
        } else {
            tracing::debug!(identity = %tls.names().join(","), "mutual TLS on");
        }
        Ok(Transport {
            tls: Some(tls),
            callers: settings.callers,
        })
    }

    /// The dialer for this process's router.
    pub(crate) fn dialer(&self) -> Arc<dyn Dialer> {
        match &self.tls {
            Some(tls) => Arc::new(tls.dialer()),
            None => Arc::new(TcpDialer),
        }
    }

    /// Listen on `addr` for callers of `hosted`.
    pub(crate) async fn listen(
        &self,
        addr: &str,
        hosted: &[&str],
    ) -> Result<Box<dyn Listener>, SecurityError> {
        match &self.tls {
            Some(tls) => Ok(Box::new(
                tls.bind(addr, hosted, self.callers.clone()).await?,
            )),
            None => Ok(Box::new(TcpListener::bind(addr).await.map_err(|e| {
                SecurityError::Listen {
                    addr: addr.to_owned(),
                    source: e,
                }
            })?)),
        }
    }
}

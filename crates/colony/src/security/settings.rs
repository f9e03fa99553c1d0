//! Security settings: the environment and the security keys of `colony.toml`.
//!
//! Owns: [`Settings`], read once at start. Promises: a value that is wrong (an unknown mode,
//! a bad duration, an allow-list for a service this binary lacks) is an error that names the
//! setting and shows a correct one; keys of `colony.toml` it does not know are left to
//! other readers. Must not touch: certificates.
//!
//! ```toml
//! # colony.toml, next to the app (or COLONY_CONFIG)
//! security = "mtls"            # or "off": plaintext, for local development only
//! cert_lifetime = "24h"
//! cert_renew_before = "8h"
//!
//! [services."shop::payment::charge"]
//! callers = ["shop::checkout::*", "@gateway"]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use super::SecurityError;
use super::names::CallerPolicy;
use super::rotation::{CertLifetime, LeafFiles};
use crate::config::{ColonyToml, ConfigError, Env};

/// Where a process looks for the cluster CA when `COLONY_CA_DIR` is not set.
pub const DEFAULT_CA_DIR: &str = ".colony";

/// Whether connections use mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Mutual TLS 1.3 on every connection (the default).
    Mutual,
    /// Plaintext TCP, for in-process development and benchmarks only.
    Off {
        /// Which setting turned it off, for the warning.
        by: String,
    },
}

/// The security settings of one process.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    /// The app, which names the SPIFFE trust domain: `COLONY_APP`, else the binary's name.
    pub app: String,
    /// TLS on or off.
    pub mode: Mode,
    /// Lifetime and renewal margin of certificates this process issues itself.
    pub lifetime: CertLifetime,
    /// Per-service allow-lists of callers.
    pub callers: CallerPolicy,
    /// Where the cluster CA is: `COLONY_CA_DIR`, else `./.colony`.
    pub ca_dir: PathBuf,
    /// A certificate handed over by an issuer, if any (`COLONY_TLS_CERT`, `COLONY_TLS_KEY`).
    pub leaf: Option<LeafFiles>,
}

impl Settings {
    /// Read the settings of this process from its environment and `colony.toml` (at
    /// `COLONY_CONFIG`, else in the working directory; a missing file means defaults).
    ///
    /// `known` says whether a name is a service of this binary: an allow-list that names
    /// another is refused.
    pub fn from_env(known: &dyn Fn(&str) -> bool) -> Result<Settings, SecurityError> {
        Settings::read(crate::config::env(), crate::identity::app_name(), known)
    }

    // Why this is long: one setting after another (mode, lifetimes, allow-lists, leaf),
    // each with its own message naming where the wrong value came from.
    /// Read the settings from `env` and the `colony.toml` it points to.
    pub(crate) fn read(
        env: &Env,
        app: String,
        known: &dyn Fn(&str) -> bool,
    ) -> Result<Settings, SecurityError> {
        // The orchestrator points every instance at the app's colony.toml, which may not
        // exist: a missing file means defaults, as in the working directory.
        let path = env
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from("colony.toml"));
        let file = ColonyToml::read(&path).map_err(|e| match e {
            ConfigError::Io { path, source } => SecurityError::Io { path, source },
            other => SecurityError::Config {
                reason: other.to_string(),
            },
        })?;
        let where_ = path.display().to_string();

        let mode = match (&env.tls, &file.security) {
            (Some(v), _) => mode_of(v, "COLONY_TLS")?,
            (None, Some(v)) => mode_of(v, &format!("`security` in {where_}"))?,
            (None, None) => Mode::Mutual,
        };

        // The environment's values were checked when it was read (`config::Env`).
        let duration = |from_env: Option<Duration>, key: &str, from_file: &Option<String>| match (
            from_env, from_file,
        ) {
            (Some(d), _) => Ok(Some(d)),
            (None, Some(v)) => {
                crate::config::duration(v)
                    .map(Some)
                    .map_err(|e| SecurityError::Config {
                        reason: format!("`{key}` in {where_}: {e}"),
                    })
            }
            (None, None) => Ok(None),
        };
        let lifetime = duration(env.cert_lifetime, "cert_lifetime", &file.cert_lifetime)?;
        let renew = duration(
            env.cert_renew_before,
            "cert_renew_before",
            &file.cert_renew_before,
        )?;
        let lifetime = match (lifetime, renew) {
            (None, None) => CertLifetime::default(),
            (Some(l), None) => CertLifetime::new(l, l / 3)?,
            (l, Some(r)) => CertLifetime::new(l.unwrap_or(CertLifetime::default().lifetime()), r)?,
        };

        let mut callers = CallerPolicy::new();
        for (service_name, section) in file.services {
            let Some(list) = section.callers else {
                continue;
            };
            if !known(&service_name) {
                return Err(SecurityError::Config {
                    reason: format!(
                        "{where_}: [services.\"{service_name}\"] names no service of this binary; \
                         `APP describe` lists them"
                    ),
                });
            }
            for caller in &list {
                let known = caller == "*"
                    || caller.starts_with('@')
                    || caller.ends_with("::*")
                    || known(caller);
                if !known {
                    return Err(SecurityError::Config {
                        reason: format!(
                            "{where_}: `callers` of `{service_name}` lists `{caller}`, which is \
                             no service of this binary; write a full name \
                             (`shop::checkout::pay`), a module (`shop::checkout::*`) or a role \
                             (`@client`, `@gateway`, `@orchestrator`)"
                        ),
                    });
                }
            }
            callers = callers.allow(service_name, list);
        }

        let leaf = match (env.tls_cert.clone(), env.tls_key.clone()) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => {
                return Err(SecurityError::Config {
                    reason: "set both COLONY_TLS_CERT and COLONY_TLS_KEY (a certificate and its \
                             key), or neither"
                        .to_owned(),
                });
            }
        };
        let ca_dir = env
            .ca_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CA_DIR));
        let leaf = leaf.map(|(cert, key)| {
            let ca = env
                .tls_ca
                .clone()
                .unwrap_or_else(|| ca_dir.join(super::ca::CA_CERT_FILE));
            LeafFiles::new(cert, key, ca)
        });
        Ok(Settings {
            app,
            mode,
            lifetime,
            callers,
            ca_dir,
            leaf,
        })
    }
}

fn mode_of(value: &str, source: &str) -> Result<Mode, SecurityError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "off" | "false" | "0" | "none" | "plaintext" => Ok(Mode::Off {
            by: format!("{source} = {value}"),
        }),
        "on" | "true" | "1" | "mtls" | "tls" => Ok(Mode::Mutual),
        _ => Err(SecurityError::Config {
            reason: format!("{source} is `{value}`; use \"mtls\" (the default) or \"off\""),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, SecurityError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let env =
            Env::read(move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()));
        Settings::read(&env, "app".to_owned(), &|name| name.starts_with("shop::"))
    }

    fn config(text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "colony-settings-{}-{}.toml",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::write(&path, text).expect("writes");
        path
    }

    #[test]
    fn defaults_are_mutual_tls_for_a_day() {
        let s = settings(&[("COLONY_CONFIG", "/nonexistent/colony.toml")]).expect("defaults");
        assert_eq!(s.mode, Mode::Mutual);
        let s = settings(&[]).expect("defaults");
        assert_eq!(s.mode, Mode::Mutual);
        assert_eq!(s.lifetime, CertLifetime::default());
        assert_eq!(s.ca_dir, PathBuf::from(".colony"));
        assert!(s.callers.is_empty());
        assert!(s.leaf.is_none());
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let path = config("security = \"off\"\ncert_lifetime = \"30s\"\n");
        let p = path.to_str().expect("utf-8");
        let s = settings(&[("COLONY_CONFIG", p)]).expect("reads");
        assert!(matches!(&s.mode, Mode::Off { by } if by.contains("security")));
        assert_eq!(s.lifetime.lifetime(), Duration::from_secs(30));
        assert_eq!(s.lifetime.renew_before(), Duration::from_secs(10));
        let s = settings(&[("COLONY_CONFIG", p), ("COLONY_TLS", "on")]).expect("reads");
        assert_eq!(s.mode, Mode::Mutual);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn wrong_values_say_what_to_write() {
        let err = settings(&[("COLONY_TLS", "maybe")]).expect_err("bad mode");
        assert!(err.to_string().contains("\"off\""), "{err}");
        let err = settings(&[
            ("COLONY_CERT_LIFETIME", "10s"),
            ("COLONY_CERT_RENEW_BEFORE", "20s"),
        ])
        .expect_err("margin past lifetime");
        assert!(err.to_string().contains("shorter"), "{err}");
        let err = settings(&[("COLONY_TLS_CERT", "x.pem")]).expect_err("half a leaf");
        assert!(err.to_string().contains("COLONY_TLS_KEY"), "{err}");
        let path = config("[services.\"no::such::service\"]\ncallers = [\"*\"]\n");
        let err = settings(&[("COLONY_CONFIG", path.to_str().expect("utf-8"))])
            .expect_err("unknown service");
        assert!(err.to_string().contains("no::such::service"), "{err}");
        let _ = std::fs::remove_file(path);
    }
}

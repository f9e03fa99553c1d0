//! `colony certs`: the cluster CA that every instance's certificate comes from.
//!
//! Creates it (or imports one the user brings) under the app's `.colony/` directory, with
//! the key readable by its owner only, and a `.gitignore` that keeps it out of git.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use colony::control::security::{CA_CERT_FILE, CA_KEY_FILE, Ca};

/// What `colony certs` does.
#[derive(Subcommand, Debug)]
pub(crate) enum CertsCmd {
    /// Create the cluster CA in the app's `.colony/` (ca.pem, and ca.key with mode 0600).
    Init {
        /// The app's package directory.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Put the CA in this directory instead of PATH/.colony.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Bring your own CA: its certificate (PEM). Needs --ca-key.
        #[arg(long, value_name = "FILE", requires = "ca_key")]
        ca_cert: Option<PathBuf>,
        /// Bring your own CA: its private key (PKCS#8 PEM). Needs --ca-cert.
        #[arg(long, value_name = "FILE", requires = "ca_cert")]
        ca_key: Option<PathBuf>,
        /// Replace an existing CA. Certificates it issued stop being trusted.
        #[arg(long)]
        force: bool,
    },
    /// Show the cluster CA: where it is and its fingerprint.
    Show {
        /// The app's package directory.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// The CA directory instead of PATH/.colony.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

pub(crate) fn run(cmd: CertsCmd) -> anyhow::Result<()> {
    match cmd {
        CertsCmd::Init {
            path,
            dir,
            ca_cert,
            ca_key,
            force,
        } => {
            let dir = dir.unwrap_or_else(|| path.join(".colony"));
            let ca = match (ca_cert, ca_key) {
                (Some(cert), Some(key)) => {
                    let read = |p: &Path| {
                        std::fs::read_to_string(p)
                            .with_context(|| format!("could not read {}", p.display()))
                    };
                    Ca::from_pem(&read(&cert)?, &read(&key)?)?
                }
                _ => Ca::generate(&cluster_name(&path))?,
            };
            ca.save(&dir, force)?;
            println!(
                "cluster CA in {}: {CA_CERT_FILE}, {CA_KEY_FILE} (mode 0600; git-ignored)",
                dir.display()
            );
            println!("fingerprint (SHA-256): {}", ca.fingerprint());
            println!(
                "instances started in {} find it there; elsewhere set COLONY_CA_DIR={}",
                path.display(),
                dir.canonicalize().unwrap_or(dir.clone()).display()
            );
            Ok(())
        }
        CertsCmd::Show { path, dir } => {
            let dir = dir.unwrap_or_else(|| path.join(".colony"));
            let ca = Ca::load(&dir)?;
            println!("cluster CA in {}", dir.display());
            println!("fingerprint (SHA-256): {}", ca.fingerprint());
            print!("{}", ca.cert_pem());
            Ok(())
        }
    }
}

/// A name for the CA: the app directory's name.
fn cluster_name(path: &Path) -> String {
    path.canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "app".to_owned())
}

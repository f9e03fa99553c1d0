//! Who this process is: its app, build fingerprint and instance id.
//!
//! Owns: the values each connection's handshake carries, and the app name that certificates
//! carry. Promises: the fingerprint is the
//! same in every process started from the same executable, and differs between builds.

use std::sync::OnceLock;

/// The build fingerprint: a hash of this process's executable, or `COLONY_FINGERPRINT`.
///
/// Instances with different fingerprints refuse to talk, so a rollout never mixes the
/// message layouts of two builds.
pub fn fingerprint() -> &'static str {
    static FINGERPRINT: OnceLock<String> = OnceLock::new();
    FINGERPRINT.get_or_init(|| {
        if let Some(f) = &crate::config::env().fingerprint {
            return f.clone();
        }
        let hash = std::env::current_exe()
            .and_then(std::fs::read)
            .map(|bytes| xxhash_rust::xxh3::xxh3_64(&bytes))
            // Without a readable executable, fall back to the service table, which still
            // catches the most common mismatch: a changed set of services.
            .unwrap_or_else(|_| {
                let names: Vec<&str> = crate::service::registry().iter().map(|e| e.name).collect();
                xxhash_rust::xxh3::xxh3_64(names.join("\n").as_bytes())
            });
        format!("{hash:016x}")
    })
}

/// This instance's id: `COLONY_INSTANCE`, or the process id and a random suffix.
pub fn instance_id() -> &'static str {
    static INSTANCE: OnceLock<String> = OnceLock::new();
    INSTANCE.get_or_init(|| match &crate::config::env().instance {
        Some(id) => id.clone(),
        None => format!("{}-{:04x}", std::process::id(), fastrand::u16(..)),
    })
}

/// The app's name: `COLONY_APP`, else the file name of this process's executable. It names
/// the app in `describe` and the trust domain of its certificates (`spiffe://<app>/...`).
pub fn app_name() -> String {
    if let Some(app) = &crate::config::env().app {
        return app.clone();
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "app".to_owned())
}

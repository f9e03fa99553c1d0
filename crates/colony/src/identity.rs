//! Who this process is: its app, build fingerprint and instance id.
//!
//! Owns: the values each connection's handshake carries, and the app name that certificates
//! carry. Promises: the fingerprint is the same in every process started from the same
//! executable, differs between builds, and costs microseconds at start.

use std::sync::OnceLock;

/// The build fingerprint: `COLONY_FINGERPRINT`, else a hash of the build id the linker
/// wrote into this executable (`NT_GNU_BUILD_ID`, a hash of the linked output), else a
/// hash of the whole executable.
///
/// Instances with different fingerprints refuse to talk, so a rollout never mixes the
/// message layouts of two builds. Reading the build id costs a few small reads at start;
/// hashing a debug executable of 100 MB or more costs most of a second of CPU, which every
/// start of every instance would pay.
pub fn fingerprint() -> &'static str {
    static FINGERPRINT: OnceLock<String> = OnceLock::new();
    FINGERPRINT.get_or_init(|| {
        if let Some(f) = &crate::config::env().fingerprint {
            return f.clone();
        }
        let exe = std::env::current_exe();
        let hash = exe
            .as_ref()
            .ok()
            .and_then(|path| build_id(path))
            .map(|id| xxhash_rust::xxh3::xxh3_64(&id))
            .or_else(|| {
                exe.and_then(std::fs::read)
                    .ok()
                    .map(|bytes| xxhash_rust::xxh3::xxh3_64(&bytes))
            })
            // Without a readable executable, fall back to the service table, which still
            // catches the most common mismatch: a changed set of services.
            .unwrap_or_else(|| {
                let names: Vec<&str> = crate::service::registry().iter().map(|e| e.name).collect();
                xxhash_rust::xxh3::xxh3_64(names.join("\n").as_bytes())
            });
        format!("{hash:016x}")
    })
}

/// The GNU build id of the 64-bit little-endian ELF file at `path`, from its `PT_NOTE`
/// segments; `None` for any other file, or one without a build id.
fn build_id(path: &std::path::Path) -> Option<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};

    const PT_NOTE: u32 = 4;
    const NT_GNU_BUILD_ID: u32 = 3;
    /// The most note bytes read: build ids are 20 bytes, note segments a few hundred.
    const MAX_NOTES: u64 = 64 * 1024;

    let u16_at = |b: &[u8], at: usize| b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let u64_at = |b: &[u8], at: usize| {
        b.get(at..at + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
    };

    let mut file = std::fs::File::open(path).ok()?;
    let mut header = [0u8; 64];
    file.read_exact(&mut header).ok()?;
    // ELF magic, 64-bit (class 2), little-endian (data 1).
    if header[..4] != *b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let phoff = u64_at(&header, 0x20)?;
    let phentsize = u64::from(u16_at(&header, 0x36)?);
    let phnum = u64::from(u16_at(&header, 0x38)?);
    if phentsize < 56 || phnum > 4096 {
        return None;
    }
    let mut table = vec![0u8; usize::try_from(phentsize * phnum).ok()?];
    file.seek(SeekFrom::Start(phoff)).ok()?;
    file.read_exact(&mut table).ok()?;
    for entry in table.chunks_exact(usize::try_from(phentsize).ok()?) {
        if u32_at(entry, 0)? != PT_NOTE {
            continue;
        }
        let (offset, size) = (u64_at(entry, 0x08)?, u64_at(entry, 0x20)?);
        let mut notes = vec![0u8; usize::try_from(size.min(MAX_NOTES)).ok()?];
        file.seek(SeekFrom::Start(offset)).ok()?;
        file.read_exact(&mut notes).ok()?;
        // Each note: name size, descriptor size, type, then name and descriptor, each
        // padded to 4 bytes.
        let mut at = 0usize;
        while let (Some(namesz), Some(descsz), Some(kind)) = (
            u32_at(&notes, at),
            u32_at(&notes, at + 4),
            u32_at(&notes, at + 8),
        ) {
            let pad = |n: u32| (n as usize).div_ceil(4) * 4;
            let name = notes.get(at + 12..at + 12 + namesz as usize)?;
            let desc_at = at + 12 + pad(namesz);
            let desc = notes.get(desc_at..desc_at + descsz as usize)?;
            if kind == NT_GNU_BUILD_ID && name == b"GNU\0" && !desc.is_empty() {
                return Some(desc.to_vec());
            }
            at = desc_at + pad(descsz);
        }
    }
    None
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_build_id_is_read_when_the_linker_wrote_one() {
        let exe = std::env::current_exe().expect("a test executable");
        // Debian's and most Linux toolchains write one; where there is none, the
        // fingerprint hashes the file instead, and there is nothing to check here.
        if let Some(id) = super::build_id(&exe) {
            assert!((8..=64).contains(&id.len()), "{} bytes", id.len());
            assert_eq!(super::build_id(&exe), Some(id), "stable");
        }
        assert_eq!(super::build_id(std::path::Path::new("/etc/hostname")), None);
        assert_eq!(super::build_id(std::path::Path::new("/nonexistent")), None);
    }
}

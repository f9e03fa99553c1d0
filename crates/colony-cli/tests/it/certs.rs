//! `colony certs init`: the cluster CA's files, their modes, git, and bringing your own CA.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const COLONY: &str = env!("CARGO_BIN_EXE_colony");

fn scratch(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("certs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn run(cwd: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("`{program}` runs: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `colony certs init` bringing in the CA `byo.pem` of `dir` with the key `key`, into `out`.
fn bring_in(dir: &Path, key: &str, out: &str) -> Output {
    run(
        dir,
        COLONY,
        &[
            "certs",
            "init",
            "--ca-cert",
            "byo.pem",
            "--ca-key",
            key,
            "--dir",
            out,
        ],
    )
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("exists")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn init_creates_a_private_git_ignored_ca() {
    let app = scratch("init");
    assert!(run(&app, "git", &["init", "-q"]).status.success());
    let out = run(&app, COLONY, &["certs", "init"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("fingerprint"), "{}", text(&out));
    let key = app.join(".colony/ca.key");
    #[cfg(unix)]
    {
        assert_eq!(mode(&key), 0o600, "the CA key is private");
        assert_eq!(mode(&app.join(".colony")), 0o700);
    }
    // Ignored even in a repository whose own .gitignore does not mention .colony/.
    for file in [".colony/ca.key", ".colony/ca.pem"] {
        let out = run(&app, "git", &["check-ignore", "-q", file]);
        assert!(out.status.success(), "git does not ignore {file}");
    }
    // And the project's root .gitignore ignores every app's .colony/ too.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for file in [".colony/ca.key", "examples/hello/.colony/ca.key"] {
        let out = run(&root, "git", &["check-ignore", "-q", file]);
        assert!(
            out.status.success(),
            "the root .gitignore does not ignore {file}"
        );
    }
    // The CA issues certificates.
    let ca = colony::control::security::Ca::load(&app.join(".colony")).expect("loads");
    ca.issue("app", &["a::b"], std::time::Duration::from_secs(60))
        .expect("issues");

    // A second init keeps the CA unless told otherwise.
    let out = run(&app, COLONY, &["certs", "init"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--force"), "{}", text(&out));
    let out = run(&app, COLONY, &["certs", "init", "--force"]);
    assert!(out.status.success(), "{}", text(&out));
    let _ = std::fs::remove_dir_all(app);
}

#[test]
fn a_ca_made_by_openssl_can_be_brought_in() {
    let dir = scratch("byo");
    let out = run(
        &dir,
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "byo.key",
            "-out",
            "byo.pem",
            "-subj",
            "/CN=Bring your own CA",
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    assert!(out.status.success(), "openssl made a CA: {}", text(&out));
    let out = bring_in(&dir, "byo.key", "ca");
    assert!(out.status.success(), "{}", text(&out));
    #[cfg(unix)]
    assert_eq!(mode(&dir.join("ca/ca.key")), 0o600);
    let ca = colony::control::security::Ca::load(&dir.join("ca")).expect("loads");
    let leaf = ca
        .issue("app", &["a::b"], std::time::Duration::from_secs(60))
        .expect("issues");
    std::fs::write(dir.join("leaf.pem"), &leaf.cert_pem).expect("writes");
    // openssl agrees that the leaf chains to the CA it made.
    let out = run(
        &dir,
        "openssl",
        &["verify", "-CAfile", "byo.pem", "leaf.pem"],
    );
    assert!(out.status.success(), "{}", text(&out));

    // A key that is not the certificate's is refused, saying so.
    let other = colony::control::security::Ca::generate("other").expect("ca");
    other.save(&dir.join("other"), false).expect("saves");
    let out = bring_in(&dir, "other/ca.key", "bad");
    assert!(!out.status.success());
    assert!(text(&out).contains("does not belong"), "{}", text(&out));
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression (the first-hour issue): with `RUST_BACKTRACE=1` every CLI error printed a
/// 30-frame backtrace, and `colony down` with nothing running failed.
#[test]
fn errors_are_one_message_and_down_with_nothing_running_says_so() {
    let dir = scratch("quiet");
    let out = Command::new(COLONY)
        .args(["status", dir.to_str().expect("utf-8")])
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("colony runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("stack backtrace"), "{err}");
    assert!(!err.contains("Stack backtrace"), "{err}");

    let out = run(&dir, COLONY, &["down", dir.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nothing is running"), "{}", text(&out));
}

//! The user's app: building it with cargo, and reading its `describe`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// Build the package at `dir` in release mode and return its binary.
pub(crate) fn build(dir: &Path, bin: Option<&str>) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.exists() {
        bail!(
            "{} has no Cargo.toml; pass the app's package directory, or --app-binary FILE",
            dir.display()
        );
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--message-format=json-render-diagnostics",
        "--manifest-path",
    ])
    .arg(&manifest)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if let Some(bin) = bin {
        cmd.args(["--bin", bin]);
    }
    let out = cmd.output().context("could not run cargo")?;
    if !out.status.success() {
        bail!("the app did not build (see cargo's messages above)");
    }
    let manifest = manifest.canonicalize()?;
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let same_package = msg["manifest_path"]
            .as_str()
            .and_then(|p| Path::new(p).canonicalize().ok())
            .is_some_and(|p| p == manifest);
        if let (true, Some(exe)) = (same_package, msg["executable"].as_str()) {
            binaries.push((
                msg["target"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                PathBuf::from(exe),
            ));
        }
    }
    match binaries.len() {
        0 => bail!(
            "{} builds no binary; a Colony app is a binary crate whose main calls colony::main()",
            dir.display()
        ),
        1 => Ok(binaries.remove(0).1),
        _ => bail!(
            "{} builds several binaries ({}); choose one with --bin NAME",
            dir.display(),
            binaries
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Run `APP describe` and parse its JSON.
pub(crate) fn describe(app: &Path) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(app)
        .arg("describe")
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!(
                "could not run `{} describe`; is it a Colony app binary?",
                app.display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "`{} describe` failed: {}",
            app.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "`{} describe` did not print JSON; is it a Colony app?",
            app.display()
        )
    })
}

/// `colony services APP`.
pub(crate) fn print_services(app: &Path, json: bool) -> anyhow::Result<()> {
    let doc = describe(app)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let mut table = comfy_table::Table::new();
    table.set_header(["SERVICE", "EXPOSED", "HTTP", "ARGS"]);
    for s in doc["services"].as_array().into_iter().flatten() {
        let args: Vec<&str> = s["args"]
            .as_array()
            .map(|a| a.iter().filter_map(|a| a["name"].as_str()).collect())
            .unwrap_or_default();
        table.add_row([
            s["name"].as_str().unwrap_or("?").to_owned(),
            if s["exposed"] == true { "yes" } else { "no" }.to_owned(),
            s["http"].as_str().unwrap_or("-").to_owned(),
            args.join(", "),
        ]);
    }
    println!("{table}");
    Ok(())
}

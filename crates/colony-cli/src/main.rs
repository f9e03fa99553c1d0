//! `colony`: the command that runs, watches and deploys Colony apps.
//!
//! For deployers and tools. It drives the user's own binary through its roles
//! (`APP describe`, `APP serve`, …) and never links the user's code.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(version, about = "Run, watch and deploy Colony apps.")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List the services of a built app: name, route and options.
    Services {
        /// The app's binary (e.g. target/debug/hello).
        app: PathBuf,
        /// Print the app's full JSON description instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Services { app, json } => services(&app, json),
    }
}

fn describe(app: &PathBuf) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(app)
        .arg("describe")
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

fn services(app: &PathBuf, json: bool) -> anyhow::Result<()> {
    let doc = describe(app)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let services = doc["services"].as_array().cloned().unwrap_or_default();
    println!("{:<40} {:<8} {:<24} ARGS", "SERVICE", "EXPOSED", "HTTP");
    for s in &services {
        let args: Vec<&str> = s["args"]
            .as_array()
            .map(|a| a.iter().filter_map(|a| a["name"].as_str()).collect())
            .unwrap_or_default();
        println!(
            "{:<40} {:<8} {:<24} {}",
            s["name"].as_str().unwrap_or("?"),
            if s["exposed"] == true { "yes" } else { "no" },
            s["http"].as_str().unwrap_or("-"),
            args.join(", ")
        );
    }
    Ok(())
}

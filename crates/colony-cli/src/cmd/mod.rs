//! The body of each `colony` subcommand, one file a job; `main.rs` only parses the command
//! line and calls into here.
//!
//! Owns: what each command does with its arguments, and the few steps several commands
//! share (finding `.colony/`, building and describing the app). Must not touch: how the
//! local cluster runs (`local`), what Kubernetes objects are or how they are applied
//! (`kube`): a command calls those, it does not reimplement them.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::{AppArgs, package};

pub(crate) mod build;
pub(crate) mod deploy;
pub(crate) mod down;
pub(crate) mod logs;
pub(crate) mod scale;
pub(crate) mod status;
pub(crate) mod up;

/// `.colony/` of the app in `path`: its cluster's state, events, logs and CA.
pub(crate) fn state_dir(path: &Path) -> PathBuf {
    path.join(".colony")
}

/// The app's binary, directory and description, without starting anything.
pub(crate) fn describe_app(
    args: &AppArgs,
) -> anyhow::Result<(PathBuf, PathBuf, serde_json::Value)> {
    let path = args
        .path
        .canonicalize()
        .with_context(|| format!("{} does not exist", args.path.display()))?;
    let binary = match &args.app_binary {
        Some(b) => b
            .canonicalize()
            .with_context(|| format!("the app binary {} does not exist", b.display()))?,
        None => package::build(&path, args.bin.as_deref())?,
    };
    let describe = package::describe(&binary)?;
    Ok((binary, path, describe))
}

/// The app's name as its binary reports it, else the binary's file name.
pub(crate) fn app_name(describe: &serde_json::Value, binary: &Path) -> String {
    describe["app"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| {
            binary
                .file_stem()
                .map_or_else(|| "app".to_owned(), |s| s.to_string_lossy().into_owned())
        })
}

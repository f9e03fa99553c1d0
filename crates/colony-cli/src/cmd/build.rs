//! `colony build`: one container image for the app.
//!
//! Owns: turning the command's arguments into an `image::Build` and saying what was built.
//! Must not touch: how the image is made (`image`), or any running cluster.

use std::path::PathBuf;

use super::{app_name, describe_app};
use crate::{AppArgs, image};

pub(crate) fn run(
    args: &AppArgs,
    tag: Option<String>,
    base: Option<String>,
    dockerfile_only: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (binary, _, describe) = describe_app(args)?;
    let build = image::Build {
        app: app_name(&describe, &binary),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        fingerprint: describe["fingerprint"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned(),
        binary,
        base,
    };
    if let Some(dir) = dockerfile_only {
        std::fs::create_dir_all(&dir)?;
        image::write_context(&build, &dir)?;
        println!(
            "wrote the build context to {} (docker build {0})",
            dir.display()
        );
        return Ok(());
    }
    let tag = tag.unwrap_or_else(|| image::default_tag(&build));
    image::build_image(&build, &tag)?;
    println!("built {tag}");
    Ok(())
}

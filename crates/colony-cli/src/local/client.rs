//! The CLI's side of the control port: one request to the running orchestrator, one
//! answer (`colony status`, `scale`, `down`, `metrics`, and `up --detach` while it waits).
//!
//! Owns: finding the orchestrator (`.colony/orchestrator.addr`, and in
//! `orchestrator.json` whether it speaks TLS and the app's name), issuing the CLI a
//! short-lived `@control` certificate from the CA in `.colony/`, and refusing a peer that
//! is not `@orchestrator`. Must not touch: the orchestrator's state (it only asks).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use colony::control::discovery::{read_line, write_message};
use colony::control::security::{Ca, CertLifetime, MutualTls, ROLE_CONTROL, ROLE_ORCHESTRATOR};
use colony::control::transport::Dialer;
use tokio::io::BufReader;

pub(crate) use super::control::{Request, Response};
use super::state::{CONTROL_FILE, ControlInfo};

/// Send one request to the orchestrator of the app whose state lives in `state_dir`: over
/// mutual TLS as `@control` with the CA in `state_dir` when the orchestrator uses TLS.
pub(crate) async fn request(state_dir: &Path, request: &Request) -> anyhow::Result<Response> {
    let addr_file = state_dir.join("orchestrator.addr");
    let addr = std::fs::read_to_string(&addr_file).with_context(|| {
        format!(
            "no orchestrator is running for this app ({} is missing); start one with `colony up`",
            addr_file.display()
        )
    })?;
    let addr = addr.trim();
    // An orchestrator that wrote no control file predates TLS on the control port.
    let control: Option<ControlInfo> = std::fs::read(state_dir.join(CONTROL_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let stream = match control {
        Some(ControlInfo { tls: true, app }) => {
            let ca = Ca::load(state_dir).with_context(|| {
                format!(
                    "the orchestrator speaks mutual TLS, and its CA in {} cannot be read; run \
                     colony where it can (as the user who ran `colony up`)",
                    state_dir.display()
                )
            })?;
            // Short-lived: it is used for one request.
            let lifetime = CertLifetime::new(Duration::from_secs(600), Duration::from_secs(300))?;
            let tls = MutualTls::from_ca(Arc::new(ca), &app, &[ROLE_CONTROL], lifetime)
                .context("could not issue the CLI's certificate")?;
            tls.dialer()
                .dial(addr, &[ROLE_ORCHESTRATOR])
                .await
                .with_context(|| {
                    format!(
                        "could not reach the orchestrator at {addr} over mutual TLS; is it \
                         running (`colony status`), and was it started with this CA?"
                    )
                })?
        }
        _ => colony::control::transport::TcpDialer
            .dial(addr, &[])
            .await
            .with_context(|| {
                format!(
                    "the orchestrator at {addr} does not answer; start it again with `colony up`"
                )
            })?,
    };
    let (reader, mut writer) = tokio::io::split(stream);
    write_message(&mut writer, request).await?;
    let mut reader = BufReader::new(reader);
    let line = read_line(&mut reader)
        .await?
        .context("the orchestrator closed the connection without answering")?;
    serde_json::from_str(&line).context("the orchestrator's answer does not parse")
}

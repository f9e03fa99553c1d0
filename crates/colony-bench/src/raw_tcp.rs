//! The floor: raw tokio TCP with length-prefixed frames (a 4-byte big-endian length, then
//! the payload), no serialization, no multiplexing, no per-request task.
//!
//! The server reads whatever has arrived, echoes every complete frame, and writes all the
//! echoes with one `write_all`. Latency is a plain ping-pong on one connection. Throughput
//! is pipelined on one connection: the client keeps `in_flight` frames outstanding, and
//! each time a read brings back `k` replies it sends `k` new frames in one write — the
//! best batching one connection allows, which is what a multiplexing RPC could reach.

use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::measure::{self, Client, Plan, Result, Throughput, Window};

/// Bytes of a frame's length prefix.
const PREFIX: usize = 4;

/// One request frame: the prefix and [`measure::PAYLOAD`].
fn frame() -> Vec<u8> {
    let mut f = Vec::with_capacity(PREFIX + measure::PAYLOAD.len());
    f.extend_from_slice(&(measure::PAYLOAD.len() as u32).to_be_bytes());
    f.extend_from_slice(measure::PAYLOAD);
    f
}

/// The length of the first frame in `buf`, prefix included, if it has all arrived.
fn complete_frame(buf: &[u8]) -> Option<usize> {
    let prefix: [u8; PREFIX] = buf.get(..PREFIX)?.try_into().ok()?;
    let len = PREFIX + u32::from_be_bytes(prefix) as usize;
    (buf.len() >= len).then_some(len)
}

/// Accept connections and echo frames on each, until the runtime stops.
pub(crate) async fn serve(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            if let Err(e) = echo_connection(stream).await {
                eprintln!("raw TCP server: {e}");
            }
        });
    }
}

async fn echo_connection(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        while let Some(len) = complete_frame(&buf) {
            out.extend_from_slice(&buf[..len]);
            buf.advance(len);
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
}

async fn connect(addr: &str) -> Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Read until `buf` holds a complete frame; check it is the echo and consume it.
async fn read_echo(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<()> {
    loop {
        if let Some(len) = complete_frame(buf) {
            measure::check(&buf[PREFIX..len])?;
            buf.advance(len);
            return Ok(());
        }
        if stream.read_buf(buf).await? == 0 {
            return Err("the raw TCP server closed the connection".into());
        }
    }
}

/// A ping-pong client on one connection.
pub(crate) struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
    frame: Vec<u8>,
}

impl RawClient {
    /// Connect to the server at `addr`.
    pub(crate) async fn connect(addr: &str) -> Result<RawClient> {
        Ok(RawClient {
            stream: connect(addr).await?,
            buf: BytesMut::with_capacity(4096),
            frame: frame(),
        })
    }
}

impl Client for RawClient {
    async fn call(&mut self) -> Result<()> {
        self.stream.write_all(&self.frame).await?;
        read_echo(&mut self.stream, &mut self.buf).await
    }
}

/// Pipelined throughput on one connection with `plan.in_flight` frames outstanding.
pub(crate) async fn pipelined_throughput(
    addr: &str,
    plan: Plan,
    server_thread: &str,
) -> Result<Throughput> {
    let mut stream = connect(addr).await?;
    let frame = frame();
    let mut out = frame.repeat(plan.in_flight);
    stream.write_all(&out).await?;
    let mut outstanding = plan.in_flight;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let window = Window::new(plan);
    let (start, end) = (window.start, window.end);
    let mut done = 0u64;
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err("the raw TCP server closed the connection".into());
        }
        let mut replies = 0;
        while let Some(len) = complete_frame(&buf) {
            measure::check(&buf[PREFIX..len])?;
            buf.advance(len);
            replies += 1;
        }
        outstanding -= replies;
        let now = Instant::now();
        if now >= end {
            if outstanding == 0 {
                break;
            }
            continue;
        }
        if now >= start {
            done += replies as u64;
        }
        if replies > 0 {
            out.clear();
            for _ in 0..replies {
                out.extend_from_slice(&frame);
            }
            stream.write_all(&out).await?;
            outstanding += replies;
        }
    }
    Ok(window.finish(done, server_thread).await)
}

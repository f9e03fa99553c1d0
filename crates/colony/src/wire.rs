//! Colony's message protocol: frames and their codec. No I/O happens here.
//!
//! Owns: the byte layout of a frame, the handshake payload and the fault payload, as
//! documented in `docs/protocol.md`. Promises: any byte string either decodes into frames
//! or yields a [`WireError`]; the frame size limit is checked before any allocation.
//! Must not touch: sockets, timers, or the service registry.
//!
//! ```text
//! offset size field
//!      0    4 length       u32 BE: bytes after this field (header + payload), >= 48
//!      4    1 kind         see `Kind`
//!      5    1 trace_flags  W3C trace flags (bit 0: sampled)
//!      6    2 attempt      u16 BE: 0 for a first try, 1.. for retries
//!      8    4 service      u32 BE: the callee's service id (from its handshake)
//!     12    8 request_id   u64 BE: chosen by the side that sent the request
//!     20    8 deadline_us  u64 BE: microseconds left when sent; 0 = no deadline
//!     28   16 trace_id     W3C trace id (all zero = none)
//!     44    8 span_id      W3C parent span id
//!     52    … payload
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// The version of this protocol, exchanged in the handshake.
pub const PROTOCOL_VERSION: u16 = 1;

/// Bytes of the length prefix.
pub const LENGTH_LEN: usize = 4;

/// Bytes of the fixed header that follows the length prefix.
pub const HEADER_LEN: usize = 48;

/// The default limit on one frame's length (header and payload): 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// What a frame is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// First frame on a connection, from each side: payload is a [`Hello`].
    Hello = 1,
    /// A call: payload is the postcard-encoded argument tuple.
    Request = 2,
    /// A successful reply: payload is the postcard-encoded `Ok` value.
    Response = 3,
    /// The service's own error: payload is the postcard-encoded `Err` value.
    Error = 4,
    /// Colony could not complete the call: payload is a [`crate::CallError`].
    Fault = 5,
    /// The caller gave up on `request_id`: empty payload.
    Cancel = 6,
    /// A liveness probe: empty payload, echoed by a `Pong` with the same `request_id`.
    Ping = 7,
    /// The answer to a `Ping`: payload is a postcard [`LoadReport`].
    Pong = 8,
    /// The sender is draining: send it no new requests. Empty payload.
    GoAway = 9,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Request,
            3 => Kind::Response,
            4 => Kind::Error,
            5 => Kind::Fault,
            6 => Kind::Cancel,
            7 => Kind::Ping,
            8 => Kind::Pong,
            9 => Kind::GoAway,
            _ => return None,
        })
    }
}

/// W3C trace context carried by every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct TraceContext {
    /// The trace this call belongs to; all zero when there is none.
    pub trace_id: [u8; 16],
    /// The caller's span, the parent of the callee's.
    pub span_id: [u8; 8],
    /// W3C trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceContext {
    /// Whether this carries a trace at all.
    pub fn is_set(&self) -> bool {
        self.trace_id != [0; 16]
    }
}

/// The fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// What the frame is for.
    pub kind: Kind,
    /// Retry number: 0 for a first try.
    pub attempt: u16,
    /// The callee's service id.
    pub service: u32,
    /// Chosen by the requesting side; replies and cancels carry the same id.
    pub request_id: u64,
    /// Microseconds left when the frame was sent; 0 means no deadline.
    pub deadline_us: u64,
    /// Trace context.
    pub trace: TraceContext,
}

impl Header {
    /// A header of `kind` for `request_id`, with every other field zero.
    pub fn new(kind: Kind, request_id: u64) -> Header {
        Header {
            kind,
            attempt: 0,
            service: 0,
            request_id,
            deadline_us: 0,
            trace: TraceContext::default(),
        }
    }

    fn put(&self, buf: &mut BytesMut) {
        buf.put_u8(self.kind as u8);
        buf.put_u8(self.trace.flags);
        buf.put_u16(self.attempt);
        buf.put_u32(self.service);
        buf.put_u64(self.request_id);
        buf.put_u64(self.deadline_us);
        buf.put_slice(&self.trace.trace_id);
        buf.put_slice(&self.trace.span_id);
    }

    fn get(mut b: &[u8]) -> Result<Header, WireError> {
        let kind_byte = b.get_u8();
        let kind = Kind::from_u8(kind_byte).ok_or(WireError::UnknownKind(kind_byte))?;
        let flags = b.get_u8();
        let attempt = b.get_u16();
        let service = b.get_u32();
        let request_id = b.get_u64();
        let deadline_us = b.get_u64();
        let mut trace_id = [0; 16];
        b.copy_to_slice(&mut trace_id);
        let mut span_id = [0; 8];
        b.copy_to_slice(&mut span_id);
        Ok(Header {
            kind,
            attempt,
            service,
            request_id,
            deadline_us,
            trace: TraceContext {
                trace_id,
                span_id,
                flags,
            },
        })
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The fixed header.
    pub header: Header,
    /// The payload, whose meaning depends on the kind.
    pub payload: Bytes,
}

/// Why bytes could not be decoded into frames. The connection that sent them is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The length prefix announces more than the limit.
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The length prefix announces less than a header.
    #[error("frame of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    TooShort(usize),
    /// The kind byte is not one this version knows.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A payload did not decode.
    #[error("malformed {what}: {reason}")]
    Payload {
        /// Which payload.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// Append one frame to `buf`: length prefix, header, payload.
///
/// # Panics
///
/// Never for payloads under 4 GiB; larger ones are refused by the sender's size check first.
pub fn encode(buf: &mut BytesMut, header: &Header, payload: &[u8]) {
    encode_parts(buf, header, &[payload]);
}

/// Append one frame whose payload is the concatenation of `parts`.
pub(crate) fn encode_parts(buf: &mut BytesMut, header: &Header, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    buf.reserve(LENGTH_LEN + HEADER_LEN + len);
    buf.put_u32((HEADER_LEN + len) as u32);
    header.put(buf);
    for part in parts {
        buf.put_slice(part);
    }
}

/// The longest request id a `Request` may carry, in bytes.
pub(crate) const MAX_REQUEST_ID: usize = 200;

/// The metadata that starts a `Request` payload: the request id as a postcard string
/// (a varint length, then UTF-8 bytes; empty when there is none). The arguments follow.
///
/// Returns the bytes to put before the arguments; ids over [`MAX_REQUEST_ID`] bytes are
/// cut at a character boundary.
pub(crate) fn request_meta(request_id: &str) -> ([u8; 2], &str) {
    let mut end = request_id.len().min(MAX_REQUEST_ID);
    while !request_id.is_char_boundary(end) {
        end -= 1;
    }
    let id = &request_id[..end];
    // MAX_REQUEST_ID < 2^14, so the varint takes at most two bytes.
    let len = id.len() as u16;
    let prefix = if len < 0x80 {
        [len as u8, 0]
    } else {
        [(len as u8 & 0x7f) | 0x80, (len >> 7) as u8]
    };
    (prefix, id)
}

/// The number of bytes of the varint prefix made by [`request_meta`].
pub(crate) fn request_meta_prefix_len(request_id: &str) -> usize {
    if request_id.len().min(MAX_REQUEST_ID) < 0x80 {
        1
    } else {
        2
    }
}

/// Split a `Request` payload into its request id and the encoded arguments.
pub(crate) fn split_request(payload: &Bytes) -> Result<(String, Bytes), WireError> {
    let bad = |reason: &str| WireError::Payload {
        what: "request metadata",
        reason: reason.to_owned(),
    };
    let (len, used) = match payload.first() {
        None => return Err(bad("empty request payload")),
        Some(&b) if b < 0x80 => (b as usize, 1),
        Some(&b) => match payload.get(1) {
            Some(&c) if c < 0x80 => (((c as usize) << 7) | (b & 0x7f) as usize, 2),
            _ => return Err(bad("request id length is not a short varint")),
        },
    };
    if len > MAX_REQUEST_ID {
        return Err(bad("request id is longer than 200 bytes"));
    }
    let end = used + len;
    let id = payload
        .get(used..end)
        .ok_or_else(|| bad("request id runs past the payload"))?;
    let id = std::str::from_utf8(id).map_err(|_| bad("request id is not UTF-8"))?;
    Ok((id.to_owned(), payload.slice(end..)))
}

/// Splits a byte stream into frames, refusing frames over a size limit before allocating.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_frame: usize,
}

impl Decoder {
    /// A decoder that refuses frames whose length field exceeds `max_frame`.
    pub fn new(max_frame: usize) -> Decoder {
        Decoder { max_frame }
    }

    /// The length of the frame at the front of `buf` once its prefix is readable.
    /// Callers use it to reserve exactly what the frame still needs.
    pub fn pending_len(&self, buf: &[u8]) -> Result<Option<usize>, WireError> {
        if buf.len() < LENGTH_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > self.max_frame {
            return Err(WireError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        if len < HEADER_LEN {
            return Err(WireError::TooShort(len));
        }
        Ok(Some(LENGTH_LEN + len))
    }

    /// Take one complete frame off the front of `buf`, if it holds one.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        let Some(total) = self.pending_len(buf)? else {
            return Ok(None);
        };
        if buf.len() < total {
            return Ok(None);
        }
        let mut frame = buf.split_to(total).freeze();
        frame.advance(LENGTH_LEN);
        let header = Header::get(&frame[..HEADER_LEN])?;
        frame.advance(HEADER_LEN);
        Ok(Some(Frame {
            header,
            payload: frame,
        }))
    }
}

/// The handshake each side sends first on a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub protocol: u16,
    /// The sender's build fingerprint; peers with different fingerprints do not talk.
    pub fingerprint: String,
    /// The sender's instance id, for logs and for the orchestrator.
    pub instance: String,
    /// The services the sender hosts: name and the id to put in `Header::service`.
    pub services: Vec<(String, u32)>,
}

impl Hello {
    /// Encode as a frame payload.
    pub fn to_payload(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decode from a frame payload.
    pub fn from_payload(payload: &[u8]) -> Result<Hello, WireError> {
        postcard::from_bytes(payload).map_err(|e| WireError::Payload {
            what: "handshake",
            reason: e.to_string(),
        })
    }
}

/// The load an instance reports in each `Pong`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LoadReport {
    /// Requests being served now.
    pub in_flight: u64,
    /// The instance's limit of requests in flight.
    pub capacity: u64,
    /// Requests completed since start.
    pub completed: u64,
    /// Requests that ended in an error or fault since start.
    pub errors: u64,
    /// Microseconds since start during which at least one request was in flight.
    pub busy_micros: u64,
}

/// A [`crate::CallError`] as sent in a `Fault` frame.
pub(crate) fn encode_fault(err: &crate::CallError) -> Vec<u8> {
    postcard::to_stdvec(err).unwrap_or_default()
}

/// Decode a `Fault` frame's payload.
pub(crate) fn decode_fault(payload: &[u8]) -> Result<crate::CallError, WireError> {
    postcard::from_bytes(payload).map_err(|e| WireError::Payload {
        what: "fault",
        reason: e.to_string(),
    })
}

/// Encode `value` with postcard into a new buffer. It starts at a size that holds most
/// messages, so that encoding one rarely grows the buffer on the way.
pub(crate) fn to_vec<T: serde::Serialize + ?Sized>(value: &T) -> postcard::Result<Vec<u8>> {
    postcard::to_extend(value, Vec::with_capacity(128))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(kind: Kind) -> Header {
        Header {
            kind,
            attempt: 3,
            service: 7,
            request_id: u64::MAX - 1,
            deadline_us: 1_500_000,
            trace: TraceContext {
                trace_id: [0xab; 16],
                span_id: [0xcd; 8],
                flags: 1,
            },
        }
    }

    #[test]
    fn round_trips_a_frame() {
        let mut buf = BytesMut::new();
        encode(&mut buf, &header(Kind::Request), b"hello");
        assert_eq!(buf.len(), LENGTH_LEN + HEADER_LEN + 5);
        let frame = Decoder::new(DEFAULT_MAX_FRAME)
            .decode(&mut buf)
            .expect("valid")
            .expect("complete");
        assert_eq!(frame.header, header(Kind::Request));
        assert_eq!(&frame.payload[..], b"hello");
        assert!(buf.is_empty());
    }

    #[test]
    fn waits_for_a_partial_frame() {
        let mut whole = BytesMut::new();
        encode(&mut whole, &header(Kind::Response), &[1, 2, 3]);
        let decoder = Decoder::new(DEFAULT_MAX_FRAME);
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert_eq!(decoder.decode(&mut part), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn refuses_oversized_frames_before_allocating() {
        let mut buf = BytesMut::new();
        buf.put_u32(1 << 30);
        let err = Decoder::new(1024).decode(&mut buf).expect_err("too large");
        assert_eq!(
            err,
            WireError::TooLarge {
                len: 1 << 30,
                max: 1024
            }
        );
    }

    #[test]
    fn refuses_unknown_kinds_and_short_frames() {
        let mut buf = BytesMut::new();
        encode(&mut buf, &header(Kind::Ping), &[]);
        buf[4] = 200;
        assert_eq!(
            Decoder::new(64).decode(&mut buf),
            Err(WireError::UnknownKind(200))
        );
        let mut short = BytesMut::new();
        short.put_u32(3);
        short.put_slice(&[0, 0, 0]);
        assert_eq!(
            Decoder::new(64).decode(&mut short),
            Err(WireError::TooShort(3))
        );
    }

    #[test]
    fn request_metadata_round_trips() {
        for id in ["", "abc", &"x".repeat(150), &"é".repeat(150)] {
            let (prefix, cut) = request_meta(id);
            let n = request_meta_prefix_len(id);
            let mut payload = prefix[..n].to_vec();
            payload.extend_from_slice(cut.as_bytes());
            payload.extend_from_slice(b"args");
            let (got, args) = split_request(&Bytes::from(payload)).expect("valid");
            assert_eq!(got, cut);
            assert!(id.starts_with(&got) && got.len() <= MAX_REQUEST_ID);
            assert_eq!(&args[..], b"args");
        }
        assert!(split_request(&Bytes::from_static(&[5, b'a'])).is_err());
        assert!(split_request(&Bytes::new()).is_err());
    }

    #[test]
    fn hello_round_trips() {
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            fingerprint: "abc".into(),
            instance: "i-1".into(),
            services: vec![("a::b".into(), 0), ("a::c".into(), 1)],
        };
        assert_eq!(Hello::from_payload(&hello.to_payload()), Ok(hello));
        assert!(Hello::from_payload(&[0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn faults_round_trip() {
        let err = crate::CallError::Overloaded {
            service: "a::b".into(),
            limit: 9,
        };
        assert_eq!(decode_fault(&encode_fault(&err)), Ok(err));
    }

    fn arb_kind() -> impl Strategy<Value = Kind> {
        (1u8..=9).prop_map(|b| Kind::from_u8(b).expect("in range"))
    }

    proptest! {
        #[test]
        fn any_bytes_decode_to_frames_or_a_clean_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let decoder = Decoder::new(256);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = decoder.decode(&mut buf) {
                prop_assert!(frame.payload.len() <= 256 - HEADER_LEN);
            }
        }

        #[test]
        fn any_header_round_trips(kind in arb_kind(), attempt: u16, service: u32, request_id: u64,
                                  deadline_us: u64, trace_id: [u8; 16], span_id: [u8; 8], flags: u8,
                                  payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let h = Header { kind, attempt, service, request_id, deadline_us,
                             trace: TraceContext { trace_id, span_id, flags } };
            let mut buf = BytesMut::new();
            encode(&mut buf, &h, &payload);
            encode(&mut buf, &h, &payload);
            let decoder = Decoder::new(DEFAULT_MAX_FRAME);
            for _ in 0..2 {
                let frame = decoder.decode(&mut buf).expect("valid").expect("complete");
                prop_assert_eq!(frame.header, h);
                prop_assert_eq!(&frame.payload[..], &payload[..]);
            }
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn any_payload_is_a_clean_hello_or_error(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Hello::from_payload(&bytes);
            let _ = decode_fault(&bytes);
            let _ = split_request(&Bytes::from(bytes));
        }
    }
}

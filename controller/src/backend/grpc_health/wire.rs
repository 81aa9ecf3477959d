//! The bytes of one `grpc.health.v1.Health/Check` call, as pure functions: the
//! `HealthCheckRequest` and its gRPC frame going out; the HTTP head, the frames, the
//! `HealthCheckResponse` and the `grpc-status` / `grpc-message` trailers coming back.
//!
//! The protocol (grpc/grpc `doc/PROTOCOL-HTTP2.md`, `doc/health-checking.md`):
//! - a unary call is an HTTP/2 `POST /grpc.health.v1.Health/Check` with
//!   `content-type: application/grpc` and `te: trailers`;
//! - each message is framed as a compressed flag (one byte, 0 = not compressed), its
//!   length (four bytes, big-endian), then the protobuf bytes;
//! - `HealthCheckRequest { string service = 1; }`;
//!   `HealthCheckResponse { ServingStatus status = 1; }` with `UNKNOWN = 0`,
//!   `SERVING = 1`, `NOT_SERVING = 2`, `SERVICE_UNKNOWN = 3`;
//! - the call's outcome is the `grpc-status` trailer (0 = OK) with an optional
//!   percent-encoded `grpc-message`; a call that fails at once may send them in the
//!   headers instead ("trailers-only"). A health server answers `NOT_FOUND` (5) for a
//!   service it does not know.

use std::fmt;

/// The path of the unary call: `/{package}.{service}/{method}`.
pub const PATH: &str = "/grpc.health.v1.Health/Check";

/// The largest message accepted: a `HealthCheckResponse` is at most a dozen bytes.
pub const MAX_MESSAGE: usize = 4 * 1024;

/// The most body bytes read from an answer: one frame of the largest message, and room
/// to notice more.
pub const MAX_BODY: usize = 2 * (PREFIX + MAX_MESSAGE);

/// The length of a frame's prefix: the compressed flag and the message length.
const PREFIX: usize = 5;

/// The `grpc-status` of a call that succeeded.
pub const OK: u32 = 0;

/// The `grpc-status` a health server answers for a service it does not know.
pub const NOT_FOUND: u32 = 5;

/// The status in a `HealthCheckResponse`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServingStatus {
    /// `UNKNOWN` (0), also what an empty message means.
    Unknown,
    /// `SERVING` (1): the only healthy answer.
    Serving,
    /// `NOT_SERVING` (2).
    NotServing,
    /// `SERVICE_UNKNOWN` (3): meant for `Watch`; some servers answer it to `Check`.
    ServiceUnknown,
    /// A value this version of the protocol does not name.
    Other(i32),
}

impl ServingStatus {
    /// The status of an enum value.
    #[must_use]
    pub fn from_value(value: i32) -> Self {
        match value {
            0 => Self::Unknown,
            1 => Self::Serving,
            2 => Self::NotServing,
            3 => Self::ServiceUnknown,
            other => Self::Other(other),
        }
    }
}

impl fmt::Display for ServingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown => f.write_str("UNKNOWN"),
            Self::Serving => f.write_str("SERVING"),
            Self::NotServing => f.write_str("NOT_SERVING"),
            Self::ServiceUnknown => f.write_str("SERVICE_UNKNOWN"),
            Self::Other(n) => write!(f, "an unknown status ({n})"),
        }
    }
}

/// What a finished call answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `grpc-status` OK and one `HealthCheckResponse` with this status.
    Status(ServingStatus),
    /// The call failed with this `grpc-status` (not OK) and message.
    Failed {
        /// The gRPC status code.
        code: u32,
        /// The `grpc-message`, percent-decoded; empty when absent.
        message: String,
    },
}

/// Why an answer is not a well-formed `Health/Check` response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// An HTTP status other than 200: not a gRPC server, or a proxy refusing.
    #[error("answered HTTP status {0}, not a gRPC response (HTTP 200)")]
    HttpStatus(u16),
    /// A `content-type` other than `application/grpc…`.
    #[error("answered content-type {0:?}, not application/grpc")]
    ContentType(String),
    /// Neither the headers nor the trailers carry `grpc-status`.
    #[error("the answer has no grpc-status (the call did not finish)")]
    NoStatus,
    /// A `grpc-status` that is not a number.
    #[error("malformed grpc-status {0:?}")]
    BadStatus(String),
    /// The body ends inside a frame's five-byte prefix.
    #[error("the answer ends inside a message's prefix ({0} of 5 bytes)")]
    TruncatedPrefix(usize),
    /// The body ends before the length its frame announced.
    #[error("the answer ends inside a message ({got} of {expected} bytes)")]
    TruncatedMessage {
        /// The length the frame announced.
        expected: usize,
        /// The bytes there are.
        got: usize,
    },
    /// A compressed flag other than 0 or 1.
    #[error("malformed message frame: compressed flag {0}, expected 0 or 1")]
    BadFlag(u8),
    /// A compressed message, though only `identity` was accepted.
    #[error("the message is compressed, though Vigie accepts only the identity encoding")]
    Compressed,
    /// A frame announcing a message over [`MAX_MESSAGE`].
    #[error("a message of {0} bytes, over the {MAX_MESSAGE} bytes a health answer may have")]
    TooLarge(usize),
    /// A body over [`MAX_BODY`].
    #[error("an answer over {MAX_BODY} bytes")]
    BodyTooLarge,
    /// `grpc-status` OK, but no message.
    #[error("grpc-status OK but no HealthCheckResponse")]
    NoMessage,
    /// More than one message in the answer to a unary call.
    #[error("{0} messages in the answer to a unary call")]
    SeveralMessages(usize),
    /// The message is not a `HealthCheckResponse`.
    #[error("malformed HealthCheckResponse: {0}")]
    Protobuf(&'static str),
}

/// The `HealthCheckRequest` asking about `service`, framed for the request body.
#[must_use]
pub fn request(service: &str) -> Vec<u8> {
    frame(&request_message(service))
}

/// The protobuf bytes of `HealthCheckRequest { service }`: field 1 as a length-delimited
/// string (tag `0x0a`), left out when empty as proto3 leaves out default values.
#[must_use]
pub fn request_message(service: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(service.len() + 11);
    if !service.is_empty() {
        out.push(0x0a);
        put_varint(&mut out, service.len() as u64);
        out.extend_from_slice(service.as_bytes());
    }
    out
}

/// `message` framed: not compressed, its length in four bytes big-endian, the bytes.
///
/// # Panics
/// When `message` is 4 GiB or more, which no request here comes near.
#[must_use]
pub fn frame(message: &[u8]) -> Vec<u8> {
    let length = u32::try_from(message.len()).expect("a message under 4 GiB");
    let mut out = Vec::with_capacity(PREFIX + message.len());
    out.push(0);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(message);
    out
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        // The low seven bits, with the continuation bit.
        out.push(u8::try_from(value & 0x7f).unwrap_or_default() | 0x80);
        value >>= 7;
    }
    out.push(u8::try_from(value).unwrap_or_default());
}

/// The HTTP head of a gRPC answer: status 200 and `content-type: application/grpc`
/// (or `application/grpc+proto`, `application/grpc;…`).
///
/// # Errors
/// Another status or content type.
pub fn check_head(status: u16, content_type: Option<&[u8]>) -> Result<(), WireError> {
    if status != 200 {
        return Err(WireError::HttpStatus(status));
    }
    let content_type = content_type.unwrap_or_default();
    let grpc = content_type
        .strip_prefix(b"application/grpc")
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';');
    if grpc {
        Ok(())
    } else {
        Err(WireError::ContentType(
            String::from_utf8_lossy(content_type).into_owned(),
        ))
    }
}

/// The messages of a response body, each without its frame.
///
/// # Errors
/// A frame cut short, a compressed or unknown flag, a message over [`MAX_MESSAGE`].
pub fn unframe(mut body: &[u8]) -> Result<Vec<&[u8]>, WireError> {
    let mut messages = Vec::new();
    while !body.is_empty() {
        let Some((prefix, rest)) = body.split_first_chunk::<PREFIX>() else {
            return Err(WireError::TruncatedPrefix(body.len()));
        };
        match prefix[0] {
            0 => {}
            1 => return Err(WireError::Compressed),
            flag => return Err(WireError::BadFlag(flag)),
        }
        let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        if length > MAX_MESSAGE {
            return Err(WireError::TooLarge(length));
        }
        if rest.len() < length {
            return Err(WireError::TruncatedMessage {
                expected: length,
                got: rest.len(),
            });
        }
        let (message, next) = rest.split_at(length);
        messages.push(message);
        body = next;
    }
    Ok(messages)
}

/// The status in the protobuf bytes of a `HealthCheckResponse`: field 1, the last one
/// when repeated (as protobuf merges), `UNKNOWN` when absent; other fields skipped.
///
/// # Errors
/// Bytes that are not a protobuf message, or field 1 that is not a varint.
pub fn response_status(mut message: &[u8]) -> Result<ServingStatus, WireError> {
    let mut status = 0_i32;
    while !message.is_empty() {
        let key = varint(&mut message)?;
        let field = key >> 3;
        let wire_type = key & 7;
        if field == 0 {
            return Err(WireError::Protobuf("field number 0"));
        }
        match (field, wire_type) {
            (1, 0) => {
                // An enum is an int32 on the wire: a negative value is sent as ten
                // bytes, and truncation gives it back, as protobuf's parsers do.
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_possible_wrap,
                    reason = "protobuf reads an int32 from a 64-bit varint by truncation"
                )]
                let value = varint(&mut message)? as i32;
                status = value;
            }
            (1, _) => return Err(WireError::Protobuf("field 1 (status) is not a varint")),
            (_, 0) => {
                varint(&mut message)?;
            }
            (_, 1) => skip(&mut message, 8)?,
            (_, 2) => {
                let length = varint(&mut message)?;
                skip(&mut message, usize::try_from(length).unwrap_or(usize::MAX))?;
            }
            (_, 5) => skip(&mut message, 4)?,
            (_, 3 | 4) => return Err(WireError::Protobuf("a group, which proto3 has not")),
            _ => return Err(WireError::Protobuf("an invalid wire type")),
        }
    }
    Ok(ServingStatus::from_value(status))
}

/// Reads a varint from the front of `buf`.
fn varint(buf: &mut &[u8]) -> Result<u64, WireError> {
    let mut value = 0_u64;
    for i in 0..10 {
        let Some((&byte, rest)) = buf.split_first() else {
            return Err(WireError::Protobuf("the message ends inside a varint"));
        };
        *buf = rest;
        if i == 9 && byte > 1 {
            return Err(WireError::Protobuf("a varint over 64 bits"));
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError::Protobuf("a varint over 64 bits"))
}

fn skip(buf: &mut &[u8], n: usize) -> Result<(), WireError> {
    if buf.len() < n {
        return Err(WireError::Protobuf("the message ends inside a field"));
    }
    *buf = &buf[n..];
    Ok(())
}

/// The answer of a finished call, from its `grpc-status` and `grpc-message` (from the
/// trailers, or the headers of a trailers-only answer) and its body.
///
/// # Errors
/// No or a malformed `grpc-status`; with status OK, a body that is not exactly one
/// well-formed `HealthCheckResponse`.
pub fn answer(
    grpc_status: Option<&[u8]>,
    grpc_message: Option<&[u8]>,
    body: &[u8],
) -> Result<Answer, WireError> {
    let Some(status) = grpc_status else {
        return Err(WireError::NoStatus);
    };
    let code = std::str::from_utf8(status)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(|| WireError::BadStatus(String::from_utf8_lossy(status).into_owned()))?;
    if code != OK {
        return Ok(Answer::Failed {
            code,
            message: percent_decode(grpc_message.unwrap_or_default()),
        });
    }
    match unframe(body)?.as_slice() {
        [] => Err(WireError::NoMessage),
        [message] => Ok(Answer::Status(response_status(message)?)),
        several => Err(WireError::SeveralMessages(several.len())),
    }
}

/// A `grpc-message` decoded: `%XX` sequences are bytes of UTF-8 text; a `%` not
/// followed by two hex digits stays as it is, as the protocol asks.
#[must_use]
pub fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%'
            && let (Some(h), Some(l)) = (
                raw.get(i + 1).and_then(|c| hex(*c)),
                raw.get(i + 2).and_then(|c| hex(*c)),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The name of a gRPC status code (`grpc/grpc` `doc/statuscodes.md`).
#[must_use]
pub fn code_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "an unknown code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u8) -> Vec<u8> {
        frame(&[0x08, status])
    }

    #[test]
    fn the_request_is_the_framed_protobuf_of_the_service() {
        // What grpcio's HealthCheckRequest(service="DagsterApi").SerializeToString() gives.
        assert_eq!(request_message("DagsterApi"), b"\x0a\x0aDagsterApi");
        assert_eq!(
            request("DagsterApi"),
            b"\x00\x00\x00\x00\x0c\x0a\x0aDagsterApi"
        );
        // The whole server: an empty message, as proto3 leaves out an empty string.
        assert_eq!(request(""), [0, 0, 0, 0, 0]);
        // A name of 200 bytes takes a two-byte length.
        let long = "s".repeat(200);
        let message = request_message(&long);
        assert_eq!(&message[..3], [0x0a, 0xc8, 0x01]);
        assert_eq!(&message[3..], long.as_bytes());
    }

    #[test]
    fn varints_round_trip_at_every_length() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut bytes = Vec::new();
            put_varint(&mut bytes, value);
            let mut rest = bytes.as_slice();
            assert_eq!(varint(&mut rest), Ok(value));
            assert!(rest.is_empty());
        }
        let mut eleven: &[u8] = &[0xff; 11];
        assert_eq!(
            varint(&mut eleven),
            Err(WireError::Protobuf("a varint over 64 bits"))
        );
        // A tenth byte carrying more than the 64th bit.
        let mut over: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(varint(&mut over).is_err());
        let mut cut: &[u8] = &[0x80, 0x80];
        assert_eq!(
            varint(&mut cut),
            Err(WireError::Protobuf("the message ends inside a varint"))
        );
    }

    #[test]
    fn each_serving_status_is_read() {
        for (byte, status) in [
            (0, ServingStatus::Unknown),
            (1, ServingStatus::Serving),
            (2, ServingStatus::NotServing),
            (3, ServingStatus::ServiceUnknown),
            (9, ServingStatus::Other(9)),
        ] {
            assert_eq!(response_status(&[0x08, byte]), Ok(status));
        }
        // proto3 leaves out UNKNOWN, the default: an empty message.
        assert_eq!(response_status(&[]), Ok(ServingStatus::Unknown));
        // A negative enum value, sent as ten bytes.
        let mut negative = vec![0x08];
        put_varint(&mut negative, (-1_i64).cast_unsigned());
        assert_eq!(response_status(&negative), Ok(ServingStatus::Other(-1)));
        assert_eq!(
            ServingStatus::Other(-1).to_string(),
            "an unknown status (-1)"
        );
        assert_eq!(ServingStatus::NotServing.to_string(), "NOT_SERVING");
    }

    #[test]
    fn unknown_fields_are_skipped_and_the_last_status_wins() {
        let message = [
            0x10, 0x96, 0x01, // field 2, varint 150
            0x19, 1, 2, 3, 4, 5, 6, 7, 8, // field 3, fixed64
            0x22, 0x03, b'a', b'b', b'c', // field 4, 3 bytes
            0x2d, 1, 2, 3, 4, // field 5, fixed32
            0x08, 0x02, // status NOT_SERVING
            0x08, 0x01, // then SERVING: the last one counts
            0xf8, 0x07, 0x00, // field 127 (a two-byte key), varint 0
        ];
        assert_eq!(response_status(&message), Ok(ServingStatus::Serving));
    }

    #[test]
    fn malformed_messages_are_refused() {
        for (bytes, why) in [
            (&[0x08][..], "the message ends inside a varint"),
            (&[0x08, 0x80], "the message ends inside a varint"),
            (&[0x0a, 0x01, 0x01], "field 1 (status) is not a varint"),
            (&[0x0d, 1, 2, 3, 4], "field 1 (status) is not a varint"),
            (&[0x00, 0x01], "field number 0"),
            (&[0x19, 1, 2, 3], "the message ends inside a field"),
            (&[0x22, 0x05, b'a'], "the message ends inside a field"),
            (&[0x2d, 1, 2], "the message ends inside a field"),
            (&[0x1b], "a group, which proto3 has not"),
            (&[0x1c], "a group, which proto3 has not"),
            (&[0x1e], "an invalid wire type"),
            (&[0x1f], "an invalid wire type"),
            (
                &[
                    0x22, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
                "the message ends inside a field",
            ),
        ] {
            assert_eq!(
                response_status(bytes),
                Err(WireError::Protobuf(why)),
                "{bytes:x?}"
            );
        }
    }

    #[test]
    fn frames_are_split_and_bad_ones_refused() {
        assert_eq!(unframe(&[]), Ok(vec![]));
        let two = [response(1), frame(&[])].concat();
        assert_eq!(unframe(&two), Ok(vec![&[0x08, 0x01][..], &[][..]]));
        assert_eq!(unframe(&[0, 0, 0]), Err(WireError::TruncatedPrefix(3)));
        assert_eq!(
            unframe(&[0, 0, 0, 0, 4, 0x08]),
            Err(WireError::TruncatedMessage {
                expected: 4,
                got: 1
            })
        );
        assert_eq!(unframe(&[1, 0, 0, 0, 0]), Err(WireError::Compressed));
        assert_eq!(unframe(&[7, 0, 0, 0, 0]), Err(WireError::BadFlag(7)));
        // Refused on its announced length, before any of it is awaited.
        assert_eq!(
            unframe(&[0, 0xff, 0xff, 0xff, 0xff]),
            Err(WireError::TooLarge(0xffff_ffff))
        );
        let largest = frame(&vec![0; MAX_MESSAGE]);
        assert_eq!(unframe(&largest).unwrap()[0].len(), MAX_MESSAGE);
        assert_eq!(
            unframe(&frame(&vec![0; MAX_MESSAGE + 1])),
            Err(WireError::TooLarge(MAX_MESSAGE + 1))
        );
        // Every cut of a good frame but the whole is refused.
        let good = response(1);
        for cut in 1..good.len() {
            assert!(unframe(&good[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn the_head_must_be_a_grpc_answer() {
        assert_eq!(check_head(200, Some(b"application/grpc")), Ok(()));
        assert_eq!(check_head(200, Some(b"application/grpc+proto")), Ok(()));
        assert_eq!(check_head(200, Some(b"application/grpc;charset=x")), Ok(()));
        assert_eq!(
            check_head(404, Some(b"application/grpc")),
            Err(WireError::HttpStatus(404))
        );
        assert_eq!(
            check_head(200, Some(b"application/grpcx")),
            Err(WireError::ContentType("application/grpcx".into()))
        );
        assert_eq!(
            check_head(200, Some(b"text/html")).unwrap_err().to_string(),
            "answered content-type \"text/html\", not application/grpc"
        );
        assert_eq!(
            check_head(200, None),
            Err(WireError::ContentType(String::new()))
        );
    }

    #[test]
    fn the_answer_comes_from_the_status_then_the_one_message() {
        assert_eq!(
            answer(Some(b"0"), None, &response(1)),
            Ok(Answer::Status(ServingStatus::Serving))
        );
        assert_eq!(
            answer(Some(b"0"), None, &response(2)),
            Ok(Answer::Status(ServingStatus::NotServing))
        );
        // A trailers-only failure: no body, the status and its message.
        assert_eq!(
            answer(Some(b"5"), Some(b"unknown service"), &[]),
            Ok(Answer::Failed {
                code: NOT_FOUND,
                message: "unknown service".into()
            })
        );
        // A failure's body, even a malformed one, is not read.
        assert_eq!(
            answer(Some(b"14"), None, &[9, 9]),
            Ok(Answer::Failed {
                code: 14,
                message: String::new()
            })
        );
        assert_eq!(answer(None, None, &response(1)), Err(WireError::NoStatus));
        for bad in [&b""[..], b"OK", b"-1", b" 0", b"99999999999"] {
            assert!(
                matches!(
                    answer(Some(bad), None, &response(1)),
                    Err(WireError::BadStatus(_))
                ),
                "{bad:?}"
            );
        }
        assert_eq!(answer(Some(b"0"), None, &[]), Err(WireError::NoMessage));
        assert_eq!(
            answer(Some(b"0"), None, &[response(1), response(1)].concat()),
            Err(WireError::SeveralMessages(2))
        );
        assert_eq!(
            answer(Some(b"0"), None, &[1, 0, 0, 0, 0]),
            Err(WireError::Compressed)
        );
        assert_eq!(
            answer(Some(b"0"), None, &frame(&[0x0a, 0x00])),
            Err(WireError::Protobuf("field 1 (status) is not a varint"))
        );
    }

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(percent_decode(b"plain"), "plain");
        assert_eq!(percent_decode(b"50%25 %E2%9C%93 done"), "50% \u{2713} done");
        assert_eq!(percent_decode(b"100%"), "100%");
        assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
        assert_eq!(percent_decode(b"%ff"), "\u{fffd}");
        assert_eq!(code_name(5), "NOT_FOUND");
        assert_eq!(code_name(16), "UNAUTHENTICATED");
        assert_eq!(code_name(17), "an unknown code");
    }

    /// Every body of up to two bytes, and every one-byte change of a good answer: the
    /// decoders answer or refuse, never panic.
    #[test]
    fn no_short_or_mutated_body_panics() {
        for len in 0..=2_usize {
            for n in 0..1_usize << (8 * len) {
                let bytes: Vec<u8> = n.to_le_bytes()[..len].to_vec();
                let _ = unframe(&bytes);
                let _ = response_status(&bytes);
                let _ = answer(Some(b"0"), Some(&bytes), &bytes);
                let _ = percent_decode(&bytes);
            }
        }
        let good = frame(&[0x10, 0x01, 0x08, 0x01]);
        for i in 0..good.len() {
            for byte in 0..=255_u8 {
                let mut bytes = good.clone();
                bytes[i] = byte;
                let _ = answer(Some(b"0"), None, &bytes);
            }
        }
    }

    proptest::proptest! {
        /// Any bytes: decoded or refused, never a panic; a refused frame is never
        /// mistaken for a status.
        #[test]
        fn any_body_is_decoded_or_refused(body in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = response_status(&body);
            if let Ok(messages) = unframe(&body) {
                let total: usize = messages.iter().map(|m| m.len() + PREFIX).sum();
                proptest::prop_assert_eq!(total, body.len());
            }
        }

        /// A framed message comes back whole, and any cut of it is refused.
        #[test]
        fn frames_round_trip(message in proptest::collection::vec(proptest::num::u8::ANY, 0..300), cut in 0..300_usize) {
            let framed = frame(&message);
            proptest::prop_assert_eq!(unframe(&framed), Ok(vec![message.as_slice()]));
            let cut = cut % framed.len();
            if cut > 0 {
                proptest::prop_assert!(unframe(&framed[..cut]).is_err());
            }
        }

        /// A response with any status and unknown fields around it gives that status.
        #[test]
        fn the_status_survives_unknown_fields(
            status in proptest::num::i32::ANY,
            field in 2_u64..1000,
            value in proptest::num::u64::ANY,
            text in "[a-z]{0,20}",
        ) {
            let mut message = Vec::new();
            put_varint(&mut message, field << 3);
            put_varint(&mut message, value);
            message.push(0x08);
            put_varint(&mut message, i64::from(status).cast_unsigned());
            put_varint(&mut message, (field << 3) | 2);
            put_varint(&mut message, text.len() as u64);
            message.extend_from_slice(text.as_bytes());
            proptest::prop_assert_eq!(response_status(&message), Ok(ServingStatus::from_value(status)));
        }

        /// The request of any service name is field 1 holding exactly that name.
        #[test]
        fn the_request_holds_the_service(service in ".{0,300}") {
            let message = request_message(&service);
            let mut rest = message.as_slice();
            if service.is_empty() {
                proptest::prop_assert!(rest.is_empty());
            } else {
                proptest::prop_assert_eq!(varint(&mut rest), Ok(0x0a));
                proptest::prop_assert_eq!(varint(&mut rest), Ok(service.len() as u64));
                proptest::prop_assert_eq!(rest, service.as_bytes());
            }
        }
    }
}

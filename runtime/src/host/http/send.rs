//! The live side of an outgoing request: sending it and reading the whole response, within
//! the limits below, with `ureq` (a blocking client: a host function runs on the worker's own
//! thread, which waits for the response anyway; see the architecture notes for the choice).
//!
//! Whatever happens is an [`Exchange`]: a response, or the `error-code` the guest gets. Both
//! are recorded, so a failure (a refused connection, a timeout, a body past the limit) is
//! replayed as it happened, not retried.

use std::io::Read;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Header names and values, in order, a name repeated once per value.
pub type Entries = Vec<(String, Vec<u8>)>;

/// The most response body one request may bring (recorded whole in one oplog entry): a
/// larger one fails with `HTTP-response-body-size`. 8 MiB keeps an oplog block, which the
/// entry is committed in on its own, far below the 256 MiB a block reader accepts, and a
/// replay's memory moderate; it is also the most a guest may write into a request body.
pub const RESPONSE_BODY_BYTES_MAX: u64 = 8 << 20;
/// See [`RESPONSE_BODY_BYTES_MAX`].
pub const REQUEST_BODY_BYTES_MAX: u64 = 8 << 20;

/// Connecting, when the guest's request options say nothing: long enough for a far server,
/// short enough that a dead address does not hold the worker's thread for minutes (the OS
/// default is about two minutes on Linux).
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Waiting for the response to start, and between reads of it, by default: generous for a
/// slow API, still bounded.
pub const READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
/// A request as a whole, whatever its options: a server trickling bytes just within the read
/// timeout cannot hold the worker's thread for longer.
pub const REQUEST_DURATION_MAX: Duration = Duration::from_secs(10 * 60);

/// What one read of a response body asks for.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// The request options of `wasi:http/types.request-options` (nanoseconds; `None`: default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    pub connect_ns: Option<u64>,
    pub first_byte_ns: Option<u64>,
    pub between_bytes_ns: Option<u64>,
}

/// A request ready to send.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// `GET`, `POST`, ... or another method, as the guest spelled it.
    pub method: String,
    /// `scheme://authority/path?query`.
    pub url: String,
    pub headers: Entries,
    pub body: Vec<u8>,
    pub timeouts: Timeouts,
}

/// What came back, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Exchange {
    Response(Response),
    /// The WAVE text of the `error-code` the guest gets.
    Failed(String),
}

/// A whole response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub status: u16,
    pub headers: Entries,
    pub body: Vec<u8>,
    /// Trailers of a chunked body; `ureq` does not report them, so none are recorded today.
    pub trailers: Option<Entries>,
}

/// The format version of a recorded [`Exchange`] (its first byte in the oplog).
const EXCHANGE_FORMAT: u8 = 1;

impl Exchange {
    /// The bytes recorded in the oplog: a version byte, then postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![EXCHANGE_FORMAT];
        bytes.extend(postcard::to_stdvec(self).expect("encoding into a Vec cannot fail"));
        bytes
    }

    /// Reads what [`Exchange::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&EXCHANGE_FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
            Some((version, _)) => Err(format!("unknown format version {version}")),
            None => Err("empty".into()),
        }
    }
}

/// A `wasi:http` `error-code` case with a message, as WAVE.
pub fn internal_error(message: &str) -> String {
    format!("internal-error(some({}))", crate::abi::wave_string(message))
}

/// Headers `ureq` writes itself from the body it is given (a guest's own would contradict it).
const FRAMING_HEADERS: [&str; 2] = ["content-length", "transfer-encoding"];

/// Sends `request` and reads the whole response (live only; blocks).
pub fn send(request: &Outgoing) -> Exchange {
    let started = std::time::Instant::now();
    let ms = |ns: Option<u64>, default: Duration| ns.map(Duration::from_nanos).unwrap_or(default);
    let timeouts = request.timeouts;
    // ureq has one read timeout, applied to every read: the longer of the two asked for, so
    // that neither fires early.
    let read = ms(timeouts.first_byte_ns, READ_TIMEOUT_DEFAULT)
        .max(ms(timeouts.between_bytes_ns, READ_TIMEOUT_DEFAULT));
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(ms(timeouts.connect_ns, CONNECT_TIMEOUT_DEFAULT))
        .timeout_read(read)
        .timeout_write(read)
        // Not ureq's overall `timeout`, which would replace the read timeout: the bound on the
        // whole request is checked between reads of the body below.
        // wasi:http hands redirects to the guest, as any other response.
        .redirects(0)
        .user_agent(concat!("golemw/", env!("CARGO_PKG_VERSION")))
        .build();
    let mut call = agent.request(&request.method, &request.url);
    // ureq sets one value per name: repeated names are joined, as HTTP allows.
    let mut joined: Vec<(String, String)> = Vec::new();
    for (name, value) in &request.headers {
        let lower = name.to_ascii_lowercase();
        if FRAMING_HEADERS.contains(&lower.as_str()) {
            continue;
        }
        let Ok(value) = std::str::from_utf8(value) else {
            return Exchange::Failed(internal_error(&format!(
                "the value of header {name} is not UTF-8, which this golemw cannot send"
            )));
        };
        match joined
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, values)) => {
                values.push_str(", ");
                values.push_str(value);
            }
            None => joined.push((name.clone(), value.to_string())),
        }
    }
    for (name, value) in &joined {
        call = call.set(name, value);
    }
    let sent = match request.body.is_empty() {
        true => call.call(),
        false => call.send_bytes(&request.body),
    };
    let response = match sent {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(ureq::Error::Transport(transport)) => return Exchange::Failed(error_code(&transport)),
    };
    let status = response.status();
    let mut names = response.headers_names();
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|name| seen.insert(name.clone()));
    let headers: Entries = names
        .iter()
        .flat_map(|name| {
            response
                .all(name)
                .into_iter()
                .map(|value| (name.clone(), value.as_bytes().to_vec()))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut body = Vec::new();
    let mut reader = response.into_reader().take(RESPONSE_BODY_BYTES_MAX + 1);
    let mut chunk = vec![0; READ_CHUNK_BYTES];
    loop {
        if started.elapsed() > REQUEST_DURATION_MAX {
            return Exchange::Failed("HTTP-response-timeout".into());
        }
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Exchange::Failed(io_error_code(&err, "connection-read-timeout")),
        }
    }
    if body.len() as u64 > RESPONSE_BODY_BYTES_MAX {
        return Exchange::Failed(format!(
            "HTTP-response-body-size(some({RESPONSE_BODY_BYTES_MAX}))"
        ));
    }
    Exchange::Response(Response {
        status,
        headers,
        body,
        trailers: None,
    })
}

/// The `error-code` of a failure before a response arrived.
fn error_code(transport: &ureq::Transport) -> String {
    use ureq::ErrorKind;
    let io = io_source(transport);
    match (transport.kind(), io) {
        (ErrorKind::Dns, _) => "DNS-error({rcode: none, info-code: none})".into(),
        (ErrorKind::ConnectionFailed, Some(err)) => io_error_code(err, "connection-timeout"),
        (ErrorKind::ConnectionFailed, None) => "destination-unavailable".into(),
        (ErrorKind::Io, Some(err)) => io_error_code(err, "connection-read-timeout"),
        (ErrorKind::InvalidUrl, _) => "HTTP-request-URI-invalid".into(),
        (ErrorKind::UnknownScheme, _) => internal_error(&format!(
            "{transport} (this golemw sends http:// requests only)"
        )),
        (ErrorKind::BadStatus | ErrorKind::BadHeader | ErrorKind::HTTP, _) => {
            "HTTP-protocol-error".into()
        }
        _ => internal_error(&transport.to_string()),
    }
}

/// The `error-code` of an I/O error; a timeout is `timed_out` (which phase timed out).
fn io_error_code(err: &std::io::Error, timed_out: &str) -> String {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => timed_out.into(),
        ErrorKind::ConnectionRefused => "connection-refused".into(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            "connection-terminated".into()
        }
        ErrorKind::UnexpectedEof => "HTTP-response-incomplete".into(),
        _ => internal_error(&err.to_string()),
    }
}

/// The I/O error under a transport error, if there is one.
fn io_source(transport: &ureq::Transport) -> Option<&std::io::Error> {
    let mut source = std::error::Error::source(transport);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = err.source();
    }
    None
}

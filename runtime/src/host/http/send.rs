//! The live side of an outgoing request: sending it and reading the whole response (status,
//! headers, body, trailers), within the limits below, with hyper's HTTP/1.1 client on a
//! runtime of its own (see the architecture notes for the choice). The worker's thread waits
//! for the answer, and gives up if its invocation is asked to stop.
//!
//! Whatever happens is an [`Exchange`]: a response, or the `error-code` the guest gets. Both
//! are recorded, so a failure (a refused connection, a timeout, a body past the limit) is
//! replayed as it happened, not retried.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::stop::StopSignal;

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
/// Waiting for the response to start, and between frames of its body, by default: generous
/// for a slow API, still bounded.
pub const READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
/// A request as a whole, whatever its options: a server trickling bytes just within the
/// between-bytes timeout cannot hold the worker for longer.
pub const REQUEST_DURATION_MAX: Duration = Duration::from_secs(10 * 60);

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
    /// Trailers of a chunked body, if it had any.
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

    /// Reads what [`Exchange::encode`] wrote; a response no live exchange could have brought
    /// (a body past the limit) is as corrupt as one that does not decode.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let exchange: Exchange = match bytes.split_first() {
            Some((&EXCHANGE_FORMAT, rest)) => {
                postcard::from_bytes(rest).map_err(|e| e.to_string())?
            }
            Some((version, _)) => return Err(format!("unknown format version {version}")),
            None => return Err("empty".into()),
        };
        match &exchange {
            Exchange::Response(response) if response.body.len() as u64 > RESPONSE_BODY_BYTES_MAX => {
                Err(format!(
                    "a body of {} bytes, more than the {RESPONSE_BODY_BYTES_MAX} a response may have",
                    response.body.len()
                ))
            }
            _ => Ok(exchange),
        }
    }
}

/// The `wasi:http` `error-code`s an exchange fails with, as WAVE (besides [`internal_error`]
/// and the body-size cases, which carry a number).
pub mod code {
    pub const DNS_ERROR: &str = "DNS-error({rcode: none, info-code: none})";
    pub const CONNECTION_TIMEOUT: &str = "connection-timeout";
    pub const REFUSED: &str = "connection-refused";
    pub const TERMINATED: &str = "connection-terminated";
    pub const UNAVAILABLE: &str = "destination-unavailable";
    pub const READ_TIMEOUT: &str = "connection-read-timeout";
    pub const URI_INVALID: &str = "HTTP-request-URI-invalid";
    pub const METHOD_INVALID: &str = "HTTP-request-method-invalid";
    pub const PROTOCOL_ERROR: &str = "HTTP-protocol-error";
    pub const INCOMPLETE: &str = "HTTP-response-incomplete";
    pub const RESPONSE_TIMEOUT: &str = "HTTP-response-timeout";
    /// Every case above.
    pub const ALL: [&str; 11] = [
        DNS_ERROR,
        CONNECTION_TIMEOUT,
        REFUSED,
        TERMINATED,
        UNAVAILABLE,
        READ_TIMEOUT,
        URI_INVALID,
        METHOD_INVALID,
        PROTOCOL_ERROR,
        INCOMPLETE,
        RESPONSE_TIMEOUT,
    ];
}

/// The `error-code` of a request body past [`REQUEST_BODY_BYTES_MAX`] (`len` bytes written).
pub fn request_body_size(len: u64) -> String {
    format!("HTTP-request-body-size(some({len}))")
}

/// The `error-code` of a response body past [`RESPONSE_BODY_BYTES_MAX`].
pub fn response_body_size() -> String {
    format!("HTTP-response-body-size(some({RESPONSE_BODY_BYTES_MAX}))")
}

/// A `wasi:http` `error-code` case with a message, as WAVE.
pub fn internal_error(message: &str) -> String {
    format!("internal-error(some({}))", crate::abi::wave_string(message))
}

/// Headers the client writes itself from the body it is given (a guest's own would
/// contradict it, or frame the body some other way).
const FRAMING_HEADERS: [&str; 2] = ["content-length", "transfer-encoding"];

/// How often a request in flight checks whether its invocation was asked to stop.
const STOP_CHECK: Duration = Duration::from_millis(20);

/// The runtime all exchanges of the process run on. One thread: an exchange is all waiting on
/// sockets, and each worker waits for its own on its own thread (see [`send`]).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("golemw-http")
            .enable_io()
            .enable_time()
            .build()
            .expect("the HTTP client's runtime starts")
    })
}

/// Sends `request` and reads the whole response (live only): the calling thread waits for
/// it. `None` if `stop` was given meanwhile (the exchange is abandoned; nothing to record).
pub fn send(request: &Outgoing, stop: Option<&StopSignal>) -> Option<Exchange> {
    let (answer, answered) = std::sync::mpsc::sync_channel(1);
    let request = request.clone();
    let task = runtime().spawn(async move {
        let exchange = tokio::time::timeout(REQUEST_DURATION_MAX, exchange(request))
            .await
            .unwrap_or_else(|_| Exchange::Failed(code::RESPONSE_TIMEOUT.into()));
        let _ = answer.send(exchange);
    });
    loop {
        match answered.recv_timeout(STOP_CHECK) {
            Ok(exchange) => return Some(exchange),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if stop.is_some_and(|s| s.reason().is_some()) {
                    task.abort();
                    return None;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Some(Exchange::Failed(internal_error(
                    "the HTTP client stopped without an answer",
                )))
            }
        }
    }
}

/// One exchange over a connection of its own: resolve, connect, send, read head, body and
/// trailers, each phase under its timeout.
async fn exchange(request: Outgoing) -> Exchange {
    use http_body_util::BodyExt;
    use hyper::body::Bytes;
    let ns = |ns: Option<u64>, default: Duration| ns.map(Duration::from_nanos).unwrap_or(default);
    let timeouts = request.timeouts;
    let failed = Exchange::Failed;
    let Ok(uri) = request.url.parse::<hyper::Uri>() else {
        return failed(code::URI_INVALID.into());
    };
    let (Some(host), Some(path)) = (uri.host(), uri.path_and_query()) else {
        return failed(code::URI_INVALID.into());
    };
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let port = uri.port_u16().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let connect_timeout = ns(timeouts.connect_ns, CONNECT_TIMEOUT_DEFAULT);
    let connecting = async {
        let addresses: Vec<std::net::SocketAddr> = match tokio::net::lookup_host((host, port)).await
        {
            Ok(addresses) => addresses.collect(),
            Err(_) => return Err(code::DNS_ERROR.to_string()),
        };
        let mut last = code::DNS_ERROR.to_string();
        for address in addresses {
            match tokio::net::TcpStream::connect(address).await {
                Ok(stream) => return Ok(stream),
                Err(err) => last = io_error_code(&err, code::CONNECTION_TIMEOUT),
            }
        }
        Err(last)
    };
    let stream = match tokio::time::timeout(connect_timeout, connecting).await {
        Err(_) => return failed(code::CONNECTION_TIMEOUT.into()),
        Ok(Err(code)) => return failed(code),
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(io).await {
        Ok(handshake) => handshake,
        Err(err) => return failed(hyper_error_code(&err)),
    };
    tokio::spawn(async move {
        // Drives the connection; its errors reach the request or the body being read.
        let _ = connection.await;
    });
    let method = match hyper::Method::from_bytes(request.method.as_bytes()) {
        Ok(method) => method,
        Err(_) => return failed(code::METHOD_INVALID.into()),
    };
    let mut builder = hyper::Request::builder().method(method).uri(path.as_str());
    if !request
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        builder = builder.header(hyper::header::HOST, authority.as_str());
    }
    for (name, value) in &request.headers {
        if FRAMING_HEADERS.iter().any(|f| name.eq_ignore_ascii_case(f)) {
            continue;
        }
        builder = builder.header(name.as_str(), value.as_slice());
    }
    let body = http_body_util::Full::new(Bytes::from(request.body));
    let Ok(outgoing) = builder.body(body) else {
        return failed(internal_error(
            "the request's headers do not make an HTTP request",
        ));
    };
    let first_byte = ns(timeouts.first_byte_ns, READ_TIMEOUT_DEFAULT);
    let response = match tokio::time::timeout(first_byte, sender.send_request(outgoing)).await {
        Err(_) => return failed(code::READ_TIMEOUT.into()),
        Ok(Err(err)) => return failed(hyper_error_code(&err)),
        Ok(Ok(response)) => response,
    };
    let status = response.status().as_u16();
    let headers = entries(response.headers());
    let mut incoming = response.into_body();
    let between_bytes = ns(timeouts.between_bytes_ns, READ_TIMEOUT_DEFAULT);
    let mut body = Vec::new();
    let mut trailers = None;
    loop {
        let frame = match tokio::time::timeout(between_bytes, incoming.frame()).await {
            Err(_) => return failed(code::READ_TIMEOUT.into()),
            Ok(None) => break,
            Ok(Some(Err(err))) => return failed(hyper_error_code(&err)),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                if (body.len() + data.len()) as u64 > RESPONSE_BODY_BYTES_MAX {
                    return failed(response_body_size());
                }
                body.extend_from_slice(&data);
            }
            Err(frame) => {
                if let Ok(map) = frame.into_trailers() {
                    trailers = Some(entries(&map));
                }
            }
        }
    }
    Exchange::Response(Response {
        status,
        headers,
        body,
        trailers,
    })
}

/// A header map's names and values, in order.
fn entries(map: &hyper::HeaderMap) -> Entries {
    map.iter()
        .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
        .collect()
}

/// The `error-code` of a failure of the HTTP exchange.
fn hyper_error_code(err: &hyper::Error) -> String {
    if let Some(io) = io_source(err) {
        return io_error_code(io, code::READ_TIMEOUT);
    }
    if err.is_timeout() {
        code::READ_TIMEOUT.into()
    } else if err.is_parse() || err.is_parse_status() {
        code::PROTOCOL_ERROR.into()
    } else if err.is_incomplete_message() {
        code::INCOMPLETE.into()
    } else if err.is_canceled() || err.is_closed() || err.is_body_write_aborted() {
        code::TERMINATED.into()
    } else {
        internal_error(&err.to_string())
    }
}

/// The `error-code` of an I/O error; a timeout is `timed_out` (which phase timed out).
fn io_error_code(err: &std::io::Error, timed_out: &str) -> String {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => timed_out.into(),
        ErrorKind::ConnectionRefused => code::REFUSED.into(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            code::TERMINATED.into()
        }
        ErrorKind::UnexpectedEof => code::INCOMPLETE.into(),
        // What hyper's decoder says of a malformed or oversized chunk or trailer section.
        ErrorKind::InvalidData | ErrorKind::InvalidInput => code::PROTOCOL_ERROR.into(),
        ErrorKind::AddrNotAvailable
        | ErrorKind::NetworkUnreachable
        | ErrorKind::HostUnreachable => code::UNAVAILABLE.into(),
        _ => internal_error(&err.to_string()),
    }
}

/// The I/O error under an error, if there is one.
fn io_source<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut source = err.source();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_wave::value::Type;

    /// `wasi:http/types.error-code`, the cases an exchange can fail with.
    fn error_code_type() -> Type {
        let dns = Type::record([
            ("rcode", Type::option(Type::STRING)),
            ("info-code", Type::option(Type::U16)),
        ])
        .unwrap();
        let size = Some(Type::option(Type::U64));
        let mut cases: Vec<(&str, Option<Type>)> = code::ALL
            .iter()
            .map(|c| (c.split('(').next().unwrap(), None))
            .collect();
        cases.retain(|(c, _)| *c != "DNS-error");
        cases.push(("DNS-error", Some(dns)));
        cases.push(("HTTP-request-body-size", size.clone()));
        cases.push(("HTTP-response-body-size", size));
        cases.push(("internal-error", Some(Type::option(Type::STRING))));
        Type::variant(cases).unwrap()
    }

    #[test]
    fn every_error_code_is_a_case_of_the_wit_variant() {
        let ty = error_code_type();
        let mut texts: Vec<String> = code::ALL.iter().map(|c| c.to_string()).collect();
        texts.push(request_body_size(REQUEST_BODY_BYTES_MAX + 1));
        texts.push(response_body_size());
        texts.push(internal_error("a \"quoted\" message\nover two lines"));
        for text in texts {
            crate::abi::parse_wave(&ty, &text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn a_recorded_exchange_decodes_to_what_was_encoded() {
        let exchange = Exchange::Response(Response {
            status: 201,
            headers: vec![("x".into(), vec![0, 255])],
            body: b"body".to_vec(),
            trailers: Some(vec![("t".into(), b"v".to_vec())]),
        });
        assert_eq!(Exchange::decode(&exchange.encode()), Ok(exchange));
        assert!(Exchange::decode(&[EXCHANGE_FORMAT + 1]).is_err());
        let oversized = Exchange::Response(Response {
            status: 200,
            headers: Vec::new(),
            body: vec![0; RESPONSE_BODY_BYTES_MAX as usize + 1],
            trailers: None,
        });
        assert!(Exchange::decode(&oversized.encode()).is_err());
        assert!(Exchange::decode(&[]).is_err());
    }
}

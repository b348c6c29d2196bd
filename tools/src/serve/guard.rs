//! What keeps other web pages from driving the server. A page the user visits can make their
//! browser send requests to `localhost`: cross-site "simple" requests (a POST with a `text/plain`
//! or form body, or none) go out without asking, and a DNS name rebound to 127.0.0.1 makes even
//! reading the answers possible. So every request must name this server in its `Host` header
//! (a rebound name does not match), and every POST or PUT must say its body is JSON, wasm or
//! raw bytes (content types a browser sends cross-site only after a preflight this server never
//! grants). A server with an access token (required beyond loopback) also wants it on every
//! request.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api_error::ApiError;

/// The `Host` values this server answers to: its listen address and the loopback names with
/// its port, plus those the user allowed (`host` alone allows it on any port).
#[derive(Clone, Debug)]
pub struct AllowedHosts(Arc<HashSet<String>>);

impl AllowedHosts {
    pub fn new(listen: SocketAddr, extra: &[String]) -> Self {
        let port = listen.port();
        let mut hosts: HashSet<String> = [
            listen.to_string(),
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ]
        .into_iter()
        .collect();
        hosts.extend(extra.iter().map(|h| h.trim().to_ascii_lowercase()));
        AllowedHosts(Arc::new(hosts))
    }

    fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        if self.0.contains(&host) {
            return true;
        }
        // An allowed name without a port matches it on any port.
        match host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => self.0.contains(name),
            _ => false,
        }
    }
}

/// The media types a request body may have: JSON, a component, a promise's payload.
const BODY_TYPES: [&str; 3] = [
    "application/json",
    "application/wasm",
    "application/octet-stream",
];

/// The access token requests must carry (`Authorization: Bearer TOKEN`), when the server has
/// one: required to listen beyond loopback, where any machine that reaches the port could
/// otherwise upload and run code.
#[derive(Clone, Debug)]
pub struct Token(Option<Arc<str>>);

impl Token {
    pub fn new(token: Option<String>) -> Self {
        Token(token.map(Arc::from))
    }

    /// Whether `authorization` (the header's value) carries the token; compared in constant
    /// time, so the answer's timing says nothing of how much of a guess was right.
    fn admits(&self, authorization: Option<&str>) -> bool {
        let Some(token) = &self.0 else {
            return true;
        };
        let Some(given) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else {
            return false;
        };
        let (a, b) = (given.trim().as_bytes(), token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
    }
}

/// What the guard checks: the `Host` names and the token.
#[derive(Clone, Debug)]
pub struct Guard {
    pub hosts: AllowedHosts,
    pub token: Token,
}

/// Refuses requests without the server's token (401 `unauthorized`; `/healthz` and the
/// console's static assets, which hold no data, excepted), for another host (403
/// `forbidden-host`), and POST or PUT requests whose `Content-Type` is not one of
/// [`BODY_TYPES`] (415 `unsupported-media-type`).
pub async fn guard(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let public =
        request.uri().path() == "/healthz" || super::console::is_asset(request.uri().path());
    if !public && !guard.token.admits(authorization) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server needs its access token: send `Authorization: Bearer TOKEN` (the token \
             it was started with, GOLEMW_TOKEN or --token-file)",
        )
        .into_response();
    }
    let allowed = &guard.hosts;
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    match host {
        Some(host) if allowed.allows(&host) => {}
        Some(host) => {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden-host",
                format!(
                    "this server does not answer to Host {host:?} (a web page may be trying to \
                     reach it through a rebound name); start it with --allowed-host NAME to \
                     accept a name it is reached by"
                ),
            )
            .into_response()
        }
        None => {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden-host",
                "the request has no Host header",
            )
            .into_response()
        }
    }
    if matches!(*request.method(), Method::POST | Method::PUT) {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !BODY_TYPES.contains(&essence.as_str()) {
            let shown = if content_type.is_empty() {
                "no Content-Type".to_string()
            } else {
                format!("Content-Type {content_type:?}")
            };
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                format!(
                    "a {} request must send Content-Type: application/json (application/wasm for \
                     a component, application/octet-stream for a promise payload), even with an \
                     empty body; it sent {shown} (other types are refused so that web pages \
                     cannot post to the server)",
                    request.method()
                ),
            )
            .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_the_listen_address_loopback_names_and_allowed_names() {
        let listen: SocketAddr = "127.0.0.1:9881".parse().unwrap();
        let allowed = AllowedHosts::new(listen, &["golemw.test".into(), "Box:80".into()]);
        for host in [
            "127.0.0.1:9881",
            "localhost:9881",
            "LOCALHOST:9881",
            "[::1]:9881",
            "golemw.test",
            "golemw.test:1234",
            "box:80",
        ] {
            assert!(allowed.allows(host), "{host}");
        }
        for host in [
            "localhost:9882",
            "evil.example:9881",
            "127.0.0.1",
            "box:81",
            "golemw.test.evil:1",
        ] {
            assert!(!allowed.allows(host), "{host}");
        }
    }
}

//! A worker that makes outgoing HTTP requests through `wasi:http/outgoing-handler`, with the
//! resources of `wasi:http/types` a Rust HTTP client uses: fields, an outgoing request and its
//! options, an outgoing body written through its output stream, the future response and its
//! pollable, the incoming response, its body read through an input stream, and the trailers.

wit_bindgen::generate!({
    world: "golemw:http-client/http-client",
    path: ["../../../wit", "wit"],
    generate_all,
});

use exports::golemw::http_client::api::{Guest, Reply};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, FutureIncomingResponse, IncomingBody, IncomingResponse, Method, OutgoingBody,
    OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

/// What `blocking-write-and-flush` accepts at most per call (wasi:io/streams).
const WRITE_CHUNK_BYTES: usize = 4096;
/// What one read asks for.
const READ_CHUNK_BYTES: u64 = 64 * 1024;

struct HttpClient;

thread_local! {
    /// The response `keep` kept, with its future (which must outlive it).
    static KEPT: std::cell::RefCell<Option<(IncomingResponse, FutureIncomingResponse)>> =
        const { std::cell::RefCell::new(None) };
}

fn entries(fields: &Fields) -> Vec<(String, String)> {
    fields
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect()
}

fn method_of(method: &str) -> Method {
    match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_string()),
    }
}

impl Guest for HttpClient {
    fn send(
        method: String,
        url: String,
        headers: Vec<(String, String)>,
        body: Option<String>,
        timeout_ms: Option<u64>,
    ) -> Result<Reply, String> {
        let (scheme, rest) = url.split_once("://").ok_or("the URL has no scheme")?;
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let fields = Fields::new();
        for (name, value) in &headers {
            fields
                .append(name, value.as_bytes())
                .map_err(|e| format!("header {name}: {e:?}"))?;
        }
        let request = OutgoingRequest::new(fields);
        request
            .set_method(&method_of(&method))
            .map_err(|()| "method")?;
        let scheme = match scheme {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => Scheme::Other(other.to_string()),
        };
        request.set_scheme(Some(&scheme)).map_err(|()| "scheme")?;
        request
            .set_authority(Some(authority))
            .map_err(|()| "authority")?;
        request
            .set_path_with_query(Some(path))
            .map_err(|()| "path")?;
        // Headers handed out by a request are immutable.
        if request.headers().set("x-late", &[b"no".to_vec()]).is_ok() {
            return Err("the request's headers were mutable".into());
        }
        let options = timeout_ms.map(|ms| {
            let options = RequestOptions::new();
            let ns = ms * 1_000_000;
            options
                .set_connect_timeout(Some(ns))
                .expect("connect timeout");
            options
                .set_first_byte_timeout(Some(ns))
                .expect("first-byte timeout");
            options
                .set_between_bytes_timeout(Some(ns))
                .expect("between-bytes timeout");
            options
        });
        let outgoing = match body {
            Some(_) => Some(request.body().map_err(|()| "the body was taken")?),
            None => None,
        };
        let future = outgoing_handler::handle(request, options).map_err(|e| format!("{e:?}"))?;
        if let (Some(outgoing), Some(body)) = (outgoing, body) {
            {
                let stream = outgoing.write().map_err(|()| "the body stream was taken")?;
                for chunk in body.as_bytes().chunks(WRITE_CHUNK_BYTES) {
                    stream
                        .blocking_write_and_flush(chunk)
                        .map_err(|e| format!("write: {e:?}"))?;
                }
            }
            OutgoingBody::finish(outgoing, None).map_err(|e| format!("{e:?}"))?;
        }
        let response = loop {
            match future.get() {
                Some(response) => break response,
                None => future.subscribe().block(),
            }
        };
        let response = response
            .map_err(|()| "the response was taken")?
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status();
        let headers = entries(&response.headers());
        let incoming = response.consume().map_err(|()| "the body was consumed")?;
        let mut bytes = Vec::new();
        {
            let stream = incoming
                .stream()
                .map_err(|()| "the body stream was taken")?;
            loop {
                match stream.blocking_read(READ_CHUNK_BYTES) {
                    Ok(chunk) => bytes.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(e) => return Err(format!("read: {e:?}")),
                }
            }
        }
        let trailers = IncomingBody::finish(incoming);
        let trailers = loop {
            match trailers.get() {
                Some(trailers) => break trailers,
                None => trailers.subscribe().block(),
            }
        };
        let trailers = trailers
            .map_err(|()| "the trailers were taken")?
            .map_err(|e| format!("{e:?}"))?
            .map(|t| entries(&t));
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            body_len: bytes.len() as u64,
            trailers,
        })
    }

    fn post_zeroes(url: String, len: u64) -> Result<u16, String> {
        let (_, rest) = url.split_once("://").ok_or("the URL has no scheme")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let request = OutgoingRequest::new(Fields::new());
        request.set_method(&Method::Post).map_err(|()| "method")?;
        request
            .set_authority(Some(authority))
            .map_err(|()| "authority")?;
        request
            .set_path_with_query(Some(path))
            .map_err(|()| "path")?;
        let outgoing = request.body().map_err(|()| "the body was taken")?;
        {
            let stream = outgoing.write().map_err(|()| "the body stream was taken")?;
            let mut left = len;
            while left > 0 {
                let chunk = left.min(WRITE_CHUNK_BYTES as u64);
                if stream.blocking_write_zeroes_and_flush(chunk).is_err() {
                    break;
                }
                left -= chunk;
            }
        }
        OutgoingBody::finish(outgoing, None).map_err(|e| format!("{e:?}"))?;
        let future = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
        future.subscribe().block();
        let response = future
            .get()
            .ok_or("not ready after block")?
            .map_err(|()| "the response was taken")?
            .map_err(|e| format!("{e:?}"))?;
        Ok(response.status())
    }

    fn keep(url: String) -> Result<(), String> {
        let (_, rest) = url.split_once("://").ok_or("the URL has no scheme")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let headers = Fields::from_list(&[("X-Test".to_string(), b"kept".to_vec())])
            .map_err(|e| format!("{e:?}"))?;
        let request = OutgoingRequest::new(headers);
        request
            .set_authority(Some(authority))
            .map_err(|()| "authority")?;
        request
            .set_path_with_query(Some(path))
            .map_err(|()| "path")?;
        let future = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
        // As Golem's own test component waits: `poll` on the future's pollable.
        let pollable = future.subscribe();
        wasip2::io::poll::poll(&[&pollable]);
        drop(pollable);
        let response = future
            .get()
            .ok_or("not ready after poll")?
            .map_err(|()| "the response was taken")?
            .map_err(|e| format!("{e:?}"))?;
        KEPT.with(|kept| *kept.borrow_mut() = Some((response, future)));
        Ok(())
    }

    fn read_kept() -> Result<String, String> {
        let (response, future) = KEPT
            .with(|kept| kept.borrow_mut().take())
            .ok_or("nothing kept")?;
        let body = response.consume().map_err(|()| "the body was consumed")?;
        let mut bytes = Vec::new();
        {
            let stream = body.stream().map_err(|()| "the body stream was taken")?;
            loop {
                // As Golem's own test component reads: everything there is.
                match stream.read(u64::MAX) {
                    Ok(chunk) => bytes.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(e) => return Err(format!("read: {e:?}")),
                }
            }
        }
        let status = response.status();
        drop(body);
        drop(response);
        drop(future);
        Ok(format!("{status} {}", String::from_utf8_lossy(&bytes)))
    }

    fn wait_unfinished(url: String) -> Result<u16, String> {
        let (_, rest) = url.split_once("://").ok_or("the URL has no scheme")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let request = OutgoingRequest::new(Fields::new());
        request.set_method(&Method::Post).map_err(|()| "method")?;
        request
            .set_authority(Some(authority))
            .map_err(|()| "authority")?;
        request
            .set_path_with_query(Some(path))
            .map_err(|()| "path")?;
        let _body = request.body().map_err(|()| "the body was taken")?;
        let future = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
        loop {
            match future.get() {
                Some(response) => {
                    let response = response
                        .map_err(|()| "the response was taken")?
                        .map_err(|e| format!("{e:?}"))?;
                    return Ok(response.status());
                }
                None => future.subscribe().block(),
            }
        }
    }

    fn set_idempotent(idempotent: bool) {
        golem::api::host::set_idempotence_mode(idempotent);
    }
}

export!(HttpClient);

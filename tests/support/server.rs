//! A real `golemw serve` process on a free port, spoken to over HTTP/1.1 with plain sockets (no
//! client library between the test and the wire), killed with SIGKILL when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

/// A running `golemw serve`; killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    /// `host:port` it listens on.
    pub address: String,
}

impl Server {
    /// Starts `golemw` (the binary at `golemw`) serving `data_dir` with extra `args` after
    /// `serve`, and waits for the address it prints.
    pub fn start_with(golemw: &Path, data_dir: &Path, args: &[&str]) -> Server {
        let child = Command::new(golemw)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--json", "serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start golemw serve");
        let mut server = Server {
            child,
            address: String::new(),
        };
        let mut line = String::new();
        BufReader::new(server.child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let started: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("serve printed {line:?} first: {e}"));
        server.address = started["listening"].as_str().unwrap().to_string();
        server
    }

    /// Sends one request; returns the status code and the JSON body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Value) {
        try_request(&self.address, method, path, headers, body, None)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, &[], b"")
    }

    pub fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        let body = body.to_string();
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    }

    /// Invokes `function` of `worker` (`COMPONENT/NAME`).
    pub fn invoke(&self, worker: &str, function: &str, params: &[&str]) -> (u16, Value) {
        let (component, name) = worker.split_once('/').unwrap();
        self.post_json(
            &format!("/v1/components/{component}/workers/{name}/invoke-and-await"),
            json!({ "function": function, "params": params }),
        )
    }

    /// The result of an invocation that must complete.
    pub fn result(&self, worker: &str, function: &str, params: &[&str]) -> Value {
        let (status, body) = self.invoke(worker, function, params);
        assert_eq!(status, 200, "{function}{params:?} on {worker}: {body}");
        assert_eq!(body["status"], "completed", "{body}");
        body["result"].clone()
    }

    /// Adds the test guest `guest` as component `name`.
    pub fn add_component(&self, name: &str, guest: &str) -> Value {
        let wasm = std::fs::read(crate::guest_wasm(guest)).unwrap();
        let (status, body) = self.request(
            "POST",
            &format!("/v1/components/{name}"),
            &[("Content-Type", "application/wasm")],
            &wasm,
        );
        assert_eq!(status, 201, "{body}");
        body
    }

    /// SIGKILLs the server and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One request to `address`; an error (instead of a panic) when the server cannot be reached
/// or the connection breaks (a killed server), or no answer comes within `timeout`.
pub fn try_request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Option<Duration>,
) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(timeout)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    // The server's own address, unless the caller names another host.
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        head.push_str(&format!("Host: {address}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let broken =
        |what: &str| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what.to_string());
    let response =
        String::from_utf8(response).map_err(|_| broken("a response that is not UTF-8"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| broken("a response cut short"))?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| broken("no status line"))?;
    let body = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{method} {path}: body {body:?} is not JSON: {e}"));
    Ok((status, body))
}

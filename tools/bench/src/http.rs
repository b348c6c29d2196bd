//! A `golemw serve` process for figures that measure the server, and a small HTTP/1.1 client
//! on plain sockets (its own cost stays small and visible next to the server's).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, ensure, Context as _, Result};

/// A `golemw serve` process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub address: String,
}

impl Server {
    pub fn start(golemw: &std::path::Path, dir: &std::path::Path) -> Result<Server> {
        Self::start_with(golemw, dir, &[])
    }

    /// Starts `golemw serve` with `serve_args` added.
    pub fn start_with(
        golemw: &std::path::Path,
        dir: &std::path::Path,
        serve_args: &[&str],
    ) -> Result<Server> {
        let mut child = Command::new(golemw)
            .arg("--data-dir")
            .arg(dir)
            .args(["--json", "serve", "--listen", "127.0.0.1:0"])
            .args(serve_args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting golemw serve")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let started: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("serve printed {line:?}"))?;
        let address = started["listening"]
            .as_str()
            .context("no address printed")?
            .to_string();
        Ok(Server { child, address })
    }

    /// Adds component `name` from `wasm`.
    pub fn add_component(&self, name: &str, wasm: &[u8]) -> Result<()> {
        let mut connection = Connection::open(&self.address)?;
        let (status, answer) = connection.send(
            "POST",
            &format!("/v1/components/{name}"),
            "application/wasm",
            None,
            wasm,
        )?;
        ensure!(status == 201, "adding the component: {status} {answer}");
        Ok(())
    }

    /// The server's counters (`/v1/metrics/io`).
    pub fn metrics(&self) -> Result<serde_json::Value> {
        let mut connection = Connection::open(&self.address)?;
        let (status, answer) = connection.send("GET", "/v1/metrics/io", "", None, b"")?;
        ensure!(status == 200, "/v1/metrics/io: {status} {answer}");
        Ok(serde_json::from_str(&answer)?)
    }

    /// The server's commits and syncs so far.
    pub fn io(&self) -> Result<(u64, u64)> {
        let value = self.metrics()?;
        Ok((
            value["commits"].as_u64().unwrap_or(0),
            value["syncs"].as_u64().unwrap_or(0),
        ))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A keep-alive HTTP/1.1 connection.
pub struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: String,
}

impl Connection {
    pub fn open(address: &str) -> Result<Connection> {
        let stream =
            TcpStream::connect(address).with_context(|| format!("connecting {address}"))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            host: address.to_string(),
        })
    }

    pub fn post(&mut self, path: &str, key: &str, body: &str) -> Result<(u16, String)> {
        self.send("POST", path, "application/json", Some(key), body.as_bytes())
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        key: Option<&str>,
        body: &[u8],
    ) -> Result<(u16, String)> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        if !content_type.is_empty() {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        if let Some(key) = key {
            head.push_str(&format!("Idempotency-Key: {key}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.writer.write_all(&request)?;
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line)?;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no status in {status_line:?}"))?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("the connection closed mid-response");
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse()?;
                }
            }
        }
        let mut answer = vec![0u8; length];
        self.reader.read_exact(&mut answer)?;
        Ok((status, String::from_utf8_lossy(&answer).into_owned()))
    }
}

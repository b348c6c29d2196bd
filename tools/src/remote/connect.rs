//! `golemw worker connect C/W`: follows a worker's output through the server's
//! `GET .../connect` stream (server-sent events) until the server ends it or the user stops it.

use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use super::{worker_path, Remote};
use crate::commands::Context;

impl Remote {
    /// Prints the output of `worker` as it is committed: the text as the guest wrote it (stdout
    /// to stdout, stderr to stderr), or one JSON object per line with `--json`.
    pub fn connect(&self, ctx: &Context, worker: &str, from: Option<u64>) -> Result<ExitCode> {
        let mut url = format!("{}{}/connect", self.url, worker_path(worker)?);
        if let Some(from) = from {
            url.push_str(&format!("?from={from}"));
        }
        // No read timeout: a quiet worker sends nothing for a long time (the server's
        // keep-alive comments come every 15 s).
        let agent = ureq::AgentBuilder::new().build();
        let mut request = agent.get(&url).set("Accept", "text/event-stream");
        if let Some(token) = &self.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        let response = match request.call() {
            Ok(response) => response,
            Err(ureq::Error::Status(status, response)) => {
                let text = response.into_string().unwrap_or_default();
                let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
                match value["error"].as_str() {
                    Some(message) => bail!("{message}"),
                    None => bail!("the server answered {status}: {value}"),
                }
            }
            Err(err) => bail!("the server ({}) did not answer: {err}", self.url),
        };
        let mut event = String::new();
        let mut data = String::new();
        for line in BufReader::new(response.into_reader()).lines() {
            let line = line.context("reading the output stream")?;
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_string();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.trim_start());
            } else if line.is_empty() && !data.is_empty() {
                print_event(ctx, &event, &data)?;
                event.clear();
                data.clear();
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Prints one event of the stream; an `error` event ends the command with its message.
fn print_event(ctx: &Context, event: &str, data: &str) -> Result<()> {
    let value: Value = serde_json::from_str(data)
        .with_context(|| format!("the server sent {event} data that is not JSON: {data}"))?;
    if event == "error" {
        bail!("{}", value["error"].as_str().unwrap_or(data));
    }
    if ctx.json {
        let line = json!({ "stream": event, "index": value["index"], "text": value["text"] });
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        return Ok(());
    }
    let text = value["text"].as_str().unwrap_or_default();
    match event {
        "stderr" => {
            let mut err = std::io::stderr().lock();
            err.write_all(text.as_bytes())?;
            err.flush()?;
        }
        _ => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(())
}

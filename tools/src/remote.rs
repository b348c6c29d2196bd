//! The command line through a running `golemw serve`.
//!
//! A server holds its data directory (one process at a time opens it) and leaves its address in
//! `<data-dir>/server.json`. A `golemw worker ...` or `golemw component ...` command that finds
//! the directory held by a server with that file sends its request to the server's HTTP API
//! instead, and prints what the local command would. `-v` says which one answered.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use golemw_runtime::component::ComponentRecord;
use golemw_runtime::WorkerRecord;
use serde_json::{json, Value};

use crate::commands::component::{self, ComponentCommand};
use crate::commands::worker::{self, WorkerCommand};
use crate::commands::Context;
use crate::output;
use crate::views::{OplogRow, WorkerDetails};

mod connect;

/// Where a server leaves its address.
const SERVER_FILE: &str = "server.json";

/// How long a request to the server may take: invocations wait for their result, so this is
/// generous; a server that does not answer at all is reported after it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

/// Writes the server's address into its data directory; the file is removed when the guard is
/// dropped (a killed server leaves it, and the next command sees the directory is not held).
pub struct Advertised(PathBuf);

impl Advertised {
    pub fn write(data_dir: &Path, url: &str, token: Option<&str>) -> Result<Advertised> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = data_dir.join(SERVER_FILE);
        let body = json!({ "url": url, "pid": std::process::id(), "token": token }).to_string();
        // Written whole, then renamed: a reader never sees half a file. Readable by its owner
        // only: it may hold the access token.
        let partial = data_dir.join(format!("{SERVER_FILE}.partial"));
        let _ = std::fs::remove_file(&partial);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .and_then(|mut file| file.write_all(body.as_bytes()))
            .with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(Advertised(path))
    }
}

impl Drop for Advertised {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The server answered that the guest exited with `code` (`proc_exit`).
#[derive(Debug)]
pub struct GuestExit {
    pub message: String,
    pub code: u32,
}

impl std::fmt::Display for GuestExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for GuestExit {}

/// A running server of the data directory.
pub struct Remote {
    url: String,
    pid: u64,
    /// The server's access token, if it has one.
    token: Option<String>,
    agent: ureq::Agent,
}

impl Remote {
    /// The server holding `data_dir`, if one does: its file is there and the directory's lock is
    /// taken. A file left by a killed server (the lock is free) is ignored.
    pub fn find(data_dir: &Path) -> Result<Option<Remote>> {
        let path = data_dir.join(SERVER_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        if !lock_is_held(data_dir) {
            return Ok(None);
        }
        let info: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not the JSON a server writes", path.display()))?;
        let url = info["url"]
            .as_str()
            .with_context(|| format!("{} has no url", path.display()))?
            .to_string();
        let agent = ureq::AgentBuilder::new().timeout(REQUEST_TIMEOUT).build();
        Ok(Some(Remote {
            url,
            pid: info["pid"].as_u64().unwrap_or(0),
            token: info["token"].as_str().map(str::to_string),
            agent,
        }))
    }

    /// Sends a request; returns the status and the JSON body (errors of the API included).
    fn send(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<(&str, &[u8])>,
    ) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.url);
        tracing::info!(%url, pid = self.pid, "answered by the server holding the data directory");
        let mut request = self.agent.request(method, &url);
        if let Some(key) = key {
            request = request.set("Idempotency-Key", key);
        }
        if let Some(token) = &self.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        let response = match body {
            Some((content_type, bytes)) => {
                request.set("Content-Type", content_type).send_bytes(bytes)
            }
            None => request.call(),
        };
        let response = match response {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(err) => bail!(
                "the server holding the data directory (pid {}, {}) did not answer: {err}",
                self.pid,
                self.url
            ),
        };
        let status = response.status();
        let text = response.into_string()?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// A request whose answer must be a success: the API's error message otherwise (a guest's
    /// exit with a code as [`GuestExit`], so that the command exits with it).
    fn expect(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<(&str, &[u8])>,
    ) -> Result<(u16, Value)> {
        let (status, value) = self.send(method, path, key, body)?;
        if status >= 400 {
            if let (Some("exited"), Some(code)) =
                (value["kind"].as_str(), value["exit_code"].as_u64())
            {
                return Err(GuestExit {
                    message: value["error"].as_str().unwrap_or_default().to_string(),
                    code: code as u32,
                }
                .into());
            }
            match value["error"].as_str() {
                Some(message) => bail!("{message}"),
                None => bail!("the server answered {status}: {value}"),
            }
        }
        Ok((status, value))
    }

    fn json(&self, method: &str, path: &str, body: Value) -> Result<Value> {
        let bytes = body.to_string();
        Ok(self
            .expect(
                method,
                path,
                None,
                Some(("application/json", bytes.as_bytes())),
            )?
            .1)
    }

    fn refuse(&self, what: &str) -> Result<ExitCode> {
        bail!(
            "`golemw serve` (pid {}, {}) holds the data directory, and {what} is not available \
             through its API; stop the server to run it",
            self.pid,
            self.url
        )
    }
}

/// Whether another process holds the data directory's lock.
fn lock_is_held(data_dir: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(data_dir.join("LOCK"))
    else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => false, // released when `file` is dropped
        Err(_) => true,
    }
}

/// `COMPONENT/WORKER` as two path segments (percent-encoded).
fn worker_path(spec: &str) -> Result<String> {
    let (component, worker) = spec.split_once('/').with_context(|| {
        format!(
            "{spec:?} is not COMPONENT/WORKER (a component name or UUID, a slash, a worker name)"
        )
    })?;
    Ok(format!(
        "/v1/components/{}/workers/{}",
        golemw_runtime::ids::url_encode(component),
        golemw_runtime::ids::url_encode(worker)
    ))
}

/// `golemw worker ...` through the server.
pub fn run_worker(ctx: &Context, remote: &Remote, cmd: WorkerCommand) -> Result<ExitCode> {
    match cmd {
        WorkerCommand::New { worker, env, args } => {
            let (component, name) = worker.split_once('/').context("COMPONENT/WORKER")?;
            let env: serde_json::Map<String, Value> = worker::parse_env(&env)?
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            let path = format!(
                "/v1/components/{}/workers",
                golemw_runtime::ids::url_encode(component)
            );
            let record = remote.json(
                "POST",
                &path,
                json!({ "name": name, "args": args, "env": env }),
            )?;
            if ctx.json {
                output::json(&record);
            } else {
                let record: WorkerRecord = serde_json::from_value(record)?;
                worker::print_created(&record);
            }
        }
        WorkerCommand::Invoke {
            worker,
            function,
            args,
            idempotency_key,
            no_wait,
        } => {
            let route = if no_wait {
                "invoke"
            } else {
                "invoke-and-await"
            };
            let path = format!("{}/{route}", worker_path(&worker)?);
            let body = json!({ "function": function, "params": args }).to_string();
            let (_, answer) = remote.expect(
                "POST",
                &path,
                idempotency_key.as_deref(),
                Some(("application/json", body.as_bytes())),
            )?;
            if ctx.json {
                output::json(&answer);
            } else {
                match answer["status"].as_str() {
                    Some("queued") => println!(
                        "queued invocation {} of {function} for worker {}",
                        answer["idempotency_key"].as_str().unwrap_or_default(),
                        answer["worker"].as_str().unwrap_or_default()
                    ),
                    Some("suspended") => println!(
                        "worker {} is suspended: invocation {} awaits promise {} of worker {}",
                        answer["worker"].as_str().unwrap_or_default(),
                        answer["idempotency_key"].as_str().unwrap_or_default(),
                        answer["promise"]["oplog_idx"],
                        answer["promise"]["worker"].as_str().unwrap_or_default()
                    ),
                    _ => {
                        if let Some(result) = answer["result"].as_str() {
                            println!("{result}");
                        }
                    }
                }
            }
        }
        WorkerCommand::Get { worker } => {
            let (_, value) = remote.expect("GET", &worker_path(&worker)?, None, None)?;
            if ctx.json {
                output::json(&value);
            } else {
                worker::print_details(WorkerDetails::from_json(&value)?);
            }
        }
        WorkerCommand::List { component, filter } => {
            let mut path = format!(
                "/v1/components/{}/workers",
                golemw_runtime::ids::url_encode(&component)
            );
            if let Some(filter) = &filter {
                path.push_str(&format!(
                    "?filter={}",
                    golemw_runtime::ids::url_encode(filter)
                ));
            }
            let (_, value) = remote.expect("GET", &path, None, None)?;
            if ctx.json {
                output::json(&value);
            } else {
                let workers: Vec<WorkerRecord> = serde_json::from_value(value)?;
                worker::print_workers(&component, filter, &workers);
            }
        }
        WorkerCommand::Delete { worker } => {
            let (_, value) = remote.expect("DELETE", &worker_path(&worker)?, None, None)?;
            if ctx.json {
                output::json(&value);
            } else {
                println!(
                    "deleted worker {}",
                    value["deleted"].as_str().unwrap_or_default()
                );
            }
        }
        WorkerCommand::Oplog {
            worker,
            from,
            count,
        } => {
            let path = format!("{}/oplog?from={from}&count={count}", worker_path(&worker)?);
            let (_, value) = remote.expect("GET", &path, None, None)?;
            let rows = value
                .as_array()
                .context("the oplog is not a list")?
                .iter()
                .map(OplogRow::from_json)
                .collect::<serde_json::Result<Vec<_>>>()?;
            if ctx.json {
                output::json(&value);
            } else {
                worker::print_oplog(&rows);
            }
            if rows.iter().any(|r| matches!(r, OplogRow::Corrupt { .. })) {
                bail!("the oplog of {worker} has corrupt entries (see above)");
            }
        }
        WorkerCommand::Revert {
            worker,
            to_oplog_index,
            last_invocations,
        } => {
            let body = match (to_oplog_index, last_invocations) {
                (Some(index), _) => json!({ "to_oplog_index": index }),
                (None, Some(count)) => json!({ "last_invocations": count }),
                (None, None) => bail!("give --to-oplog-index or --last-invocations"),
            };
            let value = remote.json("POST", &format!("{}/revert", worker_path(&worker)?), body)?;
            if ctx.json {
                output::json(&value);
            } else {
                println!(
                    "reverted {}: status {}, component version {}",
                    value["worker"].as_str().unwrap_or_default(),
                    value["status"].as_str().unwrap_or_default(),
                    value["component_version"]
                );
            }
        }
        WorkerCommand::Fork {
            worker,
            new_name,
            at_oplog_index,
        } => {
            let mut body = json!({ "target": new_name });
            if let Some(index) = at_oplog_index {
                body["oplog_index"] = index.into();
            }
            let value = remote.json("POST", &format!("{}/fork", worker_path(&worker)?), body)?;
            if ctx.json {
                output::json(&value);
            } else {
                worker::print_forked(&serde_json::from_value(value)?);
            }
        }
        WorkerCommand::Update {
            worker,
            target_version,
            mode,
        } => {
            let value = remote.json(
                "POST",
                &format!("{}/update", worker_path(&worker)?),
                json!({ "version": target_version, "mode": mode.to_string() }),
            )?;
            if ctx.json {
                output::json(&value);
            } else {
                println!(
                    "updated {worker} to version {target_version} ({mode}); a snapshot of it was taken"
                );
            }
        }
        WorkerCommand::CompletePromise {
            worker,
            oplog_index,
            data,
            data_file,
        } => {
            let data = match (data, data_file) {
                (Some(text), None) => text.into_bytes(),
                (None, Some(path)) => {
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?
                }
                _ => bail!("give the payload as DATA or with --data-file FILE (one of them)"),
            };
            let path = format!("{}/promises/{oplog_index}/complete", worker_path(&worker)?);
            let (_, value) = remote.expect(
                "POST",
                &path,
                None,
                Some(("application/octet-stream", &data)),
            )?;
            if ctx.json {
                output::json(&value);
            } else if value["completed"] == json!(true) {
                println!(
                    "completed promise {oplog_index} of worker {worker} ({} bytes)",
                    data.len()
                );
            } else {
                println!("promise {oplog_index} of worker {worker} was already completed; nothing changed");
            }
        }
        WorkerCommand::Interrupt { worker } => {
            let value = remote.json(
                "POST",
                &format!("{}/interrupt", worker_path(&worker)?),
                json!({}),
            )?;
            if ctx.json {
                output::json(&value);
            } else {
                println!(
                    "interrupted {} (it was {})",
                    value["worker"].as_str().unwrap_or_default(),
                    value["previous"].as_str().unwrap_or_default()
                );
            }
        }
        WorkerCommand::Connect { worker, from } => return remote.connect(ctx, &worker, from),
        WorkerCommand::Resume { worker } => {
            let value = remote.json(
                "POST",
                &format!("{}/resume", worker_path(&worker)?),
                json!({}),
            )?;
            if ctx.json {
                output::json(&value);
            } else {
                println!(
                    "resumed {}: status {}",
                    value["worker"].as_str().unwrap_or_default(),
                    value["status"].as_str().unwrap_or_default()
                );
            }
        }
        WorkerCommand::Recover { .. } => return remote.refuse("`worker recover`"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `golemw component ...` through the server.
pub fn run_component(ctx: &Context, remote: &Remote, cmd: ComponentCommand) -> Result<ExitCode> {
    let (record, verb): (Value, &str) = match cmd {
        ComponentCommand::Add { file, name } => {
            let wasm = component::read_wasm(&file)?;
            let name = component::name_for(name, &file)?;
            let path = format!("/v1/components/{}", golemw_runtime::ids::url_encode(&name));
            let (_, record) =
                remote.expect("POST", &path, None, Some(("application/wasm", &wasm)))?;
            (record, "added")
        }
        ComponentCommand::Update { component, file } => {
            let wasm = component::read_wasm(&file)?;
            let path = format!(
                "/v1/components/{}",
                golemw_runtime::ids::url_encode(&component)
            );
            let (_, record) =
                remote.expect("PUT", &path, None, Some(("application/wasm", &wasm)))?;
            (record, "updated")
        }
        ComponentCommand::List => {
            let (_, list) = remote.expect("GET", "/v1/components", None, None)?;
            if ctx.json {
                output::json(&list);
            } else {
                let list: Vec<ComponentRecord> = serde_json::from_value(list)?;
                component::print_components(&list);
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    if ctx.json {
        output::json(&record);
    } else {
        let record: ComponentRecord = serde_json::from_value(record)?;
        match verb {
            "added" => component::print_added(&record),
            _ => component::print_updated(&record),
        }
    }
    Ok(ExitCode::SUCCESS)
}

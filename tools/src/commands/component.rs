//! `golemw component add | update | list`

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use golemw_runtime::component::ComponentRecord;

use super::Context;
use crate::output;

#[derive(Subcommand)]
pub enum ComponentCommand {
    /// Store a wasm module as a new component (version 0) under a fresh UUID.
    ///
    /// The module must be a wasm32-wasip1 core module built with wit-bindgen (it carries its
    /// WIT world in a `component-type` section) and import only what golemw provides.
    Add {
        /// The wasm module.
        file: PathBuf,
        /// Component name (default: the file name without extension).
        #[arg(long)]
        name: Option<String>,
    },
    /// Add the next version of a component.
    Update {
        /// Component name or UUID.
        component: String,
        /// The new wasm module.
        file: PathBuf,
    },
    /// List components (latest version of each).
    List,
}

/// The wasm file a command uploads.
pub fn read_wasm(file: &Path) -> Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

/// The name a component is added under: `--name`, else the file's stem.
pub fn name_for(name: Option<String>, file: &Path) -> Result<String> {
    match name {
        Some(name) => Ok(name),
        None => Ok(file
            .file_stem()
            .and_then(|s| s.to_str())
            .context("the file name is not valid UTF-8; pass --name")?
            .to_string()),
    }
}

/// What `component add` prints (without `--json`).
pub fn print_added(record: &ComponentRecord) {
    println!(
        "added component {} ({}) version {}",
        record.name, record.id, record.version
    );
    println!("exports: {}", record.exports.join(", "));
}

/// What `component update` prints (without `--json`).
pub fn print_updated(record: &ComponentRecord) {
    println!(
        "component {} ({}) is now at version {}",
        record.name, record.id, record.version
    );
}

pub fn run(ctx: &Context, cmd: ComponentCommand) -> Result<ExitCode> {
    let executor = ctx.executor()?;
    let components = executor.components();
    match cmd {
        ComponentCommand::Add { file, name } => {
            let wasm = read_wasm(&file)?;
            let name = name_for(name, &file)?;
            let record = components
                .add(&name, &wasm)
                .with_context(|| format!("adding {}", file.display()))?;
            if ctx.json {
                output::json(&record);
            } else {
                print_added(&record);
            }
        }
        ComponentCommand::Update { component, file } => {
            let wasm = read_wasm(&file)?;
            let record = components
                .update(&component, &wasm)
                .with_context(|| format!("updating {component} with {}", file.display()))?;
            if ctx.json {
                output::json(&record);
            } else {
                print_updated(&record);
            }
        }
        ComponentCommand::List => {
            let list = components.list()?;
            if ctx.json {
                output::json(&list);
            } else {
                print_components(&list);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `component list` as text.
pub fn print_components(list: &[golemw_runtime::component::ComponentRecord]) {
    if list.is_empty() {
        println!("no components; add one with `golemw component add FILE.wasm`");
        return;
    }
    println!(
        "{:<24} {:<36} {:>7} {:>10}  CREATED",
        "NAME", "ID", "VERSION", "SIZE"
    );
    for c in list {
        println!(
            "{:<24} {:<36} {:>7} {:>10}  {}",
            c.name,
            c.id.to_string(),
            c.version,
            c.size,
            output::timestamp(c.created_at_ms)
        );
    }
}

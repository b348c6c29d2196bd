//! `golemw component add | update | list`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Subcommand;

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

pub fn run(ctx: &Context, cmd: ComponentCommand) -> Result<ExitCode> {
    let executor = ctx.executor()?;
    let components = executor.components();
    match cmd {
        ComponentCommand::Add { file, name } => {
            let wasm =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let name = match name {
                Some(name) => name,
                None => file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .context("the file name is not valid UTF-8; pass --name")?
                    .to_string(),
            };
            let record = components
                .add(&name, &wasm)
                .with_context(|| format!("adding {}", file.display()))?;
            if ctx.json {
                output::json(&record);
            } else {
                println!(
                    "added component {} ({}) version {}",
                    record.name, record.id, record.version
                );
                println!("exports: {}", record.exports.join(", "));
            }
        }
        ComponentCommand::Update { component, file } => {
            let wasm =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let record = components
                .update(&component, &wasm)
                .with_context(|| format!("updating {component} with {}", file.display()))?;
            if ctx.json {
                output::json(&record);
            } else {
                println!(
                    "component {} ({}) is now at version {}",
                    record.name, record.id, record.version
                );
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

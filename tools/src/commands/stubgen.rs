//! `golemw stubgen`: the stub WIT for calling a component's workers with typed functions.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;

use super::Context;

#[derive(Args)]
pub struct StubgenArgs {
    /// The wasm file of the component to call (what `golemw component add` takes).
    pub wasm: PathBuf,
    /// Write the WIT to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: StubgenArgs) -> Result<std::process::ExitCode> {
    let wasm = super::component::read_wasm(&args.wasm)?;
    let (resolve, world) = golemw_runtime::component::decode_world(&wasm)
        .with_context(|| format!("reading the WIT world of {}", args.wasm.display()))?;
    let origin = args
        .wasm
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let wit = golemw_runtime::stubs::stub_wit(&resolve, world, &origin)?;
    match &args.out {
        Some(path) => {
            std::fs::write(path, &wit).with_context(|| format!("writing {}", path.display()))?;
            if ctx.json {
                println!("{}", serde_json::json!({ "written": path }));
            } else {
                eprintln!("wrote {}", path.display());
            }
        }
        None if ctx.json => println!("{}", serde_json::json!({ "wit": wit })),
        None => print!("{wit}"),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

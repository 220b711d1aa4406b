//! `cliptrain env`: which libtorch this binary runs on and what hardware it sees.
use clap::Args;
use cliptrain::runtime::{self, RuntimeInfo};

#[derive(Debug, Args)]
pub struct EnvArgs {
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also print libtorch's full build configuration and thread-pool details.
    #[arg(long)]
    pub build_config: bool,
}

pub fn run(args: EnvArgs) -> anyhow::Result<()> {
    let info = RuntimeInfo::gather();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!("{info}");
    }
    if args.build_config {
        let (build, parallel) = runtime::build_report();
        println!("\n{}\n{}", build.trim_end(), parallel.trim_end());
    }
    Ok(())
}

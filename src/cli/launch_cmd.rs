//! `cliptrain launch`: runs a cliptrain command as several ranks of a multi-process job.
use anyhow::Context;
use clap::Args;
use cliptrain::dist::launch::{LaunchOptions, launch};

#[derive(Debug, Args)]
#[command(after_help = "Example: cliptrain launch --nproc-per-node 4 -- train --config run.toml")]
pub struct LaunchArgs {
    /// Ranks (processes) to start on this node; on GPUs, one per GPU (rank i uses cuda:i).
    #[arg(long)]
    pub nproc_per_node: usize,
    /// Nodes in the job; run the same command on each with its own --node-rank.
    #[arg(long, default_value_t = 1)]
    pub nnodes: usize,
    /// This node's index, 0..nnodes.
    #[arg(long, default_value_t = 0)]
    pub node_rank: usize,
    /// Address of node 0, where rank 0 hosts the rendezvous store.
    #[arg(long, default_value = "127.0.0.1")]
    pub master_addr: String,
    /// Free TCP port on node 0 for the rendezvous store.
    #[arg(long, default_value_t = 29500)]
    pub master_port: u16,
    /// The cliptrain command each rank runs, after `--` (e.g. `-- train --config run.toml`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

pub fn run(args: LaunchArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the cliptrain binary to launch")?;
    let opts = LaunchOptions {
        nproc_per_node: args.nproc_per_node,
        nnodes: args.nnodes,
        node_rank: args.node_rank,
        master_addr: args.master_addr,
        master_port: args.master_port,
    };
    // The ranks checkpoint and exit on SIGINT/SIGTERM: the launcher passes them on.
    Ok(launch(
        &opts,
        &exe,
        &args.command,
        super::signal::last_signal(),
    )?)
}

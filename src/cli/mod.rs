//! Subcommands, one file each.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// airlift carries container images and their Kubernetes configuration across an air gap.
#[derive(Parser)]
#[command(name = "airlift", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

/// Parses the command line, runs the subcommand, and maps errors to exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {}
}

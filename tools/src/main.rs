//! `dprepo`: the command-line tool. Argument parsing, passwords, progress and output
//! live here; every format and repository operation is in `dprepo-repo-format`.

mod commands;
mod output;
mod progress;
mod repository;

use clap::Parser;
use std::process::ExitCode;

/// Exit code when a backup completed but left out entries it could not read (as restic).
pub const EXIT_PARTIAL: u8 = 3;

/// dprepo: deduplicating, encrypted, compressed snapshots of directories and streams.
#[derive(Debug, Parser)]
#[command(name = "dprepo", version, about, max_term_width = 100)]
pub struct Cli {
    /// Repository location: a path or a file:// URL.
    #[arg(short = 'r', long = "repo", env = "DPREPO_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// Read the password from this file (first line).
    #[arg(long, env = "DPREPO_PASSWORD_FILE", global = true)]
    pub password_file: Option<std::path::PathBuf>,
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress and no informational output.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: commands::Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dprepo: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(&cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let mut msg = format!("{e:#}");
            if let Some(first) = msg.lines().next() {
                msg = first.to_string();
            }
            eprintln!("dprepo: error: {msg}");
            ExitCode::FAILURE
        }
    }
}


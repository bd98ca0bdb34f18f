//! `dprepo`: the command-line tool. Argument parsing, passwords, progress and output
//! live here; every format and repository operation is in `dprepo-repo-format`.
//!
//! Both binaries (`dprepo` and `datasafed`) call [`main`], which dispatches on the name
//! the program was invoked under: as `datasafed` (or as `dprepo datasafed ...`) it runs
//! the datasafed-compatible interface of `datasafed.rs`.

pub mod build_info;
mod check;
mod commands;
mod copy;
mod datasafed;
mod docs;
mod ds_files;
mod ds_parent;
mod history;
mod inspect;
mod keys;
mod maintenance;
mod output;
mod progress;
mod repository;
mod select;
mod snapshots;
mod stats;

use clap::Parser;
use std::process::ExitCode;

/// Exit code when a backup completed but left out entries it could not read (as restic).
pub const EXIT_PARTIAL: u8 = 3;

/// dprepo: deduplicating, encrypted, compressed snapshots of directories and streams.
#[derive(Debug, Parser)]
#[command(name = "dprepo", version = build_info::VERSION_LINE, about, max_term_width = 100)]
pub struct Cli {
    /// Repository location: a path, a file:// URL, or s3://BUCKET/PREFIX.
    #[arg(short = 'r', long = "repo", env = "DPREPO_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// Without -r: the datasafed config naming the storage (INI `[storage]`), as
    /// datasafed reads it; DATASAFED_LOCAL_BACKEND_PATH comes first, and
    /// /etc/datasafed/datasafed.conf is the default.
    #[arg(long, env = "DATASAFED_CONFIG", global = true, value_name = "FILE")]
    pub datasafed_conf: Option<std::path::PathBuf>,
    /// Read the password from this file (first line).
    #[arg(long, env = "DPREPO_PASSWORD_FILE", global = true)]
    pub password_file: Option<std::path::PathBuf>,
    /// Open the repository with the access key in this file (`dprepo key add-access`
    /// makes one): no password hashing. Comes before any password.
    #[arg(
        long,
        env = "DPREPO_ACCESS_KEY_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub access_key_file: Option<std::path::PathBuf>,
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress and no informational output.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print storage requests by kind and bytes moved when the command ends (stderr).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Most storage requests in flight at once (S3 default 8; uploads default 4).
    #[arg(long, global = true)]
    pub connections: Option<usize>,
    /// Repository options file: INI with an `[s3]` section (endpoint, region,
    /// access_key_id, secret_access_key, session_token, path_style, allow_http).
    #[arg(long, env = "DPREPO_REPOSITORY_CONFIG", global = true)]
    pub repo_config: Option<std::path::PathBuf>,
    /// S3 endpoint URL (S3-compatible stores); default from AWS_ENDPOINT_URL.
    #[arg(long, global = true)]
    pub s3_endpoint: Option<String>,
    /// S3 region; default from AWS_REGION / AWS_DEFAULT_REGION, then us-east-1.
    #[arg(long, global = true)]
    pub s3_region: Option<String>,
    /// Use path-style S3 requests (default for custom endpoints).
    #[arg(long, global = true, conflicts_with = "s3_virtual_hosted")]
    pub s3_path_style: bool,
    /// Use virtual-hosted-style S3 requests (default for AWS).
    #[arg(long, global = true)]
    pub s3_virtual_hosted: bool,
    /// Allow plain HTTP to the S3 endpoint (implied by an http:// endpoint).
    #[arg(long, global = true)]
    pub s3_allow_http: bool,
    /// Directory of the local caches: the index cache (every repository) and the
    /// metadata cache (remote repositories). Default: $XDG_CACHE_HOME/dprepo or
    /// ~/.cache/dprepo.
    #[arg(long, env = "DPREPO_CACHE_DIR", global = true)]
    pub cache_dir: Option<std::path::PathBuf>,
    /// Keep no cache: metadata is read from the repository, and the index is built in a
    /// private temporary directory that is deleted at exit.
    #[arg(long, global = true)]
    pub no_cache: bool,
    #[command(subcommand)]
    pub command: commands::Command,
}

/// Run the program with the process arguments; returns the exit code.
pub fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if invoked_as == "datasafed" || invoked_as.starts_with("datasafed-") {
        return datasafed::main(args);
    }
    if args.get(1).is_some_and(|a| a == "datasafed") {
        // `dprepo datasafed ARGS` is `datasafed ARGS`: its flags (-r, --json ...) are
        // datasafed's, not dprepo's global ones, so it is parsed on its own.
        let mut rest = vec![std::ffi::OsString::from("datasafed")];
        rest.extend(args.into_iter().skip(2));
        return datasafed::main(rest);
    }
    let cli = Cli::parse_from(args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dprepo: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(commands::run(&cli));
    if cli.verbose {
        repository::print_request_counts(cli.json);
    }
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let mut msg = output::error_text(&e);
            if let Some(first) = msg.lines().next() {
                msg = first.to_string();
            }
            eprintln!("dprepo: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

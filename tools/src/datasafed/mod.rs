//! The datasafed-compatible interface: `datasafed push|pull|list|stat|rm|rmdir|mkdir`,
//! so KubeBlocks backup scripts (ActionSets) run unchanged against a dprepo repository
//! and get deduplication.
//!
//! Model: the repository holds a file namespace made of snapshots.
//! - A pushed file is one stream snapshot (the engine's stdin backup) tagged
//!   `datasafed`, `datasafed:path=<absolute normalised path>` and
//!   `datasafed:codec=<algorithm>|none`. `push -z ALGO` stores the RAW stream (so the
//!   chunker sees the bytes that repeat between backups) and records ALGO; `pull`
//!   compresses on the fly, so it returns what datasafed would have stored, and
//!   `pull -d ALGO` returns the original bytes without compressing at all.
//! - Re-pushing a path writes the new snapshot first and then forgets the older ones of
//!   that path; a failed push leaves the old file in place and no new snapshot.
//! - Directories are implicit (every prefix of a pushed path) plus the directories
//!   `mkdir` made: a directory marker is an empty stream snapshot tagged
//!   `datasafed:dir=<path>`.
//! - When several snapshots carry one path (a concurrent re-push), the newest wins.
//! - `rm` forgets snapshots; `dprepo gc` frees their data.
//!
//! Output formats and exit codes follow datasafed: errors are `Error: ...` on stderr
//! with exit code 1; `list` prints nothing for a path that does not exist.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use dprepo_repo_format::backup::{
    backup, BackupOptions, BackupProgress, BackupSource, ParentChoice,
};
use dprepo_repo_format::gc::forget_snapshots;
use dprepo_repo_format::restore::dump;
use dprepo_repo_format::storage::{S3Options, Storage};
use dprepo_repo_format::{BlobId, Error as EngineError, InitOptions, Repository, Snapshot};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::ds_files::{self, Entry, Kind};
use crate::repository::{self, RepoKey};

pub use crate::ds_files::{CODEC_TAG, DIR_TAG, PATH_TAG, TAG};

use crate::repository::datasafed_conf::{config_file, env_nonempty, DEFAULT_CONFIG};
pub(crate) use crate::repository::datasafed_conf::{configured_key, configured_storage};

const ABOUT: &str = "datasafed-compatible storage commands backed by a dprepo repository";

const LONG_ABOUT: &str = "\
datasafed-compatible storage commands backed by a dprepo repository.

KubeBlocks backup scripts pipe database tools into `datasafed push` and read backups back
with `datasafed pull`. Run as `datasafed` (the binary of that name, or any link to dprepo
named so) or as `dprepo datasafed`, this stores every pushed file as a deduplicated,
encrypted stream snapshot. `push -z ALGO` keeps the raw stream (dprepo compresses each
chunk after deduplication) and records ALGO; `pull` returns an ALGO stream, `pull -d ALGO`
the original bytes.

Storage, first match wins:
  DATASAFED_LOCAL_BACKEND_PATH  a local directory holding the repository
  -c/--conf FILE, DATASAFED_CONFIG, /etc/datasafed/datasafed.conf
                                INI `[storage]`: type = local|s3; root (local: directory;
                                s3: bucket/prefix); s3 also endpoint, region,
                                access_key_id, secret_access_key, session_token,
                                force_path_style (other rclone keys are ignored)
  DPREPO_REPOSITORY             a dprepo repository location (path or s3://)
DATASAFED_BACKEND_BASE_PATH is prefixed to every remote path.

Repository key, first set wins (there is no default, and no command runs without one):
  DPREPO_ACCESS_KEY_FILE        an access key (`dprepo key add-access`): no password
                                hashing, for pods that call datasafed often
  DPREPO_PASSWORD, DPREPO_PASSWORD_FILE, DATASAFED_ENCRYPTION_PASS_PHRASE,
  DATASAFED_KOPIA_PASSWORD      a password (any of them may hold an access key instead)
  the config's [storage]        dprepo_access_key_file, dprepo_access_key,
                                dprepo_password_file, dprepo_password (relative files are
                                relative to the config's directory)
`push` and `mkdir` create the repository when the location holds none (with a password:
an access key opens an existing repository only).

Snapshots: each file is a snapshot tagged `datasafed`, `datasafed:path=/PATH` and
`datasafed:codec=ALGO`; see them with `dprepo snapshots --tag datasafed` or
`--path /DIR` (all files below DIR), sizes and dedup with `dprepo stats`. `rm` forgets
snapshots; `dprepo gc` frees the space.

Errors print `Error: ...` on stderr and exit with 1.";

/// The `datasafed` command line.
#[derive(Debug, Parser)]
#[command(name = "datasafed", version = crate::build_info::VERSION_LINE, about = ABOUT, long_about = LONG_ABOUT, max_term_width = 100)]
struct DatasafedCli {
    /// Config file (INI, `[storage]` section); default DATASAFED_CONFIG, then
    /// /etc/datasafed/datasafed.conf.
    #[arg(short = 'c', long = "conf", global = true)]
    conf: Option<PathBuf>,
    #[command(subcommand)]
    command: DsCommand,
}

#[derive(Debug, Subcommand)]
enum DsCommand {
    /// Push file to remote (LPATH `-` reads stdin).
    #[command(
        long_about = "Push file to remote. The `lpath` parameter can be '-' to read from stdin.\n\n\
            The file becomes one stream snapshot; a file already at RPATH is replaced once the\n\
            new one is stored. A read error on the input leaves no snapshot and exits 1.\n\
            With -z the RAW stream is stored (deduplicated, then compressed per chunk) and\n\
            ALGO is recorded: `pull` returns an ALGO stream, `pull -d ALGO` the original."
    )]
    Push(PushArgs),
    /// Pull remote file (LPATH `-` writes stdout).
    #[command(
        long_about = "Pull remote file. The `lpath` parameter can be \"-\" to write to stdout.\n\n\
            Without -d, a file pushed with -z ALGO comes back as an ALGO stream. With -d ALGO\n\
            it comes back decompressed: the original bytes for a file pushed with -z ALGO (or\n\
            another algorithm of the same format), the stored bytes decompressed with ALGO\n\
            for a file pushed without -z. A missing file exits 1."
    )]
    Pull(PullArgs),
    /// List contents of a remote directory or file.
    List(ListArgs),
    /// Stat a remote path to get the total size and number of entries.
    Stat(StatArgs),
    /// Remove one remote file, or all files in a remote directory.
    Rm(RmArgs),
    /// Remove an empty remote directory.
    Rmdir(PathArg),
    /// Create an empty remote directory.
    Mkdir(PathArg),
    /// Show version of datasafed (dprepo).
    Version,
    /// dprepo: register the access key a chosen secret makes, and print its id.
    #[command(
        long_about = "Register the access key that the secret in FILE (64 hex digits) makes for\n\
            the repository, and print `dprepo-access-key-id: ID`. The access key is\n\
            `dprepo-ak1-ID-SECRET`; give it to pods instead of the password (it opens the\n\
            repository without password hashing; `dprepo key remove ID` revokes it). Run again\n\
            with the same secret, it finds the key it registered and adds nothing. An operator\n\
            keeps the secret and learns only the id from the process that registered it. Needs\n\
            the repository's password (or another key) to open it."
    )]
    AccessKey(AccessKeyArgs),
}

#[derive(Debug, Args)]
struct AccessKeyArgs {
    /// File holding the secret: 64 hex digits (white space around them is ignored).
    #[arg(long, value_name = "FILE")]
    secret_file: PathBuf,
    /// What the key is for (`dprepo key list` shows it).
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Debug, Args)]
struct PushArgs {
    /// Compress the file using the specified algorithm (dprepo stores the raw stream and
    /// records the algorithm); choices: see the list printed for an unknown name.
    #[arg(short = 'z', long = "compress")]
    compress: Option<String>,
    /// Local file, or `-` for stdin.
    lpath: PathBuf,
    /// Remote path.
    rpath: String,
}

#[derive(Debug, Args)]
struct PullArgs {
    /// Decompress the file using the specified algorithm after pulling it.
    #[arg(short = 'd', long = "decompress")]
    decompress: Option<String>,
    /// Remote path.
    rpath: String,
    /// Local file, or `-` for stdout.
    lpath: PathBuf,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// List directories only.
    #[arg(short = 'd', long = "dirs-only", conflicts_with = "files_only")]
    dirs_only: bool,
    /// List files only.
    #[arg(short = 'f', long = "files-only")]
    files_only: bool,
    /// List recursively.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Max depth when listing recursively (0: no limit).
    #[arg(long = "max-depth", default_value_t = 0)]
    max_depth: i64,
    /// Sort by which field, choices: path, size, mtime.
    #[arg(short = 's', long = "sort", default_value = "path")]
    sort: String,
    /// Reverse order.
    #[arg(long)]
    reverse: bool,
    /// List only entries modified after this unix timestamp (exclusive).
    #[arg(long = "newer-than", default_value_t = 0)]
    newer_than: i64,
    /// List only entries modified before this unix timestamp (exclusive).
    #[arg(long = "older-than", default_value_t = 0)]
    older_than: i64,
    /// List only entries whose name matches this pattern (Go filepath.Match syntax).
    #[arg(long = "name")]
    name: Option<String>,
    /// Output format, choices: short, long, json.
    #[arg(short = 'o', long = "output-format", default_value = "short")]
    output_format: String,
    /// Remote path.
    rpath: String,
}

#[derive(Debug, Args)]
struct StatArgs {
    /// Output in json format.
    #[arg(long)]
    json: bool,
    /// Remote path.
    rpath: String,
}

#[derive(Debug, Args)]
struct RmArgs {
    /// Remove recursively.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Remote path.
    rpath: String,
}

#[derive(Debug, Args)]
struct PathArg {
    /// Remote path.
    rpath: String,
}

/// Run the datasafed interface with `args` (`args[0]` is the program name).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let cli = match DatasafedCli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // Usage errors as datasafed reports every error: `Error: ...`, exit 1.
            let text = e.render().to_string();
            let text = text.strip_prefix("error: ").unwrap_or(&text);
            eprint!("Error: {text}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(&cli));
    // The storage requests this call made, as one JSON line on stderr (for operators
    // and tests: what a call costs against object storage).
    if std::env::var_os("DPREPO_DATASAFED_REQUESTS").is_some_and(|v| v == "1") {
        repository::print_request_counts(true);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", crate::output::error_text(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &DatasafedCli) -> Result<()> {
    match &cli.command {
        DsCommand::Version => {
            println!("datasafed (dprepo {})", crate::build_info::VERSION_LINE);
            Ok(())
        }
        DsCommand::Push(a) => push(cli, a).await,
        DsCommand::Pull(a) => pull(cli, a).await,
        DsCommand::List(a) => list(cli, a).await,
        DsCommand::Stat(a) => stat(cli, a).await,
        DsCommand::Rm(a) => rm(cli, a).await,
        DsCommand::Rmdir(a) => rmdir(cli, a).await,
        DsCommand::Mkdir(a) => mkdir(cli, a).await,
        DsCommand::AccessKey(a) => access_key(cli, a).await,
    }
}

// ---------------------------------------------------------------------------------
// Compression algorithms (datasafed's names, which are Kopia's compressor names).

mod browse;
mod codec;
mod config;
mod manage;
mod namespace;
mod transfer;

use browse::*;
use codec::*;
use config::*;
use manage::*;
pub use namespace::snapshot_file_path;
use namespace::*;
use transfer::*;

/// `dprepo snapshots --path DIR`: whether `s` is a datasafed file or directory at or
/// below `dir`.
pub fn datasafed_path_within(s: &Snapshot, dir: &str) -> bool {
    let dir = normalize("/", dir);
    [PATH_TAG, DIR_TAG]
        .iter()
        .filter_map(|t| tag_value(s, t))
        .any(|p| is_within(p, &dir))
}

#[cfg(test)]
mod tests;

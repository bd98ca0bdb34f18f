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
use dprepo_repo_format::storage::{read_ini_section, S3Options, Storage};
use dprepo_repo_format::{BlobId, Error as EngineError, InitOptions, Repository, Snapshot};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::ds_files::{self, Entry, Kind};
use crate::repository::{self, RepoKey};

/// Tag every datasafed snapshot carries (`dprepo snapshots --tag datasafed`).
pub const TAG: &str = "datasafed";
/// Tag prefix naming the file a snapshot holds.
pub const PATH_TAG: &str = "datasafed:path=";
/// Tag prefix naming the directory a marker snapshot stands for.
pub const DIR_TAG: &str = "datasafed:dir=";
/// Tag prefix naming the algorithm the stream was pushed with (`none`: no -z).
pub const CODEC_TAG: &str = "datasafed:codec=";

const DEFAULT_CONFIG: &str = "/etc/datasafed/datasafed.conf";

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
#[command(name = "datasafed", version, about = ABOUT, long_about = LONG_ABOUT, max_term_width = 100)]
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
    match runtime.block_on(run(&cli)) {
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
            println!("datasafed (dprepo {})", env!("CARGO_PKG_VERSION"));
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

/// Stream formats: algorithms of one format decode each other's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Zstd,
    Gzip,
    Deflate,
    Lz4,
}

#[derive(Debug, Clone, Copy)]
struct Codec {
    name: &'static str,
    format: Format,
    level: u32,
}

const CODECS: &[Codec] = &[
    Codec {
        name: "deflate-best-compression",
        format: Format::Deflate,
        level: 9,
    },
    Codec {
        name: "deflate-best-speed",
        format: Format::Deflate,
        level: 1,
    },
    Codec {
        name: "deflate-default",
        format: Format::Deflate,
        level: 6,
    },
    Codec {
        name: "gzip",
        format: Format::Gzip,
        level: 6,
    },
    Codec {
        name: "gzip-best-compression",
        format: Format::Gzip,
        level: 9,
    },
    Codec {
        name: "gzip-best-speed",
        format: Format::Gzip,
        level: 1,
    },
    Codec {
        name: "lz4",
        format: Format::Lz4,
        level: 0,
    },
    Codec {
        name: "pgzip",
        format: Format::Gzip,
        level: 6,
    },
    Codec {
        name: "pgzip-best-compression",
        format: Format::Gzip,
        level: 9,
    },
    Codec {
        name: "pgzip-best-speed",
        format: Format::Gzip,
        level: 1,
    },
    Codec {
        name: "zstd",
        format: Format::Zstd,
        level: 3,
    },
    Codec {
        name: "zstd-best-compression",
        format: Format::Zstd,
        level: 11,
    },
    Codec {
        name: "zstd-better-compression",
        format: Format::Zstd,
        level: 7,
    },
    Codec {
        name: "zstd-fastest",
        format: Format::Zstd,
        level: 1,
    },
];

/// datasafed algorithms this build cannot produce or read (no Rust S2 implementation).
const UNSUPPORTED: &[&str] = &["s2-better", "s2-default", "s2-parallel-4", "s2-parallel-8"];

fn codec(name: &str) -> Result<Codec> {
    let canonical = match name {
        "zstd-better" => "zstd-better-compression",
        "zstd-best" => "zstd-best-compression",
        n => n,
    };
    if let Some(c) = CODECS.iter().find(|c| c.name == canonical) {
        return Ok(*c);
    }
    let supported: Vec<&str> = CODECS.iter().map(|c| c.name).collect();
    if UNSUPPORTED.contains(&name) {
        bail!(
            "compression algorithm {name:?} (S2) is not supported by dprepo; supported: {}",
            supported.join(", ")
        );
    }
    bail!(
        "invalid compression algorithm {name:?}, choices: {}",
        supported.join(", ")
    )
}

/// A compressing writer that must be finished to write its trailer.
trait Encoder: Write + Send {
    fn finish_stream(self: Box<Self>) -> std::io::Result<()>;
}

impl<W: Write + Send> Encoder for zstd::stream::write::Encoder<'static, W> {
    fn finish_stream(self: Box<Self>) -> std::io::Result<()> {
        (*self).finish()?.flush()
    }
}
impl<W: Write + Send> Encoder for flate2::write::GzEncoder<W> {
    fn finish_stream(self: Box<Self>) -> std::io::Result<()> {
        (*self).finish()?.flush()
    }
}
impl<W: Write + Send> Encoder for flate2::write::DeflateEncoder<W> {
    fn finish_stream(self: Box<Self>) -> std::io::Result<()> {
        (*self).finish()?.flush()
    }
}
impl<W: Write + Send> Encoder for lz4_flex::frame::FrameEncoder<W> {
    fn finish_stream(self: Box<Self>) -> std::io::Result<()> {
        (*self).finish().map_err(std::io::Error::other)?.flush()
    }
}

/// `Box<dyn Encoder>` as a plain `Write` (no trait upcasting before Rust 1.86).
struct EncoderWriter(Box<dyn Encoder>);

impl Write for EncoderWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn encoder(c: Codec, out: Box<dyn Write + Send>) -> Result<Box<dyn Encoder>> {
    Ok(match c.format {
        Format::Zstd => Box::new(
            zstd::stream::write::Encoder::new(out, c.level as i32)
                .context("starting the zstd encoder")?,
        ),
        Format::Gzip => Box::new(flate2::write::GzEncoder::new(
            out,
            flate2::Compression::new(c.level),
        )),
        Format::Deflate => Box::new(flate2::write::DeflateEncoder::new(
            out,
            flate2::Compression::new(c.level),
        )),
        Format::Lz4 => Box::new(lz4_flex::frame::FrameEncoder::new(out)),
    })
}

fn decoder(c: Codec, input: Box<dyn Read + Send>) -> Result<Box<dyn Read + Send>> {
    Ok(match c.format {
        Format::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(input).context("starting the zstd decoder")?)
        }
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Format::Deflate => Box::new(flate2::read::DeflateDecoder::new(input)),
        Format::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(input)),
    })
}

// ---------------------------------------------------------------------------------
// Configuration, key and repository.

struct Env {
    storage: Arc<dyn Storage>,
    key: RepoKey,
    /// DATASAFED_BACKEND_BASE_PATH, normalised (`/` when unset).
    base: String,
}

fn env(cli: &DatasafedCli) -> Result<Env> {
    let storage = storage(cli)?;
    let key = repo_key(cli)?;
    let base = normalize(
        "/",
        &std::env::var("DATASAFED_BACKEND_BASE_PATH").unwrap_or_default(),
    );
    Ok(Env { storage, key, base })
}

fn env_nonempty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn storage(cli: &DatasafedCli) -> Result<Arc<dyn Storage>> {
    let cache_dir = std::env::var_os("DPREPO_CACHE_DIR").map(PathBuf::from);
    let conf = cli
        .conf
        .clone()
        .or_else(|| env_nonempty("DATASAFED_CONFIG").map(PathBuf::from));
    if let Some(storage) = configured_storage(conf, cache_dir.clone(), false)? {
        return Ok(storage);
    }
    if let Some(location) = env_nonempty("DPREPO_REPOSITORY") {
        let s3 = || Ok(S3Options::from_url(&location)?.from_env());
        return repository::storage_at(&location, s3, cache_dir, false);
    }
    bail!(
        "no storage configured: set DATASAFED_LOCAL_BACKEND_PATH, or write a [storage] section to \
         {DEFAULT_CONFIG} (or the file named by -c/--conf or DATASAFED_CONFIG), or set DPREPO_REPOSITORY"
    )
}

/// The storage a datasafed setup names, first match wins: `DATASAFED_LOCAL_BACKEND_PATH`,
/// then the config file `conf` (an error if given and missing), then
/// /etc/datasafed/datasafed.conf. `None` when there is none of them. Shared by `datasafed`
/// and by `dprepo` run without `-r` (in a pod prepared for datasafed, dprepo finds the
/// repository the same way).
pub(crate) fn configured_storage(
    conf: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    no_cache: bool,
) -> Result<Option<Arc<dyn Storage>>> {
    if let Some(dir) = env_nonempty("DATASAFED_LOCAL_BACKEND_PATH") {
        let path = std::path::absolute(dir.trim())
            .with_context(|| format!("DATASAFED_LOCAL_BACKEND_PATH {dir}"))?;
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!(
                "the path \"{}\" specified by DATASAFED_LOCAL_BACKEND_PATH is not a directory",
                path.display()
            ),
            Err(_) => bail!(
                "the path \"{}\" specified by DATASAFED_LOCAL_BACKEND_PATH does not exist",
                path.display()
            ),
        }
        let location = path.to_string_lossy().into_owned();
        return repository::storage_at(&location, unreachable_s3, None, true).map(Some);
    }
    let explicit = conf.is_some();
    let conf = conf.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    if !conf.is_file() {
        if explicit {
            bail!("config file {} does not exist", conf.display());
        }
        return Ok(None);
    }
    let path = conf.to_string_lossy().into_owned();
    let section = read_ini_section(&path, "storage");
    let get = |k: &str| {
        section
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let kind = get("type").ok_or_else(|| anyhow!("{path}: [storage] has no `type`"))?;
    let root = get("root").ok_or_else(|| anyhow!("{path}: [storage] has no `root`"))?;
    match kind.as_str() {
        "local" => {
            let location = root.strip_prefix("file://").unwrap_or(&root).to_string();
            repository::storage_at(&location, unreachable_s3, None, true).map(Some)
        }
        "s3" => {
            let root = root.trim_start_matches("s3://").trim_matches('/');
            let (bucket, prefix) = root.split_once('/').unwrap_or((root, ""));
            if bucket.is_empty() {
                bail!("{path}: root = {root}: expected BUCKET or BUCKET/PREFIX");
            }
            let mut o = S3Options::new(bucket, prefix);
            repository::apply_s3_settings(&mut o, &section, &path)?;
            if let Some(e) = &o.endpoint {
                if !e.contains("://") {
                    o.endpoint = Some(format!("https://{e}"));
                }
            }
            let location = format!("s3://{bucket}/{}", o.prefix);
            repository::storage_at(&location, || Ok(o.from_env()), cache_dir, no_cache).map(Some)
        }
        other => bail!("{path}: storage type {other:?} is not supported (local, s3)"),
    }
}

fn unreachable_s3() -> Result<S3Options> {
    bail!("not an s3:// location")
}

/// The datasafed config that applies: `conf` (-c, DATASAFED_CONFIG), else the default
/// file if it exists.
fn config_file(conf: Option<&std::path::Path>) -> Option<PathBuf> {
    match conf {
        Some(c) => Some(c.to_path_buf()),
        None => {
            let default = PathBuf::from(DEFAULT_CONFIG);
            default.is_file().then_some(default)
        }
    }
}

/// The repository key a datasafed config names in `[storage]`, first set wins:
/// `dprepo_access_key_file`, `dprepo_access_key`, `dprepo_password_file`,
/// `dprepo_password` (a password file or value may hold an access key). Relative files
/// are relative to the config's directory. `None` when the config is absent or names no
/// key. Shared by `datasafed` and `dprepo` run without `-r`.
///
/// # Errors
/// Unreadable or invalid key files.
pub(crate) fn configured_key(conf: Option<&std::path::Path>) -> Result<Option<RepoKey>> {
    let Some(path) = config_file(conf).filter(|p| p.is_file()) else {
        return Ok(None);
    };
    let shown = path.to_string_lossy().into_owned();
    let section = read_ini_section(&shown, "storage");
    let get = |k: &str| {
        section
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let relative = |file: String| {
        let file = PathBuf::from(file);
        match path.parent() {
            Some(dir) if file.is_relative() => dir.join(file),
            _ => file,
        }
    };
    if let Some(file) = get("dprepo_access_key_file") {
        return repository::access_key_file(&relative(file))
            .with_context(|| format!("{shown}: dprepo_access_key_file"))
            .map(Some);
    }
    if let Some(text) = get("dprepo_access_key") {
        let key = dprepo_repo_format::key::AccessKey::parse(text.as_bytes())
            .with_context(|| format!("{shown}: dprepo_access_key"))?;
        return Ok(Some(RepoKey::Access(key)));
    }
    if let Some(file) = get("dprepo_password_file") {
        let secret = repository::read_secret_file(&relative(file), "password file")
            .with_context(|| format!("{shown}: dprepo_password_file"))?;
        return RepoKey::from_secret(secret, &format!("{shown}: dprepo_password_file")).map(Some);
    }
    if let Some(pw) = get("dprepo_password") {
        return RepoKey::from_secret(pw.into_bytes(), &format!("{shown}: dprepo_password"))
            .map(Some);
    }
    Ok(None)
}

/// The repository key, first set wins: DPREPO_ACCESS_KEY_FILE, DPREPO_PASSWORD,
/// DPREPO_PASSWORD_FILE, DATASAFED_ENCRYPTION_PASS_PHRASE, DATASAFED_KOPIA_PASSWORD,
/// then the config's `[storage]` ([`configured_key`]). There is no default: without a
/// key every command fails (never an unencrypted repository).
fn repo_key(cli: &DatasafedCli) -> Result<RepoKey> {
    if let Some(file) = env_nonempty("DPREPO_ACCESS_KEY_FILE") {
        return repository::access_key_file(std::path::Path::new(&file));
    }
    let file = std::env::var_os("DPREPO_PASSWORD_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    if let Some(pw) = repository::password_without_prompt(file.as_deref())? {
        return RepoKey::from_secret(pw, "DPREPO_PASSWORD or DPREPO_PASSWORD_FILE");
    }
    for var in [
        "DATASAFED_ENCRYPTION_PASS_PHRASE",
        "DATASAFED_KOPIA_PASSWORD",
    ] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return RepoKey::from_secret(v.into_encoded_bytes(), var);
        }
    }
    let conf = cli
        .conf
        .clone()
        .or_else(|| env_nonempty("DATASAFED_CONFIG").map(PathBuf::from));
    if let Some(key) = configured_key(conf.as_deref())? {
        return Ok(key);
    }
    let conf = config_file(conf.as_deref()).unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    bail!(
        "no repository key: set DPREPO_ACCESS_KEY_FILE, DPREPO_PASSWORD_FILE, DPREPO_PASSWORD or DATASAFED_ENCRYPTION_PASS_PHRASE, or add dprepo_access_key_file or dprepo_password_file to [storage] in {}",
        conf.display()
    )
}

/// Open with the context's key.
async fn open_existing(ctx: &Env) -> std::result::Result<Repository, EngineError> {
    ctx.key
        .open(
            ctx.storage.clone(),
            &crate::repository::default_index_place(),
        )
        .await
}

/// Open the repository; `create` initialises one when the location holds none (losing
/// an init race to another process is fine: its repository is opened instead).
/// `None`: no repository and `create` is false (an empty bucket).
async fn open(ctx: &Env, create: bool) -> Result<Option<Repository>> {
    match open_existing(ctx).await {
        Ok(r) => {
            for note in r.take_index_notes() {
                eprintln!("Warning: {note}");
            }
            return Ok(Some(r));
        }
        Err(EngineError::NoRepository { .. }) if !create => return Ok(None),
        Err(EngineError::NoRepository { .. }) => {}
        Err(e @ EngineError::WrongKey) => return Err(wrong_key(ctx, e)),
        Err(e) => return Err(e.into()),
    }
    let password = match &ctx.key {
        RepoKey::Password(pw) => pw,
        RepoKey::Access(_) => bail!(
            "no repository at {}: an access key opens an existing repository only; create it with a password (`dprepo init`, or this command with DPREPO_PASSWORD_FILE)",
            ctx.storage.location()
        ),
    };
    match Repository::init(ctx.storage.clone(), password, InitOptions::default()).await {
        Ok(r) => Ok(Some(r)),
        Err(EngineError::RepositoryExists { .. }) => {
            // Another process created it. A third one that lost the config race may
            // still have its (same-password, other-master) key file in keys/ for a
            // moment before it deletes it; opening with that key fails, so try again.
            let mut attempt = 0;
            loop {
                match open_existing(ctx).await {
                    Ok(r) => return Ok(Some(r)),
                    Err(e @ EngineError::WrongKey) => return Err(wrong_key(ctx, e)),
                    Err(_) if attempt < 10 => {
                        attempt += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "creating a repository at {}",
            ctx.storage.location()
        ))),
    }
}

/// A repository exists at the storage but the key opens none of its key files. The
/// message names the location and says "another key", so callers (the controller's
/// pre-check) can tell this apart from storage or credential errors.
fn wrong_key(ctx: &Env, e: EngineError) -> anyhow::Error {
    anyhow::Error::new(e).context(format!(
        "the repository at {} was created with another key",
        ctx.storage.location()
    ))
}

// ---------------------------------------------------------------------------------
// Paths and the namespace.

/// `/`-rooted, lexically clean path of `rpath` below `base` (`..` never leaves `base`).
fn normalize(base: &str, rpath: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in rpath.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let base = base.trim_end_matches('/');
    if parts.is_empty() {
        return if base.is_empty() {
            "/".into()
        } else {
            base.into()
        };
    }
    format!("{base}/{}", parts.join("/"))
}

/// The parent directory of a `/`-rooted path (`/` for top-level entries).
fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `path` is `dir` or below it.
fn is_within(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

struct FileEntry {
    newest: Entry,
    /// Every snapshot holding this path (the newest included).
    all: Vec<BlobId>,
    codec: Option<Codec>,
    size: u64,
}

#[derive(Default)]
struct DirEntry {
    markers: Vec<BlobId>,
    mtime: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Default)]
struct Namespace {
    /// Every snapshot, oldest first.
    entries: Vec<Entry>,
    files: BTreeMap<String, FileEntry>,
    /// Every directory except `/`: explicit (markers) and implicit (ancestors).
    dirs: BTreeMap<String, DirEntry>,
}

fn tag_value<'a>(s: &'a Snapshot, prefix: &str) -> Option<&'a str> {
    s.manifest.tags.iter().find_map(|t| t.strip_prefix(prefix))
}

/// The datasafed path a snapshot holds, if it is a datasafed file.
pub fn snapshot_file_path(s: &Snapshot) -> Option<&str> {
    tag_value(s, PATH_TAG)
}

fn recorded_codec(s: &Entry) -> Result<Option<Codec>> {
    match s.codec.as_str() {
        "" | "none" => Ok(None),
        name => codec(name)
            .map(Some)
            .with_context(|| format!("snapshot {} records codec {name}", s.id.short())),
    }
}

/// The cache directory of [`ds_files`]: the index cache's, if there is one.
fn cache_dir() -> Option<PathBuf> {
    match repository::default_index_place() {
        dprepo_repo_format::repo::IndexPlace::Cache(dir) => Some(dir),
        _ => None,
    }
}

impl Namespace {
    async fn load(repo: Option<&Repository>) -> Result<Namespace> {
        let mut ns = Namespace::default();
        let Some(repo) = repo else { return Ok(ns) };
        let mut snaps = ds_files::load(repo, cache_dir()).await?;
        snaps.sort_by_key(|s| (s.time, s.id));
        for s in &snaps {
            let time = s.time;
            if s.kind == Kind::Dir {
                let dir = s.path.clone();
                ns.touch_ancestors(&dir, time);
                let d = ns.dirs.entry(dir).or_default();
                d.markers.push(s.id);
                d.mtime = d.mtime.max(Some(time));
            } else if s.kind == Kind::File {
                let path = s.path.clone();
                ns.touch_ancestors(&path, time);
                let codec = recorded_codec(s)?;
                let size = s.size;
                let all = match ns.files.remove(&path) {
                    Some(prev) => {
                        let mut all = prev.all;
                        all.push(s.id);
                        all
                    }
                    None => vec![s.id],
                };
                // Sorted by time: the last one seen is the newest.
                ns.files.insert(
                    path,
                    FileEntry {
                        newest: s.clone(),
                        all,
                        codec,
                        size,
                    },
                );
            }
        }
        ns.entries = snaps;
        Ok(ns)
    }

    fn touch_ancestors(&mut self, path: &str, time: chrono::DateTime<chrono::Utc>) {
        let mut p = parent(path);
        while p != "/" {
            let d = self.dirs.entry(p.to_string()).or_default();
            d.mtime = d.mtime.max(Some(time));
            p = parent(p);
        }
    }

    fn is_dir(&self, path: &str) -> bool {
        path == "/" || self.dirs.contains_key(path)
    }

    /// Entries strictly below `dir`, at most `depth` levels down (`None`: all).
    fn below(&self, dir: &str, depth: Option<usize>) -> Vec<Listed> {
        let level = |p: &str| {
            let rest = if dir == "/" {
                &p[1..]
            } else {
                &p[dir.len() + 1..]
            };
            rest.split('/').count()
        };
        let ok = |p: &str| p != dir && is_within(p, dir) && depth.is_none_or(|d| level(p) <= d);
        let mut out = Vec::new();
        for (p, d) in &self.dirs {
            if ok(p) {
                out.push(Listed {
                    path: p.clone(),
                    is_dir: true,
                    size: -1,
                    mtime: d.mtime.unwrap_or_default(),
                });
            }
        }
        for (p, f) in &self.files {
            if ok(p) {
                out.push(Listed::file(p, f));
            }
        }
        out
    }
}

struct Listed {
    path: String,
    is_dir: bool,
    size: i64,
    mtime: chrono::DateTime<chrono::Utc>,
}

impl Listed {
    fn file(path: &str, f: &FileEntry) -> Listed {
        Listed {
            path: path.to_string(),
            is_dir: false,
            size: i64::try_from(f.size).unwrap_or(i64::MAX),
            mtime: f.newest.time,
        }
    }
}

fn relative<'a>(ctx: &Env, path: &'a str) -> &'a str {
    let rest = if ctx.base == "/" {
        path
    } else {
        path.strip_prefix(ctx.base.as_str()).unwrap_or(path)
    };
    rest.trim_start_matches('/')
}

// ---------------------------------------------------------------------------------
// Commands.

async fn push(cli: &DatasafedCli, a: &PushArgs) -> Result<()> {
    let codec = a.compress.as_deref().map(codec).transpose()?;
    let ctx = env(cli)?;
    let path = normalize(&ctx.base, &a.rpath);
    let what = format!("push to {:?}", a.rpath);
    if path == "/" {
        bail!("{what}: is a directory");
    }
    let reader: Box<dyn Read + Send> = if a.lpath.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(&a.lpath).with_context(|| format!("open {}", a.lpath.display()))?,
        )
    };
    let repo = open(&ctx, true).await?.context("no repository")?;
    let ns = Namespace::load(Some(&repo)).await?;
    if ns.is_dir(&path) {
        bail!("{what}: is a directory");
    }
    if let Some(dir) = ancestors(&path).find(|p| ns.files.contains_key(*p)) {
        bail!("{what}: {} is a file", relative(&ctx, dir));
    }
    let codec_name = codec.map_or("none", |c| c.name);
    let tags = vec![
        TAG.to_string(),
        format!("{PATH_TAG}{path}"),
        format!("{CODEC_TAG}{codec_name}"),
    ];
    let parent = crate::ds_parent::delta_parent(&ns.entries, &path)
        .map_or(ParentChoice::None, ParentChoice::IfPresent);
    let options = BackupOptions::default().with_tags(tags).with_parent(parent);
    let source = BackupSource::Stream {
        name: basename(&path).to_string(),
        reader,
    };
    let outcome = backup(&repo, source, options, Arc::new(BackupProgress::default()))
        .await
        .with_context(|| what.clone())?;
    let new = outcome.snapshot;
    // Replace: older snapshots of this path go only after the new one is stored.
    let mut older: Vec<BlobId> = Vec::new();
    // Listed again: a concurrent push of the same path may have stored one meanwhile.
    for s in ds_files::load(&repo, cache_dir()).await? {
        if s.kind == Kind::File && s.path == path && (s.time, s.id) < (new.manifest.time, new.id) {
            older.push(s.id);
        }
    }
    forget_snapshots(&repo, &older)
        .await
        .with_context(|| format!("{what}: removing the replaced versions"))?;
    Ok(())
}

/// The proper ancestors of a `/`-rooted path, nearest first (without `/`).
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(parent(path)), |&p| {
        if p == "/" {
            None
        } else {
            Some(parent(p))
        }
    })
    .filter(|p| *p != "/")
}

async fn pull(cli: &DatasafedCli, a: &PullArgs) -> Result<()> {
    let decompress = a.decompress.as_deref().map(codec).transpose()?;
    let ctx = env(cli)?;
    let path = normalize(&ctx.base, &a.rpath);
    let what = format!("pull {:?}", a.rpath);
    let repo = open(&ctx, false).await?;
    let ns = Namespace::load(repo.as_ref()).await?;
    let (Some(repo), Some(file)) = (repo.as_ref(), ns.files.get(&path)) else {
        if ns.is_dir(&path) {
            bail!("{what}: is a directory not a file");
        }
        bail!("{what}: object not found");
    };
    // What the stored raw bytes go through on their way out.
    enum Transform {
        Raw,
        Compress(Codec),
        Decompress(Codec),
    }
    let transform = match (file.codec, decompress) {
        (None, None) => Transform::Raw,
        (Some(c), None) => Transform::Compress(c),
        (Some(c), Some(d)) if c.format == d.format => Transform::Raw,
        (Some(c), Some(d)) => bail!(
            "{what}: it was pushed with -z {}, which -d {} cannot decompress",
            c.name,
            d.name
        ),
        (None, Some(d)) => Transform::Decompress(d),
    };
    let out: Box<dyn Write + Send> = if a.lpath.as_os_str() == "-" {
        Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::io::stdout(),
        ))
    } else {
        let lpath = std::path::absolute(&a.lpath)
            .with_context(|| format!("invalid local path {:?}", a.lpath))?;
        if a.lpath.as_os_str().is_empty() || a.lpath.to_string_lossy().ends_with('/') {
            bail!("invalid local path {:?}", a.lpath.display().to_string());
        }
        if let Some(dir) = lpath.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
        }
        Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&lpath).with_context(|| format!("open {}", lpath.display()))?,
        ))
    };
    let tree = file.newest.tree;
    let name = basename(&path).as_bytes().to_vec();
    let result = match transform {
        Transform::Raw => {
            let mut out = out;
            dump(repo, &tree, &name, &mut out)
                .await
                .map(|_| ())
                .map_err(anyhow::Error::from)
        }
        Transform::Compress(c) => {
            let mut enc = EncoderWriter(encoder(c, out)?);
            match dump(repo, &tree, &name, &mut enc).await {
                Ok(_) => enc.0.finish_stream().context("writing the output"),
                Err(e) => Err(e.into()),
            }
        }
        Transform::Decompress(d) => decompress_into(repo, &tree, &name, d, out).await,
    };
    result.with_context(|| what)
}

/// Stream the stored bytes through a `d` decoder into `out`: the engine writes into a
/// bounded pipe, a thread decodes from it.
async fn decompress_into(
    repo: &Repository,
    tree: &BlobId,
    name: &[u8],
    d: Codec,
    mut out: Box<dyn Write + Send>,
) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
    let worker = std::thread::spawn(move || -> Result<()> {
        let mut dec = decoder(
            d,
            Box::new(PipeReader {
                rx,
                buf: Vec::new(),
                pos: 0,
            }),
        )?;
        std::io::copy(&mut dec, &mut out)
            .map_err(|e| anyhow!("decompressing with {}: {e}", d.name))?;
        out.flush().context("writing the output")?;
        Ok(())
    });
    let mut pipe = PipeWriter { tx: Some(tx) };
    let dumped = dump(repo, tree, name, &mut pipe).await;
    drop(pipe); // end of input for the decoder
    let decoded = worker
        .join()
        .map_err(|_| anyhow!("the decompression thread panicked"))?;
    // A decoder failure closes the pipe, which the engine then reports as a broken
    // pipe: the decoder's error is the one that explains what happened.
    decoded?;
    dumped?;
    Ok(())
}

struct PipeWriter {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
}

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let tx = self.tx.as_ref().ok_or(std::io::ErrorKind::BrokenPipe)?;
        tx.send(buf.to_vec())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct PipeReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

async fn list(cli: &DatasafedCli, a: &ListArgs) -> Result<()> {
    if !["path", "size", "mtime"].contains(&a.sort.as_str()) {
        bail!("invalid sort: {:?}", a.sort);
    }
    if !["short", "long", "json"].contains(&a.output_format.as_str()) {
        bail!("invalid output format: {:?}", a.output_format);
    }
    let ctx = env(cli)?;
    let path = normalize(&ctx.base, &a.rpath);
    let repo = open(&ctx, false).await?;
    let ns = Namespace::load(repo.as_ref()).await?;
    let mut entries = if let Some(f) = ns.files.get(&path) {
        vec![Listed::file(&path, f)]
    } else if ns.is_dir(&path) {
        // As rclone: without -r one level; --max-depth N (N > 0) limits either way.
        let depth = if a.max_depth > 0 {
            Some(usize::try_from(a.max_depth).unwrap_or(usize::MAX))
        } else if a.recursive {
            None
        } else {
            Some(1)
        };
        ns.below(&path, depth)
            .into_iter()
            .filter(|e| {
                if e.is_dir {
                    !a.files_only
                } else {
                    !a.dirs_only
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    entries.retain(|e| {
        let mt = e.mtime.timestamp();
        let too_old = a.newer_than > 0 && a.newer_than >= mt;
        let too_new = a.older_than > 0 && a.older_than <= mt;
        !too_old
            && !too_new
            && a.name
                .as_deref()
                .is_none_or(|pat| glob_match(pat, basename(&e.path)))
    });
    entries.sort_by(|x, y| {
        let c = match a.sort.as_str() {
            "size" => x.size.cmp(&y.size),
            "mtime" => x.mtime.cmp(&y.mtime),
            _ => x.path.cmp(&y.path),
        };
        match c {
            std::cmp::Ordering::Equal => x.path.cmp(&y.path),
            c if a.reverse => c.reverse(),
            c => c,
        }
    });
    let rfc3339 =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let shown = |e: &Listed| {
        let p = relative(&ctx, &e.path);
        if e.is_dir {
            format!("{p}/")
        } else {
            p.to_string()
        }
    };
    let mut text = String::new();
    match a.output_format.as_str() {
        "short" => {
            for e in &entries {
                text.push_str(&shown(e));
                text.push('\n');
            }
        }
        "long" => {
            for e in &entries {
                text.push_str(&format!(
                    "{}\t{}\t{}\n",
                    rfc3339(&e.mtime),
                    e.size,
                    shown(e)
                ));
            }
        }
        _ => {
            // datasafed's layout: one indented object per entry, "  ," between them.
            if entries.is_empty() {
                text.push_str("[]\n");
            } else {
                text.push_str("[\n");
                for (i, e) in entries.iter().enumerate() {
                    if i > 0 {
                        text.push_str("  ,\n");
                    }
                    text.push_str(&format!(
                        "  {{\n    \"path\": {},\n    \"size\": {},\n    \"mtime\": {},\n    \"mtime_str\": {},\n    \"is_dir\": {}\n  }}\n",
                        serde_json::Value::from(relative(&ctx, &e.path)),
                        e.size,
                        e.mtime.timestamp(),
                        serde_json::Value::from(rfc3339(&e.mtime)),
                        e.is_dir
                    ));
                }
                text.push_str("]\n");
            }
        }
    }
    crate::output::print(&text)?;
    Ok(())
}

/// Go's `path/filepath.Match` for one name: `*`, `?`, `[...]` classes with ranges and
/// `^` negation, `\` escapes. A malformed pattern matches nothing (datasafed ignores
/// the error).
fn glob_match(pattern: &str, name: &str) -> bool {
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // p starts after '['; returns (matched, length consumed including ']').
        let mut i = 0;
        let negate = p.first() == Some(&'^');
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        loop {
            let ch = *p.get(i)?;
            if ch == ']' && !first {
                return Some((matched != negate, i + 1));
            }
            first = false;
            let lo = if ch == '\\' {
                i += 1;
                *p.get(i)?
            } else {
                ch
            };
            i += 1;
            let hi = if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|c| *c != ']') {
                i += 1;
                let h = if p[i] == '\\' {
                    i += 1;
                    *p.get(i)?
                } else {
                    p[i]
                };
                i += 1;
                h
            } else {
                lo
            };
            if lo <= c && c <= hi {
                matched = true;
            }
        }
    }
    fn go(p: &[char], n: &[char]) -> Option<bool> {
        match p.first() {
            None => Some(n.is_empty()),
            Some('*') => {
                let rest = &p[1..];
                for k in 0..=n.len() {
                    if n[..k].contains(&'/') {
                        break;
                    }
                    if go(rest, &n[k..])? {
                        return Some(true);
                    }
                }
                Some(false)
            }
            Some('?') => match n.first() {
                Some(c) if *c != '/' => go(&p[1..], &n[1..]),
                _ => Some(false),
            },
            Some('[') => {
                let Some(c) = n.first() else {
                    return Some(false);
                };
                let (ok, used) = class(&p[1..], *c)?;
                if ok && *c != '/' {
                    go(&p[1 + used..], &n[1..])
                } else {
                    Some(false)
                }
            }
            Some('\\') => {
                let lit = *p.get(1)?;
                if n.first() == Some(&lit) {
                    go(&p[2..], &n[1..])
                } else {
                    Some(false)
                }
            }
            Some(lit) => {
                if n.first() == Some(lit) {
                    go(&p[1..], &n[1..])
                } else {
                    Some(false)
                }
            }
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n).unwrap_or(false)
}

async fn access_key(cli: &DatasafedCli, a: &AccessKeyArgs) -> Result<()> {
    let text = std::fs::read(&a.secret_file)
        .with_context(|| format!("reading the secret file {}", a.secret_file.display()))?;
    let secret = std::str::from_utf8(text.trim_ascii())
        .ok()
        .and_then(|hex| BlobId::from_hex(hex).ok())
        .with_context(|| {
            format!(
                "{}: the secret must be 64 hex digits",
                a.secret_file.display()
            )
        })?;
    let ctx = env(cli)?;
    let Some(repo) = open(&ctx, false).await? else {
        bail!(
            "no repository at {}: push something first (with a password, which creates it)",
            ctx.storage.location()
        );
    };
    let (key, created) = repo
        .access_key_for_secret(secret.0, &a.label)
        .await
        .context("registering the access key")?;
    if created {
        eprintln!("registered access key {}", key.key_id().short());
    }
    println!("dprepo-access-key-id: {}", key.key_id().to_hex());
    Ok(())
}

async fn stat(cli: &DatasafedCli, a: &StatArgs) -> Result<()> {
    let ctx = env(cli)?;
    let path = normalize(&ctx.base, &a.rpath);
    let repo = open(&ctx, false).await?;
    let ns = Namespace::load(repo.as_ref()).await?;
    let (mut total, mut dirs, mut files) = (0u64, 0u64, 0u64);
    if let Some(f) = ns.files.get(&path) {
        total = f.size;
        files = 1;
    } else if ns.is_dir(&path) || path == ctx.base {
        // The base path always exists, as the root of an empty bucket does.
        for e in ns.below(&path, None) {
            if e.is_dir {
                dirs += 1;
            } else {
                files += 1;
                total += u64::try_from(e.size).unwrap_or(0);
            }
        }
    } else {
        bail!("stat {:?}: directory not found", a.rpath);
    }
    let entries = dirs + files;
    let text = if a.json {
        // Go marshals map keys in sorted order.
        format!(
            "{{\"dirs\":{dirs},\"entries\":{entries},\"files\":{files},\"total_size\":{total}}}\n"
        )
    } else {
        format!("TotalSize: {total}\nEntries: {entries}\nDirs: {dirs}\nFiles: {files}\n")
    };
    crate::output::print(&text)?;
    Ok(())
}

async fn rm(cli: &DatasafedCli, a: &RmArgs) -> Result<()> {
    let ctx = env(cli)?;
    let path = normalize(&ctx.base, &a.rpath);
    let what = format!("rm {:?}", a.rpath);
    let Some(repo) = open(&ctx, false).await? else {
        return Ok(()); // nothing stored anywhere: removing nothing succeeds
    };
    let ns = Namespace::load(Some(&repo)).await?;
    let mut doomed: BTreeSet<BlobId> = BTreeSet::new();
    if let Some(f) = ns.files.get(&path) {
        doomed.extend(f.all.iter().copied());
    } else if ns.is_dir(&path) {
        if !a.recursive {
            bail!("{what}: is a directory (use -r to remove it and everything in it)");
        }
        for (p, f) in &ns.files {
            if is_within(p, &path) {
                doomed.extend(f.all.iter().copied());
            }
        }
        for (p, d) in &ns.dirs {
            if is_within(p, &path) {
                doomed.extend(d.markers.iter().copied());
            }
        }
    }
    let ids: Vec<BlobId> = doomed.into_iter().collect();
    forget_snapshots(&repo, &ids).await.with_context(|| what)?;
    Ok(())
}

async fn rmdir(cli: &DatasafedCli, a: &PathArg) -> Result<()> {
    let ctx = env(cli)?;
    let path = normalize(&ctx.base, &a.rpath);
    let what = format!("rmdir {:?}", a.rpath);
    let repo = open(&ctx, false).await?;
    let ns = Namespace::load(repo.as_ref()).await?;
    if ns.files.contains_key(&path) {
        bail!("{what}: is a file");
    }
    if !ns.is_dir(&path) {
        bail!("{what}: directory not found");
    }
    if !ns.below(&path, Some(1)).is_empty() {
        bail!("{what}: directory not empty");
    }
    if let (Some(repo), Some(d)) = (repo.as_ref(), ns.dirs.get(&path)) {
        forget_snapshots(repo, &d.markers)
            .await
            .with_context(|| what)?;
    }
    Ok(())
}

async fn mkdir(cli: &DatasafedCli, a: &PathArg) -> Result<()> {
    let ctx = env(cli)?;
    let path = normalize(&ctx.base, &a.rpath);
    let what = format!("mkdir {:?}", a.rpath);
    if path == "/" {
        return Ok(());
    }
    let repo = open(&ctx, true).await?.context("no repository")?;
    let ns = Namespace::load(Some(&repo)).await?;
    if let Some(p) = std::iter::once(path.as_str())
        .chain(ancestors(&path))
        .find(|p| ns.files.contains_key(*p))
    {
        bail!("{what}: {} is a file", relative(&ctx, p));
    }
    if ns.dirs.get(&path).is_some_and(|d| !d.markers.is_empty()) {
        return Ok(());
    }
    let options = BackupOptions::default()
        .with_tags(vec![TAG.to_string(), format!("{DIR_TAG}{path}")])
        .with_parent(ParentChoice::None);
    let source = BackupSource::Stream {
        name: basename(&path).to_string(),
        reader: Box::new(std::io::empty()),
    };
    backup(&repo, source, options, Arc::new(BackupProgress::default()))
        .await
        .with_context(|| what)?;
    Ok(())
}

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
mod tests {
    use super::*;

    #[test]
    fn normalize_keeps_paths_below_the_base() {
        assert_eq!(normalize("/", "a/b"), "/a/b");
        assert_eq!(normalize("/", "/a//./b/"), "/a/b");
        assert_eq!(normalize("/", ""), "/");
        assert_eq!(normalize("/", "../../x"), "/x");
        assert_eq!(normalize("/base/p", "../x"), "/base/p/x");
        assert_eq!(normalize("/base/p", "/"), "/base/p");
    }

    #[test]
    fn glob_matches_like_go_filepath_match() {
        assert!(glob_match("*.zst", "a.zst"));
        assert!(!glob_match("*.zst", "a.zst.x"));
        assert!(glob_match("0000000?", "00000001"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[^a-c]x", "bx"));
        assert!(glob_match("[^a-c]x", "dx"));
        assert!(glob_match("\\*", "*"));
        assert!(!glob_match("[", "["));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn codecs_resolve_aliases_and_name_the_supported_set() {
        assert_eq!(
            codec("zstd-better").map(|c| c.name).ok(),
            Some("zstd-better-compression")
        );
        let e = codec("s2-default")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("not supported") && e.contains("zstd-fastest"),
            "{e}"
        );
        assert!(codec("brotli").is_err());
    }

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for c in CODECS {
            let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
            struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
            impl Write for Shared {
                fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                    self.0
                        .lock()
                        .map_err(|_| std::io::ErrorKind::Other)?
                        .extend_from_slice(b);
                    Ok(b.len())
                }
                fn flush(&mut self) -> std::io::Result<()> {
                    Ok(())
                }
            }
            let mut enc = encoder(*c, Box::new(Shared(buf.clone()))).expect("encoder");
            enc.write_all(&data).expect("compress");
            enc.finish_stream().expect("finish");
            let compressed = buf.lock().expect("lock").clone();
            let mut dec = decoder(*c, Box::new(std::io::Cursor::new(compressed))).expect("decoder");
            let mut back = Vec::new();
            dec.read_to_end(&mut back).expect("decompress");
            assert_eq!(back, data, "{}", c.name);
        }
    }
}

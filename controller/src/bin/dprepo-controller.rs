//! The `dprepo-controller` binary: `run` (the operator), `crd` (print or write the CRDs),
//! `validate` (check manifests against them before `kubectl apply`), `backup-manager`
//! (the sidecar of backup Jobs), `create-backup` (what a BackupSchedule's CronJob pod
//! runs), `exec` (what the Job of an Exec action runs).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "dprepo-controller",
    version,
    about = "Kubernetes operator serving KubeBlocks' dataprotection API on dprepo repositories"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller against the cluster of KUBECONFIG (or, in a pod, its own).
    Run(RunArgs),
    /// The `manager` sidecar of backup Jobs: waits for $DP_BACKUP_INFO_FILE, reports it
    /// (with the repository's snapshot ids, stored bytes and dedup ratio) into the
    /// Backup's status as the pod's service account, and pushes the Backup as
    /// kubeblocks-backup.json. Configured by the Job's environment.
    BackupManager {
        /// The sidecar of a Continuous backup's StatefulSet: report every new content of
        /// $DP_BACKUP_INFO_FILE while the archiver runs, until terminated.
        #[arg(long)]
        continuous: bool,
    },
    /// Print every CustomResourceDefinition as one multi-document YAML stream.
    Crd {
        /// Instead of printing, write one file per CRD and a kustomization.yaml into DIR
        /// (files of other names in DIR are left alone).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Check manifests against the CRDs before `kubectl apply`: every error (unknown field,
    /// wrong type, failed enum, pattern, bound or CEL rule) with its JSON path. Exits 1 if
    /// any document has an error.
    Validate {
        /// Files to check (multi-document YAML); `-` reads standard input.
        #[arg(short = 'f', long = "filename", value_name = "FILE", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Print the reports as JSON.
        #[arg(long)]
        json: bool,
        /// Let documents of other kinds (Secrets, ConfigMaps ...) pass unchecked instead of
        /// failing them.
        #[arg(long)]
        skip_other_kinds: bool,
    },
    /// Create the Backup of a BackupSchedule's run (what its CronJob's pod runs, as the
    /// pod's service account): named `<name-prefix>-<YYYYMMDDhhmmss>` (UTC), labelled
    /// `autobackup` and `backup-schedule`, as KubeBlocks names them.
    CreateBackup(CreateBackupArgs),
    /// What the Job of an Exec action runs: the command in a pod's container through the
    /// pods/exec API (as the Job's service account), its output copied to this process's,
    /// and its exit status as this process's (124 when --timeout passes).
    Exec(ExecArgs),
}

/// `exec`'s flags.
#[derive(Debug, clap::Args)]
struct ExecArgs {
    /// Namespace of the pod.
    #[arg(short = 'n', long)]
    namespace: String,
    /// The pod.
    #[arg(long)]
    pod: String,
    /// The container (default: the pod's first).
    #[arg(short = 'c', long, default_value = "")]
    container: String,
    /// Deadline in seconds for the whole command.
    #[arg(long)]
    timeout_seconds: Option<u64>,
    /// Hand this process's variables whose names start with PREFIX to the command (over
    /// stdin, to a `sh` wrapper in the container).
    #[arg(long, value_name = "PREFIX")]
    forward_env: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// `create-backup`'s flags.
#[derive(Debug, clap::Args)]
struct CreateBackupArgs {
    /// Namespace of the Backup.
    #[arg(long)]
    namespace: String,
    /// The Backup's name before `-<timestamp>`.
    #[arg(long)]
    name_prefix: String,
    /// spec.backupPolicyName.
    #[arg(long)]
    backup_policy: String,
    /// spec.backupMethod.
    #[arg(long)]
    backup_method: String,
    /// The BackupSchedule (the `backup-schedule` label).
    #[arg(long)]
    backup_schedule: String,
    /// spec.retentionPeriod (`7d`, `1y6mo`).
    #[arg(long)]
    retention_period: Option<String>,
    /// spec.parameters as JSON: `[{"name":"k","value":"v"}]`.
    #[arg(long)]
    parameters: Option<String>,
    /// Create nothing (and succeed) unless a Completed Full backup of this method exists
    /// under the same policy (Incremental methods).
    #[arg(long, value_name = "METHOD")]
    require_completed_full: Option<String>,
}

/// `run`'s flags, named as KubeBlocks' dataprotection manager names them.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Where /metrics is served (`:8080`, `HOST:PORT`; `0` serves none).
    #[arg(long, default_value = ":8080", value_parser = parse_address)]
    metrics_bind_address: BindAddress,
    /// Where /healthz and /readyz are served.
    #[arg(long, default_value = ":8081", value_parser = parse_address)]
    health_probe_bind_address: BindAddress,
    /// Run only while holding the leader Lease, so one replica is active
    /// (`--leader-elect=false` to run without one).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", require_equals = true)]
    leader_elect: bool,
    /// Name of the leader Lease (in CM_NAMESPACE).
    #[arg(long, default_value = dprepo_controller::run::DEFAULT_LEADER_ELECT_ID)]
    leader_elect_id: String,
    /// Log format: text or json (the level comes from RUST_LOG, default info).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

/// A listen address; `None` for `0` (disabled).
#[derive(Debug, Clone, Copy)]
struct BindAddress(Option<std::net::SocketAddr>);

fn parse_address(text: &str) -> Result<BindAddress, String> {
    dprepo_controller::run::parse_bind_address(text).map(BindAddress)
}

fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.with_ansi(false).init();
    }
}

fn run_controller(args: RunArgs) -> Result<ExitCode> {
    init_logging(&args.log_format);
    let Some(probe_address) = args.health_probe_bind_address.0 else {
        bail!("--health-probe-bind-address must name an address: the probes cannot be disabled");
    };
    let options = dprepo_controller::run::RunOptions {
        metrics_address: args.metrics_bind_address.0,
        probe_address,
        leader_elect: args.leader_elect,
        leader_elect_id: args.leader_elect_id,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(dprepo_controller::run::run(options))?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dprepo-controller: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: kube's errors already print their source, so
/// `{:#}` would repeat the same OS error three times.
fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run_controller(args),
        Command::BackupManager { continuous } => {
            let mut options = dprepo_controller::manager::ManagerOptions::from_env()?;
            options.continuous = continuous;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(dprepo_controller::manager::run(options))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crd { out_dir: None } => {
            print!("{}", dprepo_controller::crd::all_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Crd { out_dir: Some(dir) } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, content) in dprepo_controller::crd::files()? {
                let path = dir.join(&name);
                std::fs::write(&path, content)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate {
            files,
            json,
            skip_other_kinds,
        } => validate(&files, json, skip_other_kinds),
        Command::CreateBackup(args) => create_backup(args),
        Command::Exec(args) => {
            let options = dprepo_controller::exec::ExecOptions {
                namespace: args.namespace,
                pod: args.pod,
                container: args.container,
                timeout: args.timeout_seconds.map(std::time::Duration::from_secs),
                forward_env: args.forward_env,
                command: args.command,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let code = runtime.block_on(dprepo_controller::exec::run(options))?;
            Ok(ExitCode::from(
                u8::try_from(code.clamp(0, 255)).unwrap_or(1),
            ))
        }
    }
}

fn create_backup(args: CreateBackupArgs) -> Result<ExitCode> {
    use dprepo_controller::create_backup::{run, CreateOutcome};
    let args = dprepo_controller::create_backup::CreateBackupArgs {
        namespace: args.namespace,
        name_prefix: args.name_prefix,
        backup_policy: args.backup_policy,
        backup_method: args.backup_method,
        backup_schedule: args.backup_schedule,
        retention_period: args.retention_period,
        parameters: args.parameters,
        require_completed_full: args.require_completed_full,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(async {
        dprepo_controller::run::install_crypto_provider();
        let client = kube::Client::try_default()
            .await
            .context("configuring the API client (the pod's service account, or KUBECONFIG)")?;
        run(client, &args).await
    })?;
    match outcome {
        CreateOutcome::Created(name) => {
            println!("backup.dataprotection.kubeblocks.io/{name} created")
        }
        CreateOutcome::NoFullBackup => println!(
            "No completed full backups of method {} found. Exiting.",
            args.require_completed_full.as_deref().unwrap_or("")
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn validate(files: &[PathBuf], json: bool, skip_other_kinds: bool) -> Result<ExitCode> {
    use dprepo_controller::validate::{validate_text, Options};
    use std::io::Read;

    let options = Options { skip_other_kinds };
    let mut reports = Vec::new();
    let mut stdin_read = false;
    for file in files {
        let (name, text) = if file.as_os_str() == "-" {
            if stdin_read {
                bail!("`-` (standard input) is given twice");
            }
            stdin_read = true;
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading standard input")?;
            ("-".to_string(), text)
        } else {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            (file.display().to_string(), text)
        };
        reports.extend(validate_text(&name, &text, options));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            let place = format!("{}#{}", r.file, r.document);
            if r.skipped {
                println!(
                    "{place}: {}: SKIPPED (not a kind dprepo-controller serves)",
                    r.title()
                );
            } else if r.is_ok() {
                println!("{place}: {}: OK", r.title());
            } else {
                let n = r.problems.len();
                let s = if n == 1 { "" } else { "s" };
                println!("{place}: {}: {n} error{s}", r.title());
                for p in &r.problems {
                    println!("  {p}");
                }
            }
        }
    }
    if reports.is_empty() {
        eprintln!("dprepo-controller: no documents found");
        return Ok(ExitCode::FAILURE);
    }
    Ok(if reports.iter().all(|r| r.is_ok()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // `run` with its defaults once panicked in clap: an `Option<SocketAddr>` field with a
    // value parser returning `Option` does not downcast.
    #[test]
    fn run_flags_parse_with_defaults_and_as_kubeblocks_passes_them() {
        let cli = Cli::try_parse_from(["dprepo-controller", "run"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(
            args.metrics_bind_address.0,
            Some("0.0.0.0:8080".parse().unwrap())
        );
        assert!(args.leader_elect);
        assert_eq!(args.leader_elect_id, "abd03fda");
        let cli = Cli::try_parse_from([
            "dprepo-controller",
            "run",
            "--health-probe-bind-address=:8081",
            "--metrics-bind-address=0",
            "--leader-elect",
            "--leader-elect-id=x",
            "--log-format=json",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.metrics_bind_address.0, None);
        assert!(args.leader_elect);
        let cli =
            Cli::try_parse_from(["dprepo-controller", "run", "--leader-elect=false"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert!(!args.leader_elect);
        assert!(Cli::try_parse_from(["dprepo-controller", "run", "--log-format=xml"]).is_err());
    }
}

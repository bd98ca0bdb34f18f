//! The `dprepo-controller` binary: `run` (the operator), `crd` (print or write the CRDs),
//! `validate` (check manifests against them before `kubectl apply`).

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
    /// Run the controller against the cluster of the current kubeconfig.
    Run,
    /// Print every CustomResourceDefinition as one multi-document YAML stream.
    Crd {
        /// Instead of printing, write one file per CRD and a kustomization.yaml into DIR
        /// (files of other names in DIR are left alone).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dprepo-controller: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run => bail!(
            "`run` is not implemented in this build: the reconcilers have not landed yet \
             (the CRDs, `crd` and `validate` work)"
        ),
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
    }
}

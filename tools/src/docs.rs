//! `dprepo completion SHELL` and `dprepo man`: shell completions and manual pages,
//! both generated from the clap definition of the command line, so they never drift
//! from it.

use crate::Cli;
use anyhow::{Context, Result};
use clap::{Args, CommandFactory};
use std::io::Write;
use std::path::PathBuf;

/// `dprepo completion` arguments.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// `dprepo man` arguments.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write dprepo.1 and one page per subcommand (dprepo-backup.1 ...) into DIR
    /// instead of printing dprepo.1 on stdout.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Print the completion script for `a.shell` on stdout. Install it as the shell
/// wants: e.g. `dprepo completion bash > /etc/bash_completion.d/dprepo`.
pub fn completion(a: &CompletionArgs) -> Result<u8> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "dprepo", &mut out);
    write_stdout(&out)?;
    Ok(0)
}

/// Render the manual pages (roff).
pub fn man(a: &ManArgs) -> Result<u8> {
    let cmd = Cli::command();
    let Some(dir) = &a.dir else {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        write_stdout(&out)?;
        return Ok(0);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let mut pages = vec![("dprepo".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands() {
        let name = format!("dprepo-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    for (name, page) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    for p in written {
        eprintln!("wrote {}", p.display());
    }
    Ok(0)
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|_| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

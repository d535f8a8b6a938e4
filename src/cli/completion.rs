//! `ms completion bash|zsh|fish|...` and `ms man`: generated from the command-line definition,
//! so they never fall behind it.

use std::path::PathBuf;

use clap::{Args, CommandFactory};

use super::{Cli, CmdResult, Failure};

/// Arguments of `ms completion`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ms completion bash > /etc/bash_completion.d/ms
  ms completion zsh > \"${fpath[1]}/_ms\"
  ms completion fish > ~/.config/fish/completions/ms.fish")]
pub(crate) struct CompletionArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

/// Arguments of `ms man`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ms man | man -l -
  ms man --dir /usr/local/share/man/man1    # ms.1, ms-apply.1, ms-get.1, ...")]
pub(crate) struct ManArgs {
    /// Write one page per command into this directory instead of printing `ms.1`.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub(crate) fn completion(args: CompletionArgs) -> CmdResult {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "ms", &mut std::io::stdout());
    Ok(())
}

pub(crate) fn man(args: ManArgs) -> CmdResult {
    let cmd = Cli::command();
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Failure::Message(format!("cannot create {}: {e}", dir.display())))?;
            clap_mangen::generate_to(cmd, &dir).map_err(|e| {
                Failure::Message(format!("cannot write into {}: {e}", dir.display()))
            })?;
            println!("man pages written to {}", dir.display());
        }
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
    }
    Ok(())
}

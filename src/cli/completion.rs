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
    // Into a buffer first: clap_complete panics on a write error (`| head` closing the pipe).
    let mut text = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "ms", &mut text);
    write_stdout(&text)
}

/// Writes `bytes` to stdout; a closed pipe is not an error.
fn write_stdout(bytes: &[u8]) -> CmdResult {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
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
        None => {
            let mut text = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut text)?;
            write_stdout(&text)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_name_every_subcommand() {
        let mut out = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "ms",
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        for sub in [
            "apply",
            "validate",
            "diff",
            "wait",
            "logs",
            "exec",
            "completion",
        ] {
            assert!(text.contains(sub), "{sub} missing from the bash completion");
        }
    }

    #[test]
    fn man_pages_are_written_one_per_command() {
        let dir = tempfile::tempdir().unwrap();
        man(ManArgs {
            dir: Some(dir.path().to_path_buf()),
        })
        .unwrap();
        let page = std::fs::read_to_string(dir.path().join("ms-validate.1")).unwrap();
        assert!(page.contains(".TH ms-validate"), "{page}");
        assert!(dir.path().join("ms.1").exists());
    }

    #[test]
    fn every_client_command_has_examples_in_its_help() {
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            let name = sub.get_name();
            let help = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.contains("Examples:"),
                "ms {name} --help has no examples"
            );
        }
    }
}

//! `ms gitops init` (install the status filter in a checkout) and `ms strip-status` (the filter).

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CmdResult, Failure};
use crate::gitops;

/// Arguments of `ms gitops`.
#[derive(Debug, Args)]
pub struct GitopsArgs {
    #[command(subcommand)]
    command: GitopsCommand,
}

#[derive(Debug, Subcommand)]
enum GitopsCommand {
    /// Make status blocks invisible to git in the checkout holding DIR (the watched directory):
    /// a clean filter for DIR's manifests in .git/info/attributes and the repository's config.
    Init(InitArgs),
}

#[derive(Debug, Args)]
struct InitArgs {
    /// The watched manifest directory, inside a git work tree.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Clean command git runs (default: this `ms` binary's absolute path, then `strip-status`).
    #[arg(long, value_name = "CMD")]
    command: Option<String>,
}

/// `ms gitops ...`.
pub fn run(args: GitopsArgs) -> CmdResult {
    match args.command {
        GitopsCommand::Init(a) => init(a),
    }
}

fn init(args: InitArgs) -> CmdResult {
    if !args.dir.is_dir() {
        return Err(Failure::Message(format!(
            "{} is not a directory",
            args.dir.display()
        )));
    }
    let command = args.command.unwrap_or_else(gitops::init::default_command);
    let report =
        gitops::init::init(&args.dir, &command).map_err(|e| Failure::Message(e.to_string()))?;
    if report.added.is_empty() {
        println!(
            "{} already has the status filter attributes",
            report.attributes.display()
        );
    } else {
        for l in &report.added {
            println!("{}: added `{l}`", report.attributes.display());
        }
    }
    println!(
        "git config filter.{}.clean = {}",
        gitops::FILTER,
        report.command
    );
    if report.rearmed > 0 {
        println!(
            "{} manifest(s) with status blocks are clean for git again",
            report.rearmed
        );
    }
    println!(
        "status blocks in {} are now invisible to git (git status, diff, pull, checkout, stash, rebase)",
        report.top.display()
    );
    Ok(())
}

/// `ms strip-status`: standard input to standard output without the `status:` blocks of
/// microscaler groups (git's clean filter). Anything that is not UTF-8 passes unchanged: a
/// filter must never lose a byte of what it does not understand.
pub fn strip_status() -> CmdResult {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    let out = match std::str::from_utf8(&input) {
        Ok(text) => crate::files::strip_statuses(text).into_bytes(),
        Err(_) => input,
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out)?;
    stdout.flush()?;
    Ok(())
}

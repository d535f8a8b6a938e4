//! `ms delete`, `ms scale`, `ms start`, `ms stop`: changes the controller writes into manifests.

use clap::Args;

use super::apply_cmd::{expand, print_changes, read};
use super::{CmdResult, Failure, NamespaceArgs};
use crate::client::Client;
use crate::manifest::{parse_file, Kind};

/// Arguments of `ms delete`.
#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// Delete the objects defined in these manifest files (FILE, DIR or -).
    #[arg(short = 'f', long = "filename", value_name = "FILE", conflicts_with_all = ["kind", "name"])]
    files: Vec<String>,
    /// asg, lc or policy.
    #[arg(required_unless_present = "files")]
    kind: Option<String>,
    /// Name of the object.
    #[arg(required_unless_present = "files")]
    name: Option<String>,
    #[command(flatten)]
    ns: NamespaceArgs,
}

/// Arguments naming one autoscaling group (`ms start asg NAME`).
#[derive(Debug, Args)]
pub(crate) struct GroupArgs {
    /// Always `asg` (kubectl style).
    #[arg(value_parser = ["asg", "asgs", "autoscalinggroup"])]
    kind: String,
    /// Name of the group.
    name: String,
    #[command(flatten)]
    ns: NamespaceArgs,
}

/// Arguments of `ms scale`.
#[derive(Debug, Args)]
pub(crate) struct ScaleArgs {
    #[command(flatten)]
    group: GroupArgs,
    /// New desired capacity, within [minSize, maxSize].
    #[arg(long)]
    desired: u32,
}

fn parse_kind(s: &str) -> Result<Kind, Failure> {
    Kind::parse(s)
        .ok_or_else(|| Failure::Message(format!("unknown kind `{s}`: use asg, lc or policy")))
}

pub(crate) async fn delete(client: Client, args: DeleteArgs) -> CmdResult {
    if args.files.is_empty() {
        let kind = parse_kind(args.kind.as_deref().unwrap_or_default())?;
        let name = args.name.as_deref().unwrap_or_default();
        let r = client.delete(kind, &args.ns.namespace, name).await?;
        print_changes(&r);
        return Ok(());
    }
    // Identities are read locally, so a file that no longer validates can still be deleted by
    // what it names; the file itself is not sent.
    let mut keys = Vec::new();
    for spec in &args.files {
        for file in expand(spec)? {
            let (name, text) = read(&file)?;
            let parsed = parse_file(std::path::Path::new(&name), &text);
            if !parsed.errors.is_empty() {
                let summary = super::manifest_summary(&parsed.errors, "nothing was deleted");
                return Err(Failure::Manifest {
                    summary,
                    errors: parsed.errors,
                });
            }
            keys.extend(parsed.objects.into_iter().map(|o| o.object.key()));
        }
    }
    // Policies before groups before launch configurations: dependents go first.
    keys.sort_by_key(|k| match k.kind {
        Kind::ScalingPolicy => 0,
        Kind::AutoScalingGroup => 1,
        Kind::LaunchConfiguration => 2,
    });
    // Like kubectl: every object is attempted; the exit status says whether one failed.
    let mut failed = 0usize;
    let total = keys.len();
    for key in keys {
        match client.delete(key.kind, &key.namespace, &key.name).await {
            Ok(r) => print_changes(&r),
            Err(e @ crate::client::ClientError::Unreachable { .. }) => return Err(e.into()),
            Err(e) => {
                failed += 1;
                super::report(&e.into());
            }
        }
    }
    match failed {
        0 => Ok(()),
        n => Err(Failure::Message(format!(
            "{n} of {total} objects could not be deleted"
        ))),
    }
}

pub(crate) async fn scale(client: Client, args: ScaleArgs) -> CmdResult {
    let r = client
        .scale(&args.group.ns.namespace, &args.group.name, args.desired)
        .await?;
    print_changes(&r);
    Ok(())
}

pub(crate) async fn start_stop(client: Client, args: GroupArgs, start: bool) -> CmdResult {
    let r = client
        .set_started(&args.ns.namespace, &args.name, start)
        .await?;
    print_changes(&r);
    Ok(())
}

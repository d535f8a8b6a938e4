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
    /// asg, lc or policy; or KIND/NAME.
    #[arg(required_unless_present = "files")]
    kind: Option<String>,
    /// Name of the object (unless given as KIND/NAME).
    name: Option<String>,
    #[command(flatten)]
    ns: NamespaceArgs,
}

/// Arguments naming one autoscaling group (`ms start asg NAME` or `ms start asg/NAME`).
#[derive(Debug, Args)]
pub(crate) struct GroupArgs {
    /// `asg` (kubectl style), or `asg/NAME`.
    kind: String,
    /// Name of the group (unless given as asg/NAME).
    name: Option<String>,
    #[command(flatten)]
    ns: NamespaceArgs,
}

/// `(kind, name)` from `KIND NAME` or `KIND/NAME`.
fn kind_and_name(kind: &str, name: Option<&str>) -> Result<(String, String), Failure> {
    match (kind.split_once('/'), name) {
        (Some((k, n)), None) => Ok((k.to_string(), n.to_string())),
        (None, Some(n)) => Ok((kind.to_string(), n.to_string())),
        (Some(_), Some(_)) => Err(Failure::Code(
            2,
            format!("`{kind}` already names the object: give no second name"),
        )),
        (None, None) => Err(Failure::Code(
            2,
            format!("name the object: `{kind} NAME` or `{kind}/NAME`"),
        )),
    }
}

impl GroupArgs {
    /// The group's name (the kind must be an autoscaling group).
    fn group(&self) -> Result<String, Failure> {
        let (kind, name) = kind_and_name(&self.kind, self.name.as_deref())?;
        if Kind::parse(&kind) != Some(Kind::AutoScalingGroup) {
            return Err(Failure::Code(
                2,
                format!("`{kind}`: this command acts on autoscaling groups (asg NAME or asg/NAME)"),
            ));
        }
        Ok(name)
    }
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
        let (kind, name) = kind_and_name(
            args.kind.as_deref().unwrap_or_default(),
            args.name.as_deref(),
        )?;
        let kind = parse_kind(&kind)?;
        let r = client.delete(kind, &args.ns.namespace, &name).await?;
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
        Kind::LoadBalancer => 3,
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
    let name = args.group.group()?;
    let r = client
        .scale(&args.group.ns.namespace, &name, args.desired)
        .await?;
    print_changes(&r);
    Ok(())
}

pub(crate) async fn start_stop(client: Client, args: GroupArgs, start: bool) -> CmdResult {
    let name = args.group()?;
    let r = client.set_started(&args.ns.namespace, &name, start).await?;
    print_changes(&r);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_named_as_kind_name_or_kind_slash_name() {
        assert_eq!(
            kind_and_name("asg", Some("web")).unwrap(),
            ("asg".to_string(), "web".to_string())
        );
        assert_eq!(
            kind_and_name("asg/web", None).unwrap(),
            ("asg".to_string(), "web".to_string())
        );
        assert_eq!(
            kind_and_name("asg/web", Some("x")).unwrap_err().exit_code(),
            2
        );
        assert_eq!(kind_and_name("asg", None).unwrap_err().exit_code(), 2);
        let g = GroupArgs {
            kind: "lc/web".into(),
            name: None,
            ns: NamespaceArgs {
                namespace: "default".into(),
            },
        };
        assert_eq!(g.group().unwrap_err().exit_code(), 2);
    }
}

//! `ms protect instance NAME [--for 1h]` and `ms unprotect instance NAME`: scale-in protection
//! of one instance, with the bearer token or the instance's own token.

use clap::Args;

use super::{CmdResult, Failure, NamespaceArgs};
use crate::client::Client;
use crate::wire::{ProtectRequest, ProtectResponse};

/// Arguments of `ms protect`.
#[derive(Debug, Args)]
pub(crate) struct ProtectArgs {
    #[command(flatten)]
    target: InstanceArgs,
    /// How long (`30m`, `8h`); default: until `ms unprotect` (with an instance token: the
    /// controller's `maxProtection`, 8h unless configured).
    #[arg(long = "for", value_name = "DURATION")]
    for_: Option<String>,
}

/// Arguments naming one instance (`instance NAME` or `instance/NAME`).
#[derive(Debug, Args)]
pub(crate) struct InstanceArgs {
    /// `instance` (kubectl style), or `instance/NAME`.
    kind: String,
    /// The instance's name (its container name, `ms get instances`).
    name: Option<String>,
    /// Use an instance's own token (its `MS_PROTECT_TOKEN`) instead of the bearer token: it
    /// protects that one instance only.
    #[arg(long, env = "MS_PROTECT_TOKEN", hide_env_values = true)]
    instance_token: Option<String>,
    #[command(flatten)]
    ns: NamespaceArgs,
}

impl InstanceArgs {
    fn instance(&self) -> Result<String, Failure> {
        let (kind, name) = match (self.kind.split_once('/'), &self.name) {
            (Some((k, n)), None) => (k, n.to_string()),
            (None, Some(n)) => (self.kind.as_str(), n.clone()),
            _ => {
                return Err(Failure::Code(
                    2,
                    "name the instance: `instance NAME` or `instance/NAME`".into(),
                ))
            }
        };
        if !matches!(kind, "instance" | "instances" | "inst") {
            return Err(Failure::Code(
                2,
                format!("`{kind}`: this command acts on instances (instance NAME)"),
            ));
        }
        Ok(name)
    }
}

fn print(r: &ProtectResponse) {
    match (r.protected, r.until) {
        (true, Some(u)) => println!(
            "instance/{} protected from scale-in until {} (group {})",
            r.instance,
            u.to_rfc3339(),
            r.group
        ),
        (true, None) => println!(
            "instance/{} protected from scale-in until unprotected (group {})",
            r.instance, r.group
        ),
        (false, _) => println!("instance/{} unprotected (group {})", r.instance, r.group),
    }
}

pub(crate) async fn protect(client: Client, args: ProtectArgs) -> CmdResult {
    let name = args.target.instance()?;
    let r = client
        .protect(
            &args.target.ns.namespace,
            &name,
            Some(ProtectRequest { for_: args.for_ }),
            args.target.instance_token.as_deref(),
        )
        .await?;
    print(&r);
    Ok(())
}

pub(crate) async fn unprotect(client: Client, args: InstanceArgs) -> CmdResult {
    let name = args.instance()?;
    let r = client
        .protect(
            &args.ns.namespace,
            &name,
            None,
            args.instance_token.as_deref(),
        )
        .await?;
    print(&r);
    Ok(())
}

//! `ms login`: stores the controller URL and token for later commands.

use clap::Args;

use super::{CmdResult, Failure};
use crate::client::Login;

/// Arguments of `ms login`.
#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// Controller URL, e.g. http://127.0.0.1:56785.
    #[arg(long, value_name = "URL")]
    target: String,
    /// Default namespace of later commands (below -n and $MS_NAMESPACE).
    #[arg(long = "namespace", value_name = "NS")]
    default_namespace: Option<String>,
}

/// Stores `--target`, the global `--token` (given by the controller's administrator) and
/// `--certificate-authority` (for an https:// target).
pub(crate) async fn run(
    args: LoginArgs,
    token: Option<String>,
    certificate_authority: Option<std::path::PathBuf>,
) -> CmdResult {
    if !(args.target.starts_with("http://") || args.target.starts_with("https://")) {
        return Err(Failure::Message(format!(
            "--target must be a URL such as http://127.0.0.1:56785, not `{}`",
            args.target
        )));
    }
    // Stored absolute, so later commands from another directory find it.
    let certificate_authority = match certificate_authority {
        Some(ca) => Some(std::fs::canonicalize(&ca).map_err(|e| {
            Failure::Message(format!(
                "cannot read the certificate authority {}: {e}",
                ca.display()
            ))
        })?),
        None => None,
    };
    let login = Login {
        target: Some(args.target.trim_end_matches('/').to_string()),
        token,
        certificate_authority,
        namespace: args.default_namespace,
    };
    let path = login
        .save()
        .map_err(|e| Failure::Message(format!("cannot store the login: {e}")))?;
    println!(
        "Logged in to {} (stored in {})",
        login.target.as_deref().unwrap_or_default(),
        path.display()
    );
    Ok(())
}

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

/// Stores `--target` and the global `--token` (given by the controller's administrator).
pub(crate) async fn run(args: LoginArgs, token: Option<String>) -> CmdResult {
    if !(args.target.starts_with("http://") || args.target.starts_with("https://")) {
        return Err(Failure::Message(format!(
            "--target must be a URL such as http://127.0.0.1:56785, not `{}`",
            args.target
        )));
    }
    let login = Login {
        target: Some(args.target.trim_end_matches('/').to_string()),
        token,
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

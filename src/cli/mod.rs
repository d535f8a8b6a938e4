//! The `ms` command line: `ms controller` runs the controller, every other command is a client.
//!
//! One file per command family (`apply_cmd`, `get`, `describe`, `change`, `login`), one enum
//! variant and one match arm each. Errors reach the user as one line `error: ...` on stderr and
//! exit code 1; manifest errors print one line each, `file:line:col: field: message`.

mod apply_cmd;
mod autoscale_cmd;
mod change;
mod describe;
mod get;
mod gitops_cmd;
mod login;
pub mod table;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::client::{Client, ClientError, Login, DEFAULT_SERVER};

const AFTER_HELP: &str = "\
Server and token of the client commands:
  --server, else the target stored by `ms login`, else $MS_SERVER, else http://127.0.0.1:56785
  --token, else $MS_TOKEN, else the token stored by `ms login`

Output (stable; scripts should prefer `-o json`):
  ms get asgs            NAME STATE ZONES MIN MAX DESIRED CURRENT READY AGE
                         (wide adds LAUNCH-CONFIGURATION UP-TO-DATE)
  ms get lcs             NAME IMAGE INSTANCE-TYPE CPUS MEMORY AGE
  ms get policies        NAME GROUP TYPE METRIC RULE
  ms get instances       NAME GROUP ZONE STATE CONTAINER PORTS AGE
                         (wide adds UP-TO-DATE NAMESPACE CPU MEM)
  ms top instances       NAME GROUP ZONE CPU% MEMORY MEM%
  ms get instancetypes   NAME CPUS MEMORY(MiB)
  ms get problems        LOCATION (file:line:col) FIELD MESSAGE
  With -A a NAMESPACE column comes first. `-o yaml` prints manifests (apiVersion, kind,
  metadata, spec, status) that `ms apply` accepts back; `-o json` prints the API's items.
  ms apply/delete/scale/start/stop print `<kind>/<name> <action>` per object
  (`autoscalinggroup/web created`), warnings as `Warning: ...` on stderr.

Exit status: 0 on success, 1 on any error (one `error: ...` line on stderr); manifest errors
print one line each, `file:line:col: field: message`.

HTTP API of the controller (JSON; `Authorization: Bearer <token>` when tokens are configured):
  GET /healthz, GET /readyz, POST /v1/apply[?dryRun=true] (YAML body, header X-Ms-Filename),
  GET /v1/{asgs|lcs|policies}[?namespace=NS], GET /v1/{asgs|lcs|policies}/NS/NAME,
  GET /v1/instances[?namespace=NS&group=G], GET /v1/problems, GET /v1/instancetypes,
  DELETE /v1/{asg|lc|policy}/NS/NAME, POST /v1/asgs/NS/NAME/{scale|start|stop},
  POST /v1/metrics/NS/GROUP (JSON {name, value}), GET /v1/top[?namespace=NS&group=G],
  GET /lease (no token: this controller's lease holder id, for another controller to check).";

/// Autoscaling groups for Docker containers, declared in YAML manifests.
#[derive(Debug, Parser)]
#[command(name = "ms", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// URL of the controller (client commands).
    #[arg(long, global = true, value_name = "URL")]
    server: Option<String>,
    /// Bearer token (client commands).
    #[arg(long, global = true, env = "MS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of the CA that signed an https:// controller's certificate (client commands;
    /// stored by `ms login`).
    #[arg(
        long,
        global = true,
        env = "MS_CERTIFICATE_AUTHORITY",
        value_name = "FILE"
    )]
    certificate_authority: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller: watch the manifest directory, reconcile groups, serve the API.
    Controller(ControllerArgs),
    /// Store the controller URL and token for later commands (file mode 0600).
    Login(login::LoginArgs),
    /// Create or update objects from manifest files (FILE, DIR of *.yaml/*.yml, or - for stdin).
    Apply(apply_cmd::ApplyArgs),
    /// List objects: asgs, lcs, policies, instances, instancetypes, problems.
    Get(get::GetArgs),
    /// Show one autoscaling group in detail: source, conditions, instances, activities, errors.
    Describe(describe::DescribeArgs),
    /// Delete objects named in manifest files (-f), or one object by kind and name.
    Delete(change::DeleteArgs),
    /// Set the desired capacity of an autoscaling group (written into its manifest).
    Scale(change::ScaleArgs),
    /// Start an autoscaling group (state: Started in its manifest).
    Start(change::GroupArgs),
    /// Stop an autoscaling group: it keeps its definition and runs no instance (state: Stopped).
    Stop(change::GroupArgs),
    /// Push a metric value for a group (for policies with `pushedMetric`).
    PushMetric(autoscale_cmd::PushMetricArgs),
    /// Show CPU and memory of instances: `ms top instances [GROUP]`.
    Top(autoscale_cmd::TopArgs),
    /// Replay a CSV metric trace through policies and print the capacity timeline (local).
    Simulate(autoscale_cmd::SimulateArgs),
    /// Git checkouts as the watched directory: `ms gitops init DIR` hides status blocks from git.
    Gitops(gitops_cmd::GitopsArgs),
    /// Copy stdin to stdout without the status blocks of groups (git's clean filter; local).
    StripStatus,
}

/// Arguments of `ms controller`.
#[derive(Debug, Args)]
struct ControllerArgs {
    /// Manifest directory to watch (overrides the configuration file).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Listen address of the API (default 127.0.0.1:56785).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Configuration file (zones, tokens, periods).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Confirm in advance deletions that look like accidents: an emptied directory, a whole
    /// namespace or most groups gone at once (otherwise held until `ms delete` confirms them).
    #[arg(long)]
    allow_empty: bool,
    /// Create the manifest directory if it does not exist (otherwise that is an error).
    #[arg(long)]
    create_dir: bool,
    /// Listen beyond loopback without TLS (tokens still required): only on a trusted network.
    #[arg(long)]
    insecure_listen: bool,
    /// Wait as a standby while another controller holds the engines' leases, serving reads,
    /// and take over when it dies (same configuration on both).
    #[arg(long)]
    standby: bool,
}

/// Output format of `ms get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum Output {
    #[default]
    Table,
    Wide,
    Yaml,
    Json,
}

/// Namespace selection shared by client commands.
#[derive(Debug, Clone, Args)]
pub(crate) struct NamespaceArgs {
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

/// Server and token resolved from flags, environment and the stored login.
pub(crate) fn client(cli_server: Option<&str>, cli_token: Option<&str>) -> Client {
    let stored = Login::load();
    let server = cli_server
        .map(str::to_string)
        .or(stored.target.clone())
        .or_else(|| std::env::var("MS_SERVER").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let token = cli_token.map(str::to_string).or(stored.token);
    let client = Client::new(&server, token);
    match CERTIFICATE_AUTHORITY
        .get()
        .cloned()
        .flatten()
        .or(stored.certificate_authority)
    {
        None => client,
        Some(ca) => client.with_certificate_authority(&ca).unwrap_or_else(|e| {
            // Every client command starts here; a CA that cannot be read is the whole answer.
            eprintln!("error: {e}");
            std::process::exit(1)
        }),
    }
}

/// `--certificate-authority` (or `$MS_CERTIFICATE_AUTHORITY`), set once at start.
static CERTIFICATE_AUTHORITY: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

/// A failure of a command, already worded for the user.
#[derive(Debug)]
pub(crate) enum Failure {
    /// One line.
    Message(String),
    /// Manifest errors (one line each), then a summary line (`error: <summary>`).
    Manifest {
        errors: Vec<crate::manifest::ManifestError>,
        summary: String,
    },
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Api { errors, .. } if !errors.is_empty() => {
                let summary = manifest_summary(&errors, "nothing was applied");
                Failure::Manifest { errors, summary }
            }
            other => Failure::Message(other.to_string()),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Message(format!("{e:#}"))
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Message(e.to_string())
    }
}

pub(crate) type CmdResult = Result<(), Failure>;

/// `web.yaml: 2 errors, nothing was applied`.
pub(crate) fn manifest_summary(
    errors: &[crate::manifest::ManifestError],
    consequence: &str,
) -> String {
    let n = errors.len();
    let file = errors
        .first()
        .map(|e| e.file.display().to_string())
        .unwrap_or_default();
    format!(
        "{file}: {n} error{}, {consequence}",
        if n == 1 { "" } else { "s" }
    )
}

/// Prints a failure to stderr.
pub(crate) fn report(f: &Failure) {
    match f {
        Failure::Message(m) => eprintln!("error: {m}"),
        Failure::Manifest { errors, summary } => {
            for e in errors {
                eprintln!("{e}");
            }
            eprintln!("error: {summary}");
        }
    }
}

/// Entry point of the `ms` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::util::crypto::install_provider();
    let _ = CERTIFICATE_AUTHORITY.set(cli.certificate_authority.clone());
    let result = match cli.command {
        Command::Controller(args) => run_controller(args),
        Command::Simulate(args) => autoscale_cmd::simulate(args),
        Command::Gitops(args) => gitops_cmd::run(args),
        Command::StripStatus => gitops_cmd::strip_status(),
        command => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let server = cli.server.as_deref();
            let token = cli.token.as_deref();
            runtime.block_on(async move {
                match command {
                    Command::Controller(_)
                    | Command::Simulate(_)
                    | Command::Gitops(_)
                    | Command::StripStatus => {
                        unreachable!("handled above")
                    }
                    Command::Login(a) => {
                        login::run(
                            a,
                            token.map(str::to_string),
                            cli.certificate_authority.clone(),
                        )
                        .await
                    }
                    Command::Apply(a) => apply_cmd::run(client(server, token), a).await,
                    Command::Get(a) => get::run(client(server, token), a).await,
                    Command::Describe(a) => describe::run(client(server, token), a).await,
                    Command::Delete(a) => change::delete(client(server, token), a).await,
                    Command::Scale(a) => change::scale(client(server, token), a).await,
                    Command::Start(a) => change::start_stop(client(server, token), a, true).await,
                    Command::Stop(a) => change::start_stop(client(server, token), a, false).await,
                    Command::PushMetric(a) => {
                        autoscale_cmd::push_metric(client(server, token), a).await
                    }
                    Command::Top(a) => autoscale_cmd::top(client(server, token), a).await,
                }
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            report(&f);
            ExitCode::FAILURE
        }
    }
}

fn run_controller(args: ControllerArgs) -> CmdResult {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(crate::controller::run(crate::controller::RunOptions {
        config: args.config,
        dir: args.dir,
        listen: args.listen,
        allow_empty: args.allow_empty,
        create_dir: args.create_dir,
        insecure_listen: args.insecure_listen,
        standby: args.standby,
    }));
    // Whatever is still running (a directory load, a git command) is not waited for: the status
    // is flushed, containers keep running, and SIGTERM must end the process promptly.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn get_accepts_kubectl_style_flags() {
        let cli = Cli::try_parse_from(["ms", "get", "asgs", "-A", "-o", "wide"]).unwrap();
        match cli.command {
            Command::Get(g) => {
                assert!(g.all_namespaces);
                assert_eq!(g.output, Output::Wide);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn namespace_and_all_namespaces_conflict() {
        assert!(Cli::try_parse_from(["ms", "get", "asgs", "-A", "-n", "x"]).is_err());
    }
}

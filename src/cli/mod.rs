//! The `ms` command line: `ms controller` runs the controller, every other command is a client.
//!
//! One file per command family (`apply_cmd`, `get`, `describe`, `change`, `login`), one enum
//! variant and one match arm each. Errors reach the user as one line `error: ...` on stderr and
//! exit code 1; manifest errors print one line each, `file:line:col: field: message`.

mod apply_cmd;
mod autoscale_cmd;
mod change;
mod completion;
mod describe;
mod diff;
#[cfg(unix)]
mod exec_attach;
mod get;
mod gitops_cmd;
mod jsonpath;
mod lb_view;
mod login;
mod logs;
mod progress;
mod selector;
pub mod table;
#[cfg(unix)]
mod terminal;
mod validate;
mod wait;
mod watch_cmd;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::client::{Client, ClientError, Login, DEFAULT_SERVER};

const AFTER_HELP: &str = "\
Server and token of the client commands:
  --server, else the target stored by `ms login`, else $MS_SERVER, else http://127.0.0.1:56785
  --token, else $MS_TOKEN, else the token stored by `ms login`

Output (stable; scripts should prefer `-o json`):
  ms get asgs            NAME STATE ZONES MIN MAX DESIRED CURRENT READY AGE
                         (wide adds LAUNCH-CONFIGURATION UP-TO-DATE URL)
  ms get lcs             NAME IMAGE INSTANCE-TYPE CPUS MEMORY AGE
  ms get policies        NAME GROUP TYPE METRIC RULE
  ms get lbs             NAME URL TARGET GROUPS MEMBERS READY AGE
  ms get instances       NAME GROUP ZONE STATE CONTAINER PORTS AGE
                         (wide adds UP-TO-DATE NAMESPACE CPU MEM IMAGE-ID)
  ms top instances       NAME GROUP ZONE CPU% MEMORY MEM%
  ms get instancetypes   NAME CPUS MEMORY(MiB)
  ms get problems        LOCATION (file:line:col) FIELD MESSAGE
  With -A a NAMESPACE column comes first. `-o yaml` prints manifests (apiVersion, kind,
  metadata, spec, status) that `ms apply` accepts back; `-o json` prints a list object
  {kind: List, items: [...]} (one object when a name is given); `-o name` prints
  `kind/name` lines; `-o jsonpath=TEMPLATE` kubectl's JSONPath ({.items[*].metadata.name},
  {range .items[*]}...{end}); --no-headers drops the header; -l app=web selects by labels;
  -w prints a line per change after the table. Objects may be named kind/name (asg/web).
  ms apply/delete/scale/start/stop print `<kind>/<name> <action>` per object
  (`autoscalinggroup/web created`), warnings as `Warning: ...` on stderr.

Exit status: 0 on success; 1 on any error (one `error: ...` line on stderr; manifest errors
print one line each, `file:line:col: field: message`); 2 on a usage error (unknown flag or
command, a bad value). `ms diff`: 1 means differences, 2 an error. `ms exec`: the command's.

Namespace of client commands: -n, else $MS_NAMESPACE, else the one stored by
`ms login --namespace`, else `default`.

HTTP API of the controller (JSON; `Authorization: Bearer <token>` when tokens are configured):
  GET /healthz, GET /readyz, POST /v1/apply[?dryRun=true] (YAML body, header X-Ms-Filename),
  GET /v1/{asgs|lcs|policies|lbs}[?namespace=NS], GET /v1/{asgs|lcs|policies|lbs}/NS/NAME,
  GET /v1/instances[?namespace=NS&group=G], GET /v1/problems, GET /v1/instancetypes,
  DELETE /v1/{asg|lc|policy|lb}/NS/NAME, POST /v1/asgs/NS/NAME/{scale|start|stop},
  POST /v1/metrics/NS/GROUP (JSON {name, value}), GET /v1/top[?namespace=NS&group=G],
  GET /v1/watch[?kind=asgs,instances&namespace=NS] (JSON lines: the state, SYNCED, changes),
  GET /v1/logs/NS/INSTANCE and /v1/logs/NS/asg/GROUP [?follow=true&since=SECS&tail=N],
  POST /v1/exec/NS/INSTANCE (JSON {command: [...]}; JSON lines of output, then {exitCode}),
  POST /v1/exec/NS/INSTANCE/attach?command=JSON[&tty=true&rows=R&cols=C] (Upgrade:
    microscaler-exec; then frames both ways: input, resizes / output, exit status),
  GET /metrics (Prometheus/OpenMetrics text, no token),
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
    #[command(
        after_help = "Examples:\n  ms controller --dir /srv/manifests\n  MS_DIR=/srv/manifests MS_CONFIG=/etc/microscaler/config.yaml ms controller --log-format json\n  ms controller --dir ./manifests --create-dir --listen 127.0.0.1:56785"
    )]
    Controller(ControllerArgs),
    /// Store the controller URL and token for later commands (file mode 0600).
    #[command(
        after_help = "Examples:\n  ms login --target http://10.0.0.5:56785 --token \"$(cat ~/.ms-token)\"\n  ms login --target http://127.0.0.1:56785 --namespace shop"
    )]
    Login(login::LoginArgs),
    /// Create or update objects from manifest files (FILE, DIR of *.yaml/*.yml, or - for stdin).
    #[command(
        after_help = "Examples:\n  ms apply -f manifests/examples/launch-configuration.yaml -f manifests/examples/autoscaling-group.yaml\n  ms apply -f manifests/ --dry-run\n  ms apply -f manifests/ --wait --timeout 5m     # until Ready; exit 1 at once on Degraded\n  cat web.yaml | ms apply -f -"
    )]
    Apply(apply_cmd::ApplyArgs),
    /// List objects: asgs, lcs, policies, instances, instancetypes, problems.
    Get(get::GetArgs),
    /// Check manifest files offline, as the controller would load them (for CI; no controller).
    Validate(validate::ValidateArgs),
    /// Show what applying files would change, field by field, and what the controller would do.
    Diff(diff::DiffArgs),
    /// Wait until groups are Ready (converged), Degraded, or deleted.
    Wait(wait::WaitArgs),
    /// Print the output of an instance, or of every instance of a group (asg/NAME).
    Logs(logs::LogsArgs),
    /// Run a command in an instance, on its zone's engine.
    Exec(logs::ExecArgs),
    /// Print a shell completion script: `ms completion bash|zsh|fish`.
    Completion(completion::CompletionArgs),
    /// Write man pages (one per subcommand) into a directory, or print `ms.1` to stdout.
    Man(completion::ManArgs),
    /// Show one autoscaling group in detail: source, conditions, instances, activities, errors.
    Describe(describe::DescribeArgs),
    /// Delete objects named in manifest files (-f), or one object by kind and name.
    #[command(
        after_help = "Examples:\n  ms delete asg web\n  ms delete -f web.yaml\n  ms delete lc web -n shop"
    )]
    Delete(change::DeleteArgs),
    /// Set the desired capacity of an autoscaling group (written into its manifest).
    #[command(
        after_help = "Examples:\n  ms scale asg web --desired 3\n  ms scale asg web --desired 0 -n shop"
    )]
    Scale(change::ScaleArgs),
    /// Start an autoscaling group (state: Started in its manifest).
    #[command(after_help = "Examples:\n  ms start asg web")]
    Start(change::GroupArgs),
    /// Stop an autoscaling group: it keeps its definition and runs no instance (state: Stopped).
    #[command(
        after_help = "Examples:\n  ms stop asg web\n  ms stop asg web -n shop && ms wait asg/web -n shop --for=condition=Ready"
    )]
    Stop(change::GroupArgs),
    /// Push a metric value for a group (for policies with `pushedMetric`).
    #[command(
        after_help = "Examples:\n  ms push-metric workers queue_depth 1000\n  ms push-metric workers queue_depth 0 -n shop"
    )]
    PushMetric(autoscale_cmd::PushMetricArgs),
    /// Show CPU and memory of instances: `ms top instances [GROUP]`.
    #[command(after_help = "Examples:\n  ms top instances\n  ms top instances web -n shop")]
    Top(autoscale_cmd::TopArgs),
    /// Replay a CSV metric trace through policies and print the capacity timeline (local).
    #[command(
        after_help = "Examples:\n  ms simulate -f manifests/examples/target-tracking-policy.yaml --metrics manifests/examples/cpu-trace.csv\n  ms simulate -f policy.yaml --metrics trace.csv --group-file web-group.yaml --all"
    )]
    Simulate(autoscale_cmd::SimulateArgs),
    /// Git checkouts as the watched directory: `ms gitops init DIR` hides status blocks from git.
    #[command(after_help = "Examples:\n  ms gitops init /srv/checkout/manifests")]
    Gitops(gitops_cmd::GitopsArgs),
    /// Copy stdin to stdout without the status blocks of groups (git's clean filter; local).
    #[command(after_help = "Examples:\n  ms strip-status < web.yaml > web.clean.yaml")]
    StripStatus,
}

/// Arguments of `ms controller`.
#[derive(Debug, Args)]
struct ControllerArgs {
    /// Manifest directory to watch (overrides the configuration file).
    #[arg(long, value_name = "DIR", env = "MS_DIR")]
    dir: Option<PathBuf>,
    /// Listen address of the API (default 127.0.0.1:56785).
    #[arg(long, value_name = "ADDR", env = "MS_LISTEN")]
    listen: Option<SocketAddr>,
    /// Configuration file (zones, tokens, periods).
    #[arg(long, value_name = "FILE", env = "MS_CONFIG")]
    config: Option<PathBuf>,
    /// Log lines as text or as JSON objects (one per line, for log shippers).
    #[arg(long, value_enum, default_value = "text", env = "MS_LOG_FORMAT")]
    log_format: LogFormat,
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

/// `--log-format` of the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines; coloured only when stderr is a terminal (and NO_COLOR is unset).
    Text,
    /// One JSON object per line.
    Json,
}

/// Output format of `ms get`.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) enum Output {
    #[default]
    Table,
    Wide,
    Yaml,
    Json,
    /// `kind/name` per line.
    Name,
    /// `jsonpath=TEMPLATE` (kubectl's JSONPath subset, see `cli::jsonpath`).
    JsonPath(jsonpath::Template),
}

/// Parses `-o`: table, wide, yaml, json, name, jsonpath=TEMPLATE.
pub(crate) fn parse_output(s: &str) -> Result<Output, String> {
    if let Some(t) = s.strip_prefix("jsonpath=") {
        return jsonpath::Template::parse(t).map(Output::JsonPath);
    }
    match s {
        "table" => Ok(Output::Table),
        "wide" => Ok(Output::Wide),
        "yaml" => Ok(Output::Yaml),
        "json" => Ok(Output::Json),
        "name" => Ok(Output::Name),
        _ => Err(format!(
            "`{s}`: use table, wide, yaml, json, name or jsonpath=TEMPLATE"
        )),
    }
}

/// Namespace selection shared by client commands.
#[derive(Debug, Clone, Args)]
pub(crate) struct NamespaceArgs {
    /// Namespace (default: $MS_NAMESPACE, else the one stored by `ms login`, else `default`).
    #[arg(short = 'n', long, env = "MS_NAMESPACE", default_value = "default")]
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
    /// One line, and this exit status instead of 1 (2: usage, as clap's own usage errors).
    Code(u8, String),
    /// Nothing more to print (the command said it all); this exit status (`ms diff`: 1).
    Quiet(u8),
}

impl Failure {
    /// The exit status of this failure.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Failure::Code(c, _) | Failure::Quiet(c) => *c,
            _ => 1,
        }
    }
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
        Failure::Message(m) | Failure::Code(_, m) => eprintln!("error: {m}"),
        Failure::Quiet(_) => {}
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
    // The namespace stored by `ms login` is the default of every `-n` (through the variable
    // clap reads), below an explicit MS_NAMESPACE.
    if std::env::var_os("MS_NAMESPACE").is_none() {
        if let Some(ns) = Login::load().namespace.filter(|n| !n.is_empty()) {
            std::env::set_var("MS_NAMESPACE", ns);
        }
    }
    let cli = Cli::parse();
    crate::util::crypto::install_provider();
    let _ = CERTIFICATE_AUTHORITY.set(cli.certificate_authority.clone());
    let result = match cli.command {
        Command::Controller(args) => run_controller(args),
        Command::Simulate(args) => autoscale_cmd::simulate(args),
        Command::Gitops(args) => gitops_cmd::run(args),
        Command::StripStatus => gitops_cmd::strip_status(),
        Command::Validate(args) => validate::run(args),
        Command::Completion(args) => completion::completion(args),
        Command::Man(args) => completion::man(args),
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
                    | Command::StripStatus
                    | Command::Validate(_)
                    | Command::Completion(_)
                    | Command::Man(_) => {
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
                    Command::Diff(a) => diff::run(client(server, token), a).await,
                    Command::Wait(a) => wait::run(client(server, token), a).await,
                    Command::Logs(a) => logs::logs(client(server, token), a).await,
                    Command::Exec(a) => logs::exec(client(server, token), a).await,
                }
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            report(&f);
            ExitCode::from(f.exit_code())
        }
    }
}

fn run_controller(args: ControllerArgs) -> CmdResult {
    use std::io::IsTerminal;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    // Colour codes only for a person at a terminal: never in a redirected log file or journal.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_ansi(colour)
            .with_writer(std::io::stderr)
            .try_init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .try_init(),
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "microscaler controller starting"
    );
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
    fn namespace_and_all_namespaces_conflict_only_when_both_are_typed() {
        let argv = |a: &[&str]| {
            a.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .into_iter()
        };
        assert!(get::namespace_on_command_line(argv(&[
            "ms", "get", "asgs", "-A", "-n", "x"
        ])));
        assert!(get::namespace_on_command_line(argv(&[
            "ms", "get", "asgs", "-nx", "-A"
        ])));
        assert!(get::namespace_on_command_line(argv(&[
            "ms",
            "get",
            "-A",
            "--namespace=x"
        ])));
        assert!(!get::namespace_on_command_line(argv(&[
            "ms", "get", "asgs", "-A"
        ])));
    }

    #[test]
    fn output_formats_parse_kubectl_style() {
        assert_eq!(parse_output("name").unwrap(), Output::Name);
        assert!(matches!(
            parse_output("jsonpath={.items[*].metadata.name}").unwrap(),
            Output::JsonPath(_)
        ));
        assert!(parse_output("go-template={{.x}}").is_err());
    }

    #[test]
    fn usage_errors_exit_2_and_failures_exit_1() {
        let e = Cli::try_parse_from(["ms", "get"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(Failure::Message("x".into()).exit_code(), 1);
        assert_eq!(Failure::Code(2, "x".into()).exit_code(), 2);
    }
}

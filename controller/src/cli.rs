//! The `vigie` command line.

use std::{io::Write, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{api, manifest};

/// Keeps every environment on a commit that CI has validated.
#[derive(Debug, Parser)]
#[command(name = "vigie", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the CustomResourceDefinitions of Environment, CodeLocation and Release as YAML.
    Crds {
        /// Write one file per CRD into this directory instead of printing them.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Check manifests (files or directories of YAML) and report every problem.
    Validate {
        /// Files or directories; directories are walked for .yaml and .yml files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run on a VM with Docker: reconcile the manifests, record status in the state file.
    Run(RunArgs),
    /// Run as the Kubernetes operator: reconcile Environment, CodeLocation and Release
    /// resources, record status in the API.
    Controller(ControllerArgs),
    /// Talk to CI: `vigie ci report` posts a signed verdict to a running Vigie.
    Ci {
        /// What to do.
        #[command(subcommand)]
        command: CiCommand,
    },
    /// Show what happened to a code location in an environment: deployed, validated,
    /// rolled back, approved, overridden; who and why.
    History {
        /// The CodeLocation.
        location: String,
        /// The Environment.
        #[arg(long)]
        env: String,
        /// The state file written by `vigie run`.
        #[arg(long, env = "VIGIE_STATE", default_value = "vigie-state.json")]
        state: PathBuf,
        /// Read the Release from Kubernetes (the current kubeconfig) instead.
        #[arg(long)]
        kubernetes: bool,
        /// Namespace of the Release, with --kubernetes.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Promote a SHA validated upstream (`promotion.from`) to an environment: shows
    /// both sides and the commits brought in, asks to type DEPLOY, and records the
    /// approval (who, when, why) on the Release.
    Promote(PromoteArgs),
    /// Roll an environment back to a SHA validated there before (default: the previous
    /// one): what runs is quarantined, on the record. Deploy windows do not apply.
    Rollback(RollbackArgs),
    /// Show environments × code locations from the state file.
    Status {
        /// The state file written by `vigie run`.
        #[arg(long, env = "VIGIE_STATE", default_value = "vigie-state.json")]
        state: PathBuf,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

/// Where `vigie promote` and `vigie rollback` find the running Vigie.
#[derive(Debug, clap::Args)]
pub struct DeskArgs {
    /// The state file of `vigie run`; its control socket is `vigie.sock` beside it.
    #[arg(long, env = "VIGIE_STATE", default_value = "vigie-state.json")]
    pub state: PathBuf,
    /// The control socket of `vigie run`, when not beside the state file.
    #[arg(long, env = "VIGIE_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Act on the operator's Releases (the current kubeconfig) instead.
    #[arg(long)]
    pub kubernetes: bool,
    /// Namespace of the Releases, with --kubernetes.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

/// Options of `vigie promote`.
#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// The CodeLocation.
    pub location: String,
    /// The Environment promoted to; the SHA comes from its `promotion.from`.
    #[arg(long)]
    pub to: String,
    /// The SHA (default: the one validated upstream).
    #[arg(long)]
    pub sha: Option<crate::api::Sha>,
    /// Why, recorded with the approval.
    #[arg(long)]
    pub reason: Option<String>,
    /// Deploy outside the deploy windows anyway, for this reason (on the record).
    #[arg(long, value_name = "REASON")]
    pub break_glass: Option<String>,
    /// Do not ask to type DEPLOY.
    #[arg(long)]
    pub yes: bool,
    /// Where the running Vigie is.
    #[command(flatten)]
    pub desk: DeskArgs,
}

/// Options of `vigie rollback`.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The CodeLocation.
    pub location: String,
    /// The Environment.
    #[arg(long)]
    pub env: String,
    /// The SHA to go back to (default: the previous validated one).
    #[arg(long)]
    pub to: Option<crate::api::Sha>,
    /// Why, recorded with the rollback.
    #[arg(long)]
    pub reason: Option<String>,
    /// Do not ask to type ROLLBACK.
    #[arg(long)]
    pub yes: bool,
    /// Where the running Vigie is.
    #[command(flatten)]
    pub desk: DeskArgs,
}

/// `vigie ci` subcommands.
#[derive(Debug, Subcommand)]
pub enum CiCommand {
    /// Post a signed verdict for a SHA to /hooks/ci (for CI systems without an API).
    Report(ReportArgs),
}

/// Options of `vigie ci report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The CodeLocation judged.
    #[arg(long)]
    pub location: String,
    /// The full commit SHA judged.
    #[arg(long)]
    pub sha: crate::api::Sha,
    /// The verdict.
    #[arg(long, value_enum)]
    pub state: ReportStateArg,
    /// Link to the CI run.
    #[arg(long)]
    pub url: Option<String>,
    /// A failing check's name (repeatable).
    #[arg(long = "failed-check")]
    pub failed_checks: Vec<String>,
    /// A few words.
    #[arg(long)]
    pub description: Option<String>,
    /// Base URL of the running Vigie.
    #[arg(long, env = "VIGIE_ENDPOINT", default_value = "http://127.0.0.1:8080")]
    pub endpoint: String,
    /// File holding the HMAC key (else VIGIE_WEBHOOK_SECRET).
    #[arg(long)]
    pub webhook_secret_file: Option<PathBuf>,
}

/// Verdict states on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportStateArg {
    /// Running.
    Pending,
    /// Passed.
    Success,
    /// A check failed.
    Failure,
    /// CI could not tell.
    Error,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table for people.
    Table,
    /// A JSON array for programs.
    Json,
}

/// Bounds of the HTTP listener, the same in both modes.
#[derive(Debug, clap::Args)]
pub struct HttpArgs {
    /// Seconds a request's head may take to arrive (also how long an idle keep-alive
    /// connection stays open).
    #[arg(long, env = "VIGIE_HTTP_HEADER_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_header_timeout: u64,
    /// Seconds a request's body may take to arrive, counted from its head.
    #[arg(long, env = "VIGIE_HTTP_BODY_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_body_timeout: u64,
    /// HTTP connections open at once (lowered to fit the open-file limit).
    #[arg(long, env = "VIGIE_HTTP_MAX_CONNECTIONS", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub http_max_connections: u64,
    /// HTTP connections open at once from one peer address.
    #[arg(long, env = "VIGIE_HTTP_MAX_CONNECTIONS_PER_PEER", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub http_max_connections_per_peer: u64,
}

impl HttpArgs {
    /// The listener's bounds, fitted under this process's open-file limit (raised to
    /// its hard limit first).
    #[must_use]
    pub fn limits(&self) -> crate::http::listener::Limits {
        let open_files = crate::http::listener::raise_open_files();
        let limits = crate::http::listener::Limits {
            header_timeout: std::time::Duration::from_secs(self.http_header_timeout),
            body_timeout: std::time::Duration::from_secs(self.http_body_timeout),
            max_connections: usize::try_from(self.http_max_connections).unwrap_or(usize::MAX),
            max_per_peer: usize::try_from(self.http_max_connections_per_peer).unwrap_or(usize::MAX),
        };
        let fitted = limits.within_open_files(open_files);
        if fitted.max_connections < limits.max_connections {
            tracing::warn!(
                open_files,
                max_connections = fitted.max_connections,
                "the open-file limit lowers --http-max-connections"
            );
        }
        fitted
    }
}

/// The manifests repository's access and write-back, spelled the same in both modes
/// (the operator's former `--gitops-…` spellings stay as hidden aliases).
#[derive(Debug, clap::Args)]
pub struct GitArgs {
    /// Seconds between fetches of the manifests repository (a signed push webhook
    /// fetches at once).
    #[arg(long, alias = "gitops-interval", default_value_t = 60)]
    pub git_interval: u64,
    /// File holding the token for an HTTPS manifests repository.
    #[arg(long, alias = "gitops-token-file")]
    pub git_token_file: Option<PathBuf>,
    /// File holding the SSH private key for an SSH manifests repository.
    #[arg(long, alias = "gitops-ssh-key-file")]
    pub git_ssh_key_file: Option<PathBuf>,
    /// known_hosts file the SSH server's key must be listed in.
    #[arg(long, alias = "gitops-known-hosts-file")]
    pub git_known_hosts_file: Option<PathBuf>,
    /// What is committed back to the manifests repository instead of kept in the state
    /// (or set in the cluster): `tracking` (tracked updates), `rollbacks`, both
    /// (comma-separated) or `none`.
    #[arg(
        long,
        alias = "gitops-write-back",
        env = "VIGIE_WRITE_BACK",
        default_value = "none"
    )]
    pub write_back: String,
    /// Author and committer of write-back commits, `Name <email>`.
    #[arg(
        long,
        alias = "gitops-author",
        env = "VIGIE_GIT_AUTHOR",
        default_value = "Vigie <vigie@localhost>"
    )]
    pub git_author: String,
}

/// Options of `vigie run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Manifests: a directory (or file), reloaded when it changes; or a folder of a git
    /// branch, `URL#BRANCH:DIR` (e.g. `https://git.example/ops.git#main:vm`), fetched
    /// every --git-interval and at once on a signed push webhook.
    #[arg(long, env = "VIGIE_MANIFESTS")]
    pub manifests: String,
    /// The manifests repository's access and write-back.
    #[command(flatten)]
    pub git: GitArgs,
    /// Seconds between checks of the refs that CodeLocations' `track` rules follow.
    #[arg(long, default_value_t = 60)]
    pub track_interval: u64,
    /// State file, written atomically.
    #[arg(long, env = "VIGIE_STATE", default_value = "vigie-state.json")]
    pub state: PathBuf,
    /// Unix socket (mode 0660) for `vigie promote` and `vigie rollback`; default
    /// `vigie.sock` beside the state file.
    #[arg(long, env = "VIGIE_SOCKET")]
    pub control_socket: Option<PathBuf>,
    /// Address of /healthz, /readyz, /metrics and /hooks/*.
    #[arg(long, env = "VIGIE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Bounds of the HTTP listener.
    #[command(flatten)]
    pub http: HttpArgs,
    /// File holding the HMAC key of /hooks/ci (else VIGIE_WEBHOOK_SECRET).
    #[arg(long)]
    pub webhook_secret_file: Option<PathBuf>,
    /// Seconds between rounds when nothing happens (changes to the manifests and CI
    /// verdicts wake the reconciler at once).
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
    /// Seconds a Release may be missing from the manifests before its containers are removed.
    #[arg(long, default_value_t = 60)]
    pub removal_grace: u64,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Options of `vigie controller`.
#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// Address of /healthz, /readyz, /metrics and /hooks/*.
    #[arg(long, env = "VIGIE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
    /// Bounds of the HTTP listener.
    #[command(flatten)]
    pub http: HttpArgs,
    /// Watch this namespace only (default: all namespaces).
    #[arg(long, env = "VIGIE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Run the controllers only while holding the leader Lease (for several replicas).
    #[arg(long, env = "VIGIE_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "VIGIE_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, env = "VIGIE_LEASE_NAME", default_value = "vigie-controller")]
    pub lease_name: String,
    /// This replica's identity in the Lease (default: POD_NAME, else the host name and pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Kubernetes API requests per second (client side).
    #[arg(long, env = "VIGIE_KUBE_API_QPS", default_value_t = 20.0)]
    pub kube_api_qps: f64,
    /// Kubernetes API requests allowed in a burst above the QPS.
    #[arg(long, env = "VIGIE_KUBE_API_BURST", default_value_t = 30)]
    pub kube_api_burst: u32,
    /// Releases reconciled at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,
    /// File holding the HMAC key of /hooks/ci (else VIGIE_WEBHOOK_SECRET).
    #[arg(long)]
    pub webhook_secret_file: Option<PathBuf>,
    /// Instance id labelled on Docker containers (two operators sharing a Docker host
    /// must differ).
    #[arg(long, env = "VIGIE_INSTANCE", default_value = "operator")]
    pub instance: String,
    /// GitOps: apply the Environments, CodeLocations and Releases of this repository.
    #[arg(long, env = "VIGIE_GITOPS_REPO")]
    pub gitops_repo: Option<String>,
    /// GitOps: the branch followed.
    #[arg(long, env = "VIGIE_GITOPS_REF", default_value = "main")]
    pub gitops_ref: String,
    /// GitOps: the folder of the manifests in the repository.
    #[arg(long, env = "VIGIE_GITOPS_PATH", default_value = "")]
    pub gitops_path: String,
    /// GitOps: namespace of the objects that name none.
    #[arg(long, default_value = "default")]
    pub gitops_namespace: String,
    /// Where git repositories (the GitOps one, tracked code repositories) are mirrored.
    #[arg(long, alias = "git-cache", default_value = "/tmp/vigie-gitops")]
    pub gitops_cache: PathBuf,
    /// The manifests repository's access and write-back.
    #[command(flatten)]
    pub git: GitArgs,
    /// Seconds between checks of the refs that CodeLocations' `track` rules follow.
    #[arg(long, default_value_t = 60)]
    pub track_interval: u64,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// Reads the credential files of a git remote.
fn git_credentials(
    token: Option<&PathBuf>,
    ssh_key: Option<&PathBuf>,
    known_hosts: Option<&PathBuf>,
) -> Result<crate::gitops::repo::Credentials, String> {
    let read = |file: Option<&PathBuf>, what: &str| -> Result<Option<String>, String> {
        file.map(|f| {
            std::fs::read_to_string(f)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|e| format!("cannot read the {what} file {}: {}", f.display(), e.kind()))
        })
        .transpose()
    };
    Ok(crate::gitops::repo::Credentials {
        token: read(token, "git token")?,
        // A key file keeps its final newline: OpenSSH wants it.
        ssh_key: read(ssh_key, "SSH key")?.map(|k| k + "\n"),
        known_hosts: read(known_hosts, "known_hosts")?,
    })
}

/// Log formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Runs the command line; returns the process exit code.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { dir } => crds(dir.as_deref()),
        Command::Validate { paths } => validate(&paths),
        Command::Run(args) => run(args),
        Command::Controller(args) => controller(args),
        Command::Status { state, output } => status(&state, output),
        Command::History {
            location,
            env,
            state,
            kubernetes,
            namespace,
            output,
        } => history(
            &location,
            &env,
            &state,
            kubernetes.then_some(namespace),
            output,
        ),
        Command::Ci {
            command: CiCommand::Report(args),
        } => ci_report(args),
        Command::Promote(args) => act(
            crate::promote::Kind::Promote,
            &crate::promote::Ask {
                location: args.location,
                environment: args.to,
                sha: args.sha,
                reason: args.reason,
                break_glass: args.break_glass,
            },
            args.yes,
            &args.desk,
        ),
        Command::Rollback(args) => act(
            crate::promote::Kind::Rollback,
            &crate::promote::Ask {
                location: args.location,
                environment: args.env,
                sha: args.to,
                reason: args.reason,
                break_glass: None,
            },
            args.yes,
            &args.desk,
        ),
    }
}

/// `vigie promote` and `vigie rollback`: plan, show, confirm, record.
fn act(
    kind: crate::promote::Kind,
    ask: &crate::promote::Ask,
    yes: bool,
    desk: &DeskArgs,
) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(act_async(kind, ask, yes, desk)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn act_async(
    kind: crate::promote::Kind,
    ask: &crate::promote::Ask,
    yes: bool,
    args: &DeskArgs,
) -> Result<(), String> {
    use crate::promote::{Kind, client::Desk, kubernetes::Cluster};
    let desk = if args.kubernetes {
        Desk::Kubernetes(Cluster::connect(&args.namespace).await?)
    } else {
        Desk::Standalone(
            args.socket
                .clone()
                .unwrap_or_else(|| crate::standalone::control::default_socket(&args.state)),
        )
    };
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("vigie")
        .join("git");
    let plan = desk.plan(kind, ask, &cache).await?;
    print!("{}", crate::promote::render(&plan, kind == Kind::Rollback));
    let word = kind.confirm();
    if !yes {
        let what = match kind {
            Kind::Promote => "deploy",
            Kind::Rollback => "roll back to",
        };
        print!(
            "\nType {word} to {what} {} in {}: ",
            plan.sha.short(),
            plan.target.environment
        );
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if line.trim() != word {
            return Err(format!(
                "not confirmed (expected {word}); nothing was changed"
            ));
        }
    }
    let done = desk.apply(kind, ask).await?;
    let what = match kind {
        Kind::Promote => "approved",
        Kind::Rollback => "rollback asked",
    };
    println!(
        "{} {what} for {} by {} at {} ({}).",
        done.sha.short(),
        plan.target.environment,
        done.by,
        done.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        done.release
    );
    match (&plan.window_closed, &ask.break_glass, kind) {
        (Some(w), None, Kind::Promote) => {
            println!("It deploys when the windows open: {w}.");
        }
        (Some(_), Some(_), Kind::Promote) => {
            println!("Break-glass: it deploys now, outside the windows, on the record.");
        }
        _ => {}
    }
    println!(
        "Follow it with: vigie history {} --env {}",
        plan.location, plan.target.environment
    );
    Ok(())
}

fn history(
    location: &str,
    env: &str,
    state: &std::path::Path,
    namespace: Option<String>,
    output: Output,
) -> ExitCode {
    let entries = match namespace {
        None => crate::history::from_state(state, location, env),
        Some(ns) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(crate::history::from_kubernetes(&ns, location, env)),
            Err(e) => Err(e.to_string()),
        },
    };
    match entries {
        Ok(entries) => {
            match output {
                Output::Table => print!("{}", crate::history::table(&entries)),
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&entries).unwrap_or_default()
                ),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vigie: {e}");
            ExitCode::FAILURE
        }
    }
}

fn crds(dir: Option<&std::path::Path>) -> ExitCode {
    let files = match api::crd_files() {
        Ok(files) => files,
        Err(e) => {
            eprintln!("vigie: failed to render the CRDs: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(dir) = dir else {
        let yaml: String = files.into_iter().map(|(_, yaml)| yaml).collect();
        return match std::io::stdout().lock().write_all(yaml.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    };
    for (name, yaml) in files {
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, yaml) {
            eprintln!("vigie: failed to write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn validate(paths: &[PathBuf]) -> ExitCode {
    let report = manifest::load_paths(paths);
    if report.problems.is_empty() {
        if report.files.is_empty() {
            eprintln!(
                "vigie: no .yaml or .yml file under {}",
                display_paths(paths)
            );
            return ExitCode::FAILURE;
        }
        println!("{}", report.manifests.summary(report.files.len()));
        ExitCode::SUCCESS
    } else {
        let n = report.problems.len();
        for problem in &report.problems {
            println!("{problem}");
        }
        eprintln!("{n} problem{} found", if n == 1 { "" } else { "s" });
        ExitCode::FAILURE
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn webhook_secret(file: Option<&std::path::Path>) -> Result<Option<Vec<u8>>, String> {
    let raw = match file {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the webhook secret file {}: {e}",
                path.display()
            )
        })?),
        None => std::env::var("VIGIE_WEBHOOK_SECRET").ok(),
    };
    Ok(raw
        .map(|s| s.trim_end_matches(['\n', '\r']).as_bytes().to_vec())
        .filter(|s| !s.is_empty()))
}

/// The GitOps options of `vigie controller`, when `--gitops-repo` is given.
fn gitops_options(
    args: &ControllerArgs,
) -> Result<Option<crate::operator::gitops::Options>, String> {
    let Some(repo) = args.gitops_repo.as_deref() else {
        if args.git.write_back.trim() != "none" {
            return Err("--write-back needs --gitops-repo".into());
        }
        return Ok(None);
    };
    let spec = format!("{repo}#{}:{}", args.gitops_ref, args.gitops_path);
    let source = match crate::gitops::source::parse(&spec) {
        Ok(crate::gitops::source::Source::Git(g)) => g,
        Ok(crate::gitops::source::Source::Path(_)) => {
            return Err(format!("--gitops-repo {repo:?} is not a git URL"));
        }
        Err(e) => return Err(format!("--gitops-repo {e}")),
    };
    let credentials = git_credentials(
        args.git.git_token_file.as_ref(),
        args.git.git_ssh_key_file.as_ref(),
        args.git.git_known_hosts_file.as_ref(),
    )?;
    let write_back = crate::gitops::writeback::Scope::parse(&args.git.write_back)
        .map_err(|e| format!("--{e}"))?;
    let author = crate::gitops::writeback::Author::parse(&args.git.git_author)
        .map_err(|e| format!("--git-author {e}"))?;
    Ok(Some(crate::operator::gitops::Options {
        source,
        interval: std::time::Duration::from_secs(args.git.git_interval.max(1)),
        credentials,
        cache: args.gitops_cache.clone(),
        default_namespace: args.gitops_namespace.clone(),
        write_back,
        author,
    }))
}

fn controller(args: ControllerArgs) -> ExitCode {
    init_logs(args.log_format);
    let secret = match webhook_secret(args.webhook_secret_file.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vigie: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !(args.kube_api_qps > 0.0 && args.kube_api_qps.is_finite()) {
        eprintln!("vigie: --kube-api-qps must be a positive number");
        return ExitCode::FAILURE;
    }
    let gitops = match gitops_options(&args) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("vigie: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pod_namespace =
        std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .ok()
            .or_else(|| std::env::var("POD_NAMESPACE").ok());
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_or_else(|_| "vigie".into(), |h| h.trim().to_owned());
        format!("{host}-{}", std::process::id())
    });
    let options = crate::operator::Options {
        gitops,
        track_interval: std::time::Duration::from_secs(args.track_interval.max(1)),
        git_cache: args.gitops_cache.clone(),
        listen: args.listen,
        http: args.http.limits(),
        namespace: args.namespace,
        leader_election: args.leader_elect,
        lease_namespace: args
            .lease_namespace
            .or(pod_namespace)
            .map_or_else(|| "default".into(), |n| n.trim().to_owned()),
        lease_name: args.lease_name,
        identity,
        qps: args.kube_api_qps,
        burst: args.kube_api_burst,
        webhook_secret: secret,
        concurrency: args.concurrency.max(1),
        instance: args.instance,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vigie: failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::operator::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "vigie controller stopped");
            eprintln!("vigie: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    init_logs(args.log_format);
    let secret = match webhook_secret(args.webhook_secret_file.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vigie: {e}");
            return ExitCode::FAILURE;
        }
    };
    if secret.is_none() {
        tracing::warn!(
            "no webhook secret (--webhook-secret-file or VIGIE_WEBHOOK_SECRET): /hooks/ci refuses every delivery"
        );
    }
    let Some(interval) = std::time::Duration::try_from_secs_f64(args.interval)
        .ok()
        .filter(|d| !d.is_zero() && d.as_secs() <= 3600)
    else {
        eprintln!("vigie: --interval must be a number of seconds above 0 and at most 3600");
        return ExitCode::FAILURE;
    };
    let manifests = match crate::gitops::source::parse(&args.manifests) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("vigie: --manifests {e}");
            return ExitCode::FAILURE;
        }
    };
    let git_credentials = match git_credentials(
        args.git.git_token_file.as_ref(),
        args.git.git_ssh_key_file.as_ref(),
        args.git.git_known_hosts_file.as_ref(),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vigie: {e}");
            return ExitCode::FAILURE;
        }
    };
    let write_back = match crate::gitops::writeback::Scope::parse(&args.git.write_back) {
        Ok(s) if s.any() && !matches!(manifests, crate::gitops::source::Source::Git(_)) => {
            eprintln!(
                "vigie: --write-back needs a git source of manifests (--manifests URL#BRANCH:DIR)"
            );
            return ExitCode::FAILURE;
        }
        Ok(s) => s,
        Err(e) => {
            eprintln!("vigie: --{e}");
            return ExitCode::FAILURE;
        }
    };
    let git_author = match crate::gitops::writeback::Author::parse(&args.git.git_author) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vigie: --git-author {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut git_cache = args.state.clone().into_os_string();
    git_cache.push(".git-cache");
    let options = crate::standalone::run::Options {
        manifests,
        git_interval: std::time::Duration::from_secs(args.git.git_interval.max(1)),
        track_interval: std::time::Duration::from_secs(args.track_interval.max(1)),
        git_cache: PathBuf::from(git_cache),
        git_credentials,
        control_socket: args
            .control_socket
            .unwrap_or_else(|| crate::standalone::control::default_socket(&args.state)),
        state: args.state,
        listen: args.listen,
        http: args.http.limits(),
        secret,
        interval,
        removal_grace: std::time::Duration::from_secs(args.removal_grace),
        write_back,
        git_author,
    };
    let Some(runtime) = runtime(tokio::runtime::Builder::new_multi_thread().worker_threads(2))
    else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(crate::standalone::run::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigie: {e}");
            ExitCode::FAILURE
        }
    }
}

fn status(path: &std::path::Path, output: Output) -> ExitCode {
    let state = match crate::standalone::state::load(path) {
        Ok(Some(state)) => state,
        Ok(None) => {
            eprintln!(
                "vigie: no state file at {} (is vigie run using another --state?)",
                path.display()
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("vigie: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rows = crate::standalone::status::rows(&state);
    let text = match output {
        Output::Table => {
            crate::standalone::status::table(&rows)
                + &crate::standalone::status::git_sync(state.git_sync.as_ref())
                + &crate::standalone::status::problems(&state.manifest_problems)
        }
        Output::Json => match serde_json::to_string_pretty(&rows) {
            Ok(json) => json + "\n",
            Err(e) => {
                eprintln!("vigie: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    if std::io::stdout().lock().write_all(text.as_bytes()).is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn ci_report(args: ReportArgs) -> ExitCode {
    use crate::ci::webhook::{self, Report, ReportState};
    let secret = match webhook_secret(args.webhook_secret_file.as_deref()) {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!(
                "vigie: no webhook secret: give --webhook-secret-file or set VIGIE_WEBHOOK_SECRET"
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("vigie: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = Report {
        code_location: args.location,
        sha: args.sha,
        state: match args.state {
            ReportStateArg::Pending => ReportState::Pending,
            ReportStateArg::Success => ReportState::Success,
            ReportStateArg::Failure => ReportState::Failure,
            ReportStateArg::Error => ReportState::Error,
        },
        url: args.url,
        failed_checks: args.failed_checks,
        description: args.description,
        timestamp: Some(jiff::Timestamp::now()),
    };
    let body = serde_json::to_vec(&report).expect("a report serializes");
    let signature = webhook::sign(&secret, &body);
    let url = format!("{}/hooks/ci", args.endpoint.trim_end_matches('/'));
    let Some(runtime) = runtime(&mut tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    let sent = runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(&url)
            .header(webhook::SIGNATURE_HEADER, signature)
            .header("content-type", "application/json")
            .body(body)
            .timeout(std::time::Duration::from_secs(30))
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        Ok::<_, reqwest::Error>((status, text))
    });
    match sent {
        Ok((status, text)) => {
            println!("{} {}", status.as_u16(), text.trim());
            if status.as_u16() == 202 || status.as_u16() == 409 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("vigie: failed to post to {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Builds a tokio runtime, saying why when it cannot.
fn runtime(builder: &mut tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .map_err(|e| eprintln!("vigie: failed to start the runtime: {e}"))
        .ok()
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::{Cli, Command, GitArgs};

    fn git_args(command: Command) -> GitArgs {
        match command {
            Command::Run(a) => a.git,
            Command::Controller(a) => a.git,
            _ => panic!("not run or controller"),
        }
    }

    /// Both modes spell the manifests repository's options the same; the operator's
    /// former spellings are still taken.
    #[test]
    fn the_git_options_have_one_spelling_in_both_modes() {
        let new = [
            "--git-token-file=/t",
            "--git-ssh-key-file=/k",
            "--git-known-hosts-file=/h",
            "--write-back=tracking",
            "--git-author=Bot <b@example.com>",
            "--git-interval=7",
        ];
        let old = [
            "--gitops-token-file=/t",
            "--gitops-ssh-key-file=/k",
            "--gitops-known-hosts-file=/h",
            "--gitops-write-back=tracking",
            "--gitops-author=Bot <b@example.com>",
            "--gitops-interval=7",
        ];
        let parse = |mode: &str, flags: &[&str]| {
            let mut argv = vec!["vigie", mode];
            if mode == "run" {
                argv.push("--manifests=/m");
            }
            argv.extend_from_slice(flags);
            format!("{:?}", git_args(Cli::try_parse_from(argv).unwrap().command))
        };
        let run = parse("run", &new);
        assert_eq!(parse("controller", &new), run);
        assert_eq!(parse("controller", &old), run);
        assert!(
            run.contains("tracking") && run.contains("git_interval: 7"),
            "{run}"
        );
    }
}

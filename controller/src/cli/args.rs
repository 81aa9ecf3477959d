//! The arguments of `vigie`'s subcommands, as clap parses them.

use std::path::PathBuf;

use clap::Subcommand;

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

/// The web view's sessions, spelled the same in both modes.
#[derive(Debug, clap::Args)]
pub struct WebArgs {
    /// Serve no web view (the port keeps /healthz, /readyz, /metrics and /hooks).
    #[arg(long, env = "VIGIE_NO_WEB")]
    pub no_web: bool,
    /// Trust this request header, set by an authenticating reverse proxy, as the name
    /// of the person (e.g. `X-Forwarded-User`). Only when nothing but the proxy can
    /// reach Vigie's port: anyone reaching it could send the header.
    #[arg(long, env = "VIGIE_WEB_USER_HEADER")]
    pub web_user_header: Option<String>,
    /// File holding the key (32 bytes or more) that signs web sessions and CSRF tokens.
    /// Replicas given the same key share logins; without it a random key is made at
    /// start (a restart logs everyone out).
    #[arg(long, env = "VIGIE_WEB_SESSION_KEY_FILE")]
    pub web_session_key_file: Option<PathBuf>,
}

impl WebArgs {
    /// The web view's options (`None`: no web view); `secure` marks cookies for HTTPS.
    ///
    /// # Errors
    /// The header name or the key file is wrong.
    pub fn options(&self, secure: bool) -> Result<Option<crate::web::Options>, String> {
        if self.no_web {
            return Ok(None);
        }
        let user_header = self
            .web_user_header
            .as_deref()
            .map(|h| {
                axum::http::HeaderName::try_from(h.trim())
                    .map_err(|_| format!("--web-user-header {h:?} is not a header name"))
            })
            .transpose()?;
        let key = match &self.web_session_key_file {
            Some(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| format!("--web-session-key-file {}: {e}", path.display()))?;
                crate::web::session::Key::new(&bytes)
                    .map_err(|e| format!("--web-session-key-file {}: {e}", path.display()))?
            }
            None => crate::web::session::Key::random(),
        };
        Ok(Some(crate::web::Options {
            key,
            user_header,
            secure,
        }))
    }
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
    /// Vigie's public address (`https://vigie.example.com`): reports to the forge link
    /// back to `{URL}/releases/{namespace}/{name}`; without it they carry no link.
    #[arg(long, env = "VIGIE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// File of `name:token` lines: people log in to the web view with their token to
    /// promote, roll back or clear a quarantine (without it, and without
    /// --web-user-header, the pages are read-only). Re-read at each login.
    #[arg(long, env = "VIGIE_WEB_TOKEN_FILE")]
    pub web_token_file: Option<PathBuf>,
    /// The web view's sessions.
    #[command(flatten)]
    pub web: WebArgs,
    /// Seconds between rounds when nothing happens (changes to the manifests and CI
    /// verdicts wake the reconciler at once).
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
    /// Releases reconciled at once (each on its own: a slow one never holds another).
    #[arg(long, default_value_t = 64)]
    pub concurrency: u16,
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
    /// Reconcile only the Releases, Environments and CodeLocations that match this
    /// label selector (default: all of them), e.g. to share a cluster between
    /// controllers.
    #[arg(long, env = "VIGIE_SELECTOR")]
    pub selector: Option<String>,
    /// Run the controllers only while holding the leader Lease (for several replicas).
    #[arg(long, env = "VIGIE_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease (default: the namespace the controller runs in: the
    /// pod's, else the kubeconfig context's, else `default`).
    #[arg(long, env = "VIGIE_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, env = "VIGIE_LEASE_NAME", default_value = "vigie-controller")]
    pub lease_name: String,
    /// This replica's identity in the Lease, used as is. By default: the pod's name
    /// (POD_NAME), else the host's, and what tells this process from any other (the
    /// same after a restart in the same pod, or on the same machine with the same
    /// --listen, which takes its own Lease back at once).
    #[arg(long)]
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
    /// Vigie's public address (`https://vigie.example.com`): reports to the forge link
    /// back to `{URL}/releases/{namespace}/{name}`; without it they carry no link.
    #[arg(long, env = "VIGIE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The web view's sessions (people log in with a Kubernetes bearer token).
    #[command(flatten)]
    pub web: WebArgs,
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

/// Log formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::GitArgs;
    use crate::cli::{Cli, Command};

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

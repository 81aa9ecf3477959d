//! The `vigie` command line: [`Cli`] and its [`Command`]s, whose arguments are in
//! `args.rs`; each command family runs in its own file (`run.rs`, `controller.rs`,
//! `desk.rs` for promote and rollback, `show.rs` for status and history,
//! `manifests.rs` for validate and crds, `ci.rs` for `vigie ci report`).

mod args;
mod ci;
mod controller;
mod desk;
mod manifests;
mod run;
mod show;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

pub use self::args::{
    CiCommand, ControllerArgs, DeskArgs, GitArgs, HttpArgs, LogFormat, Output, PromoteArgs,
    ReportArgs, ReportStateArg, RollbackArgs, RunArgs,
};

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

/// Runs the command line; returns the process exit code.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { dir } => manifests::crds(dir.as_deref()),
        Command::Validate { paths } => manifests::validate(&paths),
        Command::Run(args) => run::run(args),
        Command::Controller(args) => controller::controller(args),
        Command::Status { state, output } => show::status(&state, output),
        Command::History {
            location,
            env,
            state,
            kubernetes,
            namespace,
            output,
        } => show::history(
            &location,
            &env,
            &state,
            kubernetes.then_some(namespace),
            output,
        ),
        Command::Ci {
            command: CiCommand::Report(args),
        } => ci::ci_report(args),
        Command::Promote(args) => desk::act(
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
        Command::Rollback(args) => desk::act(
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

/// Arguments that cannot be used: what `vigie` prints before it exits with status 1.
#[derive(Debug, thiserror::Error)]
pub enum ArgError {
    /// An option's value is invalid, or options contradict each other.
    #[error("{0}")]
    Invalid(String),
    /// A file an option names cannot be read.
    #[error(transparent)]
    File(#[from] CredentialFileError),
}

/// A credential file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the {what} file {}: {}", .file.display(), .source.kind())]
pub struct CredentialFileError {
    /// Which credential.
    what: &'static str,
    /// The file.
    file: PathBuf,
    /// Why.
    #[source]
    source: std::io::Error,
}

/// Reads the credential files of a git remote.
fn git_credentials(
    token: Option<&PathBuf>,
    ssh_key: Option<&PathBuf>,
    known_hosts: Option<&PathBuf>,
) -> Result<crate::gitops::repo::Credentials, CredentialFileError> {
    let read = |file: Option<&PathBuf>, what| {
        file.map(|f| {
            std::fs::read_to_string(f)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|source| CredentialFileError {
                    what,
                    file: f.clone(),
                    source,
                })
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

fn webhook_secret(file: Option<&std::path::Path>) -> Result<Option<Vec<u8>>, ArgError> {
    let raw = match file {
        Some(path) => {
            Some(
                std::fs::read_to_string(path).map_err(|source| CredentialFileError {
                    what: "webhook secret",
                    file: path.to_owned(),
                    source,
                })?,
            )
        }
        None => std::env::var("VIGIE_WEBHOOK_SECRET").ok(),
    };
    Ok(raw
        .map(|s| s.trim_end_matches(['\n', '\r']).as_bytes().to_vec())
        .filter(|s| !s.is_empty()))
}

/// Builds a tokio runtime, saying why when it cannot.
fn runtime(builder: &mut tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .map_err(|e| eprintln!("vigie: failed to start the runtime: {e}"))
        .ok()
}

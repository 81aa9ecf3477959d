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
}

/// Runs the command line; returns the process exit code.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { dir } => crds(dir.as_deref()),
        Command::Validate { paths } => validate(&paths),
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

//! `vigie validate` and `vigie crds`: manifests checked, CRDs printed, offline.

use std::{io::Write, path::PathBuf, process::ExitCode};

use crate::{api, manifest};

/// `vigie crds`: the CustomResourceDefinitions as YAML, printed or one file each.
pub(super) fn crds(dir: Option<&std::path::Path>) -> ExitCode {
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

/// `vigie validate`: every problem of the manifests under `paths`.
pub(super) fn validate(paths: &[PathBuf]) -> ExitCode {
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

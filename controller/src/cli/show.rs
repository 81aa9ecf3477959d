//! `vigie status` and `vigie history`: what the state file (or the cluster) records.

use std::{io::Write, process::ExitCode};

use super::Output;

/// `vigie history`: the record of a code location in an environment.
pub(super) fn history(
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
            Err(e) => {
                eprintln!("vigie: failed to start the runtime: {e}");
                return ExitCode::FAILURE;
            }
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

/// `vigie status`: environments × code locations from the state file.
pub(super) fn status(path: &std::path::Path, output: Output) -> ExitCode {
    let state = match crate::store::load(path) {
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

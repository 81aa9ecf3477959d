//! `vigie promote` and `vigie rollback`: asked of a running Vigie (its control
//! socket) or of the operator's Releases.

use std::{io::Write, path::PathBuf, process::ExitCode};

use super::DeskArgs;

/// `vigie promote` and `vigie rollback`: plan, show, confirm, record.
pub(super) fn act(
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
) -> Result<(), crate::promote::PromoteError> {
    use crate::promote::{Kind, PromoteError, client::Desk, kubernetes::Cluster};
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
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        if line.trim() != word {
            return Err(PromoteError::NotConfirmed { word });
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

//! `vigie run`: the standalone mode's options, from its arguments.

use std::{path::PathBuf, process::ExitCode};

use super::{RunArgs, git_credentials, init_logs, runtime, webhook_secret};

/// `vigie run`: checks its arguments, then runs the standalone mode until it stops.
pub(super) fn run(args: RunArgs) -> ExitCode {
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
    let (public_url, web) = match web_setup(&args) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("vigie: {e}");
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
        concurrency: usize::from(args.concurrency.max(1)),
        removal_grace: std::time::Duration::from_secs(args.removal_grace),
        write_back,
        git_author,
        public_url,
        web,
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

/// Vigie's public URL and the web view of `vigie run` (`None`: `--no-web`).
fn web_setup(
    args: &RunArgs,
) -> Result<(Option<String>, Option<crate::standalone::web::Setup>), String> {
    let public_url = args
        .public_url
        .as_deref()
        .map(crate::forge::public_url)
        .transpose()
        .map_err(|e| format!("--public-url {e}"))?;
    let secure = public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    let Some(options) = args.web.options(secure)? else {
        return Ok((public_url, None));
    };
    let tokens = args
        .web_token_file
        .clone()
        .map(crate::standalone::web::TokenFile::new)
        .transpose()
        .map_err(|e| format!("--{e}"))?;
    Ok((
        public_url,
        Some(crate::standalone::web::Setup { options, tokens }),
    ))
}

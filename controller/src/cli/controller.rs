//! `vigie controller`: the operator's options, from its arguments.

use std::process::ExitCode;

use super::{ArgError, ControllerArgs, git_credentials, init_logs, webhook_secret};
use crate::operator::leader::{self, Identity};

/// The GitOps options of `vigie controller`, when `--gitops-repo` is given.
fn gitops_options(
    args: &ControllerArgs,
) -> Result<Option<crate::operator::gitops::Options>, ArgError> {
    let invalid = ArgError::Invalid;
    let Some(repo) = args.gitops_repo.as_deref() else {
        if args.git.write_back.trim() != "none" {
            return Err(invalid("--write-back needs --gitops-repo".into()));
        }
        return Ok(None);
    };
    let spec = format!("{repo}#{}:{}", args.gitops_ref, args.gitops_path);
    let source = match crate::gitops::source::parse(&spec) {
        Ok(crate::gitops::source::Source::Git(g)) => g,
        Ok(crate::gitops::source::Source::Path(_)) => {
            return Err(invalid(format!("--gitops-repo {repo:?} is not a git URL")));
        }
        Err(e) => return Err(invalid(format!("--gitops-repo {e}"))),
    };
    let credentials = git_credentials(
        args.git.git_token_file.as_ref(),
        args.git.git_ssh_key_file.as_ref(),
        args.git.git_known_hosts_file.as_ref(),
    )?;
    let write_back = crate::gitops::writeback::Scope::parse(&args.git.write_back)
        .map_err(|e| invalid(format!("--{e}")))?;
    let author = crate::gitops::writeback::Author::parse(&args.git.git_author)
        .map_err(|e| invalid(format!("--git-author {e}")))?;
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

/// `vigie controller`: checks its arguments, then runs the operator until it stops.
pub(super) fn controller(args: ControllerArgs) -> ExitCode {
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
    let public_url = match args.public_url.as_deref().map(crate::forge::public_url) {
        Some(Err(e)) => {
            eprintln!("vigie: --public-url {e}");
            return ExitCode::FAILURE;
        }
        Some(Ok(u)) => Some(u),
        None => None,
    };
    let secure = public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    let web = match args.web.options(secure) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("vigie: {e}");
            return ExitCode::FAILURE;
        }
    };
    let identity = match args.identity {
        Some(given) => Identity::Given(given),
        None => Identity::Named(leader::name(
            std::env::var("POD_NAME").ok().as_deref(),
            std::env::var("HOSTNAME")
                .ok()
                .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
                .as_deref(),
        )),
    };
    let options = crate::operator::Options {
        gitops,
        track_interval: std::time::Duration::from_secs(args.track_interval.max(1)),
        git_cache: args.gitops_cache.clone(),
        listen: args.listen,
        http: args.http.limits(),
        namespace: args.namespace,
        selector: args.selector,
        leader_election: args.leader_elect,
        lease_namespace: args.lease_namespace,
        lease_name: args.lease_name,
        identity,
        qps: args.kube_api_qps,
        burst: args.kube_api_burst,
        webhook_secret: secret,
        concurrency: args.concurrency.max(1),
        instance: args.instance,
        public_url,
        web,
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

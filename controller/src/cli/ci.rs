//! `vigie ci report`: a signed verdict posted to a running Vigie.

use std::process::ExitCode;

use super::{ReportArgs, ReportStateArg, runtime, webhook_secret};

/// `vigie ci report`: signs the verdict and posts it to /hooks/ci.
pub(super) fn ci_report(args: ReportArgs) -> ExitCode {
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

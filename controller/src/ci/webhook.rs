//! The generic signed CI webhook, `POST /hooks/ci`:
//!
//! ```text
//! X-Vigie-Signature: sha256=<hex HMAC-SHA256 of the body>
//! {"codeLocation": "app", "sha": "<40 hex>", "state": "pending|success|failure|error", "url": "https://…"}
//! ```
//!
//! The signature is checked (in constant time) before the body is parsed.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::api::{Sha, release::CiState};

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-vigie-signature";
/// Largest body accepted (1 MiB).
pub const MAX_BODY: usize = 1024 * 1024;

/// Why a delivery is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// No `X-Vigie-Signature` header.
    #[error("missing X-Vigie-Signature header")]
    MissingSignature,
    /// The header is not `sha256=<64 hex>`.
    #[error("malformed X-Vigie-Signature header: expected sha256=<hex>")]
    MalformedSignature,
    /// The HMAC does not match.
    #[error("signature does not match the body")]
    BadSignature,
    /// The body is not a verdict.
    #[error("invalid verdict: {0}")]
    InvalidBody(String),
}

/// A verdict as posted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Report {
    /// The CodeLocation judged.
    pub code_location: String,
    /// The exact commit judged.
    pub sha: Sha,
    /// The verdict.
    pub state: ReportState,
    /// Link to the CI run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Names of failing checks, when the CI knows them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_checks: Vec<String>,
    /// A few words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When the verdict was sent (RFC 3339). When given, a delivery older (or newer)
    /// than [`MAX_SKEW`] is refused, and two identical verdicts sent at different
    /// times are two deliveries, not a replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<jiff::Timestamp>,
}

/// How far a report's timestamp may be from the receiver's clock.
pub const MAX_SKEW: std::time::Duration = std::time::Duration::from_secs(300);

/// Refuses a report whose timestamp is further than [`MAX_SKEW`] from `now`.
pub fn check_fresh(report: &Report, now: jiff::Timestamp) -> Result<(), WebhookError> {
    match report.timestamp {
        Some(t) if now.duration_since(t).unsigned_abs() > MAX_SKEW => {
            Err(WebhookError::InvalidBody(format!(
                "timestamp {t} is more than {}s away from now: a stale or replayed delivery",
                MAX_SKEW.as_secs()
            )))
        }
        _ => Ok(()),
    }
}

/// The states a report may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportState {
    /// Running.
    Pending,
    /// Passed.
    Success,
    /// A check failed.
    Failure,
    /// CI could not tell.
    Error,
}

impl From<ReportState> for CiState {
    fn from(s: ReportState) -> Self {
        match s {
            ReportState::Pending => Self::Pending,
            ReportState::Success => Self::Success,
            ReportState::Failure => Self::Failure,
            ReportState::Error => Self::Error,
        }
    }
}

/// `sha256=<hex>` for `body` under `secret`.
#[must_use]
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks the signature header of `body`, in constant time.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), WebhookError> {
    let header = header.ok_or(WebhookError::MissingSignature)?;
    let hex_sig = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(WebhookError::MalformedSignature)?;
    let given = hex::decode(hex_sig).map_err(|_| WebhookError::MalformedSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| WebhookError::BadSignature)
}

/// Parses a verified body.
pub fn parse(body: &[u8]) -> Result<Report, WebhookError> {
    let report: Report =
        serde_json::from_slice(body).map_err(|e| WebhookError::InvalidBody(e.to_string()))?;
    if let Some(url) = &report.url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(WebhookError::InvalidBody(format!(
            "url {url:?} is not an http(s) URL"
        )));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"codeLocation":"app","sha":"476f1636fe090d4ba223d8c9a1cbbc83940090a8","state":"failure","url":"https://ci.example/1"}"#;

    #[test]
    fn a_signed_report_is_verified_and_parsed() {
        let sig = sign(b"s3cret", BODY);
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        verify(b"s3cret", BODY, Some(&sig)).unwrap();
        let r = parse(BODY).unwrap();
        assert_eq!(
            (r.code_location.as_str(), r.state),
            ("app", ReportState::Failure)
        );
        assert_eq!(CiState::from(r.state), CiState::Failure);
    }

    #[test]
    fn bad_signatures_are_refused() {
        let sig = sign(b"s3cret", BODY);
        assert_eq!(
            verify(b"other", BODY, Some(&sig)),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(b"s3cret", b"{}", Some(&sig)),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(b"s3cret", BODY, None),
            Err(WebhookError::MissingSignature)
        );
        assert_eq!(
            verify(b"s3cret", BODY, Some("md5=00")),
            Err(WebhookError::MalformedSignature)
        );
        assert_eq!(
            verify(b"s3cret", BODY, Some("sha256=zz")),
            Err(WebhookError::MalformedSignature)
        );
        assert_eq!(
            verify(b"s3cret", BODY, Some("sha256=00")),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn timestamps_bound_replays() {
        let now: jiff::Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let mut r = parse(BODY).unwrap();
        check_fresh(&r, now).unwrap();
        r.timestamp = Some("2026-11-23T09:58:00Z".parse().unwrap());
        check_fresh(&r, now).unwrap();
        r.timestamp = Some("2026-11-23T09:50:00Z".parse().unwrap());
        assert!(
            check_fresh(&r, now)
                .unwrap_err()
                .to_string()
                .contains("stale or replayed")
        );
        r.timestamp = Some("2026-11-23T10:10:00Z".parse().unwrap());
        assert!(check_fresh(&r, now).is_err());
    }

    #[test]
    fn malformed_bodies_are_named() {
        for (body, needle) in [
            (&br#"{"codeLocation":"app","sha":"abc","state":"failure"}"#[..], "not a full commit SHA"),
            (br#"{"codeLocation":"app","sha":"476f1636fe090d4ba223d8c9a1cbbc83940090a8","state":"red"}"#, "unknown variant"),
            (br#"{"codeLocation":"app","sha":"476f1636fe090d4ba223d8c9a1cbbc83940090a8","state":"success","extra":1}"#, "unknown field"),
            (br#"{"codeLocation":"app","sha":"476f1636fe090d4ba223d8c9a1cbbc83940090a8","state":"success","url":"javascript:x"}"#, "not an http(s) URL"),
            (b"not json", "expected"),
        ] {
            let e = parse(body).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}

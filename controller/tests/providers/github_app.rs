//! A stand-in for GitHub's side of a GitHub App: `POST /app/installations/{id}/access_tokens`
//! takes only a JSON web token signed by the App's key (verified with the public key,
//! RS256) with the documented claims, and mints installation tokens that expire soon;
//! the check-run, status and repository endpoints take only such a token, unexpired.
//! The key is made by openssl, not by the code under test.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use base64::Engine as _;

use super::{Answers, fake_api, github_answer};

/// The App's ID and installation the stand-in knows.
pub const APP_ID: u64 = 42;
/// The installation.
pub const INSTALLATION_ID: u64 = 7;

/// A new App key by openssl: the PEM file (PKCS#1, as GitHub downloads it) and the
/// public key (DER `RSAPublicKey`).
#[must_use]
pub fn app_key(dir: &Path) -> (PathBuf, Vec<u8>) {
    let pem = dir.join("app.pem");
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    run(&[
        "genrsa",
        "-traditional",
        "-out",
        pem.to_str().unwrap(),
        "2048",
    ]);
    let public = run(&[
        "rsa",
        "-in",
        pem.to_str().unwrap(),
        "-RSAPublicKey_out",
        "-outform",
        "DER",
    ]);
    (pem, public)
}

/// What the stand-in saw.
#[derive(Default)]
pub struct Seen {
    /// Installation tokens minted.
    pub minted: AtomicUsize,
    /// Token requests refused (a JSON web token that did not verify).
    pub jwt_refused: AtomicUsize,
    /// API calls refused: no installation token, an unknown or an expired one.
    pub token_refused: AtomicUsize,
    /// API calls taken with a valid installation token.
    pub served: AtomicUsize,
    /// Installation token → when it expires (seconds since the epoch).
    tokens: Mutex<HashMap<String, i64>>,
}

impl Seen {
    /// Whether `token` is an installation token minted here and not expired.
    #[must_use]
    pub fn valid(&self, token: &str) -> bool {
        self.tokens
            .lock()
            .unwrap()
            .get(token)
            .is_some_and(|exp| *exp > now())
    }

    /// A count.
    #[must_use]
    pub fn count(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Why GitHub refuses a JSON web token, in its words, or `None` when it takes it.
fn refuse_jwt(jwt: &str, public_key: &[u8]) -> Option<&'static str> {
    const UNDECODABLE: &str = "A JSON web token could not be decoded";
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Some(UNDECODABLE);
    };
    let json = |p: &str| {
        b64.decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    };
    let (Some(header), Some(claims), Ok(signature)) =
        (json(header), json(claims), b64.decode(signature))
    else {
        return Some(UNDECODABLE);
    };
    if header["alg"] != "RS256" {
        return Some(UNDECODABLE);
    }
    let signed = jwt.rsplit_once('.').unwrap().0;
    let key = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key,
    );
    if key.verify(signed.as_bytes(), &signature).is_err() {
        return Some(UNDECODABLE);
    }
    let now = now();
    match (
        claims["iat"].as_i64(),
        claims["exp"].as_i64(),
        claims["iss"].as_str(),
    ) {
        (Some(iat), _, _) if iat > now => Some(
            "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
        ),
        (_, Some(exp), _) if exp <= now || exp > now + 600 => Some(
            "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
        ),
        (Some(_), Some(_), Some(iss)) if iss == APP_ID.to_string() => None,
        (Some(_), Some(_), Some(_)) => Some("Integration not found"),
        _ => Some(UNDECODABLE),
    }
}

/// Serves GitHub's API for App [`APP_ID`], installation [`INSTALLATION_ID`], on a
/// free port: installation tokens live `ttl` seconds; CI answers per `conclusions`.
#[must_use]
pub fn fake_github_app(public_key: Vec<u8>, ttl: i64, conclusions: Answers) -> (u16, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let port = fake_api(move |path, headers| {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let bearer = header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if let Some(rest) = path.strip_prefix("/app/installations/") {
            if header("accept") != Some("application/vnd.github+json") {
                return (
                    "415 Unsupported Media Type",
                    r#"{"message": "Unsupported 'Accept' header"}"#.to_owned(),
                );
            }
            if let Some(why) = refuse_jwt(bearer, &public_key) {
                s.jwt_refused.fetch_add(1, Ordering::SeqCst);
                return (
                    "401 Unauthorized",
                    serde_json::json!({"message": why}).to_string(),
                );
            }
            if rest != format!("{INSTALLATION_ID}/access_tokens") {
                return ("404 Not Found", r#"{"message": "Not Found"}"#.to_owned());
            }
            let n = s.minted.fetch_add(1, Ordering::SeqCst) + 1;
            let token = format!("ghs_installation{n}");
            let exp = now() + ttl;
            s.tokens.lock().unwrap().insert(token.clone(), exp);
            let expires_at = jiff::Timestamp::from_second(exp).unwrap();
            return (
                "201 Created",
                serde_json::json!({"token": token, "expires_at": expires_at,
                    "permissions": {"checks": "read", "statuses": "read", "contents": "read"},
                    "repository_selection": "selected"})
                .to_string(),
            );
        }
        if !s.valid(bearer) {
            s.token_refused.fetch_add(1, Ordering::SeqCst);
            return (
                "401 Unauthorized",
                r#"{"message": "Bad credentials"}"#.to_owned(),
            );
        }
        s.served.fetch_add(1, Ordering::SeqCst);
        github_answer(&conclusions, path)
    });
    (port, seen)
}

//! GitHub App authentication as data: the App's private key read from PEM, the JSON
//! web token (RS256) it signs, and the installation-token answer. Pure, the clock
//! passed in; [`super::auth`] sends the request and keeps the tokens.
//!
//! GitHub's documentation: "Generating a JSON Web Token (JWT) for a GitHub App" and
//! `POST /app/installations/{installation_id}/access_tokens`.

use aws_lc_rs::{rand::SystemRandom, signature};
use base64::Engine as _;
use jiff::Timestamp;

/// How far back `iat` is set, for clocks that drift (GitHub recommends 60 s).
pub const DRIFT_SECS: i64 = 60;
/// How long a JSON web token lives after `iat` (GitHub's maximum is 10 minutes
/// after the request; `iat` is a minute back, so `exp` is nine minutes ahead).
pub const LIFETIME_SECS: i64 = 600;

/// Why a private key cannot sign.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not PEM.
    #[error("not a PEM private key ({0}); use the .pem file GitHub downloads")]
    NotPem(String),
    /// A PEM block of another kind (a public key, an EC or OpenSSH key, a certificate).
    #[error(
        "a PEM {0:?} block, not an RSA private key (BEGIN RSA PRIVATE KEY or BEGIN PRIVATE KEY)"
    )]
    WrongBlock(String),
    /// A key protected by a passphrase.
    #[error("an encrypted private key: store it without a passphrase")]
    Encrypted,
    /// The block does not hold an RSA key usable for RS256.
    #[error("not an RSA private key: {0}")]
    NotRsa(String),
    /// Signing failed.
    #[error("failed to sign the JSON web token")]
    Sign,
}

/// A GitHub App's private key, ready to sign.
pub struct AppKey(signature::RsaKeyPair);

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppKey(***)")
    }
}

impl AppKey {
    /// Reads a PEM private key: PKCS#1 (`BEGIN RSA PRIVATE KEY`, as GitHub downloads
    /// it) or PKCS#8 (`BEGIN PRIVATE KEY`).
    ///
    /// # Errors
    /// Not PEM, not a private key, encrypted, or not RSA.
    pub fn from_pem(bytes: &[u8]) -> Result<Self, KeyError> {
        let block = pem::parse(bytes).map_err(|e| KeyError::NotPem(e.to_string()))?;
        let parsed = match block.tag() {
            "RSA PRIVATE KEY" => signature::RsaKeyPair::from_der(block.contents()),
            "PRIVATE KEY" => signature::RsaKeyPair::from_pkcs8(block.contents()),
            "ENCRYPTED PRIVATE KEY" => return Err(KeyError::Encrypted),
            other => return Err(KeyError::WrongBlock(other.to_owned())),
        };
        parsed
            .map(Self)
            .map_err(|e| KeyError::NotRsa(e.to_string()))
    }

    /// The public key (DER `RSAPublicKey`), to verify what the key signed.
    #[must_use]
    pub fn public_key(&self) -> Vec<u8> {
        use signature::KeyPair as _;
        self.0.public_key().as_ref().to_vec()
    }

    /// A JSON web token for the App `issuer` (its client ID or App ID) at `now`:
    /// `{"alg":"RS256","typ":"JWT"}`, claims `iat` (a minute back), `exp` and `iss`.
    ///
    /// # Errors
    /// Signing failed.
    pub fn jwt(&self, issuer: &str, now: Timestamp) -> Result<String, KeyError> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let iat = now.as_second() - DRIFT_SECS;
        let header = b64.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = serde_json::json!({"iat": iat, "exp": iat + LIFETIME_SECS, "iss": issuer});
        let claims = b64.encode(claims.to_string());
        let signed = format!("{header}.{claims}");
        let mut sig = vec![0; self.0.public_modulus_len()];
        self.0
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signed.as_bytes(),
                &mut sig,
            )
            .map_err(|_| KeyError::Sign)?;
        Ok(format!("{signed}.{}", b64.encode(sig)))
    }
}

/// The answer to `POST /app/installations/{id}/access_tokens` (201).
#[derive(Clone, serde::Deserialize)]
pub struct InstallationToken {
    /// The token (`ghs_…`).
    pub token: String,
    /// When it stops working (an hour after it was minted).
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for InstallationToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallationToken")
            .field("token", &"***")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::process::Command;

    use super::*;

    /// What GitHub checks of a JSON web token: an RS256 signature by `public_key` (DER
    /// `RSAPublicKey`), `iat` not in the future, `exp` not passed nor more than 10
    /// minutes ahead. Returns the claims, or GitHub's words for a refusal.
    pub(crate) fn verify(
        token: &str,
        public_key: &[u8],
        now: i64,
    ) -> Result<serde_json::Value, &'static str> {
        const REFUSED: &str = "A JSON web token could not be decoded";
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = token.split('.').collect();
        let [header, claims, sig] = parts[..] else {
            return Err(REFUSED);
        };
        let json = |p: &str| -> Result<serde_json::Value, &'static str> {
            let bytes = b64.decode(p).map_err(|_| REFUSED)?;
            serde_json::from_slice(&bytes).map_err(|_| REFUSED)
        };
        if json(header)?["alg"] != "RS256" {
            return Err(REFUSED);
        }
        signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, public_key)
            .verify(
                format!("{header}.{claims}").as_bytes(),
                &b64.decode(sig).map_err(|_| REFUSED)?,
            )
            .map_err(|_| REFUSED)?;
        let claims = json(claims)?;
        let (Some(iat), Some(exp), Some(_)) = (
            claims["iat"].as_i64(),
            claims["exp"].as_i64(),
            claims["iss"].as_str(),
        ) else {
            return Err(REFUSED);
        };
        if iat > now {
            return Err(
                "'Issued at' claim ('iat') must be an Integer representing a time in the past",
            );
        }
        if exp <= now || exp > now + 600 {
            return Err(
                "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
            );
        }
        Ok(claims)
    }

    /// A new RSA key (2048 bits) as PKCS#1 PEM, as GitHub hands them out, written by
    /// openssl: a key made by another implementation than the one that signs.
    pub(crate) fn pkcs1_key(dir: &std::path::Path) -> String {
        let path = dir.join("app.pem");
        let out = Command::new("openssl")
            .args(["genrsa", "-traditional", "-out"])
            .arg(&path)
            .arg("2048")
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(path).unwrap()
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vigie-app-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn now() -> Timestamp {
        "2026-12-02T19:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_token_is_rs256_with_the_documented_claims_and_verifies_with_the_public_key() {
        let dir = temp("claims");
        let pem = pkcs1_key(&dir);
        assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "{pem}");
        let key = AppKey::from_pem(pem.as_bytes()).unwrap();
        let jwt = key.jwt("Iv23liExample", now()).unwrap();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header: serde_json::Value =
            serde_json::from_slice(&b64.decode(jwt.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "RS256", "typ": "JWT"}));
        let t = now().as_second();
        let claims = verify(&jwt, &key.public_key(), t).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({"iat": t - 60, "exp": t + 540, "iss": "Iv23liExample"})
        );
        // GitHub takes it for nine minutes, not after.
        assert!(verify(&jwt, &key.public_key(), t + 539).is_ok());
        assert!(verify(&jwt, &key.public_key(), t + 540).is_err());
        // A byte changed in the claims breaks the signature.
        let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
        parts[1] = b64.encode(r#"{"iat":1,"exp":2,"iss":"other"}"#);
        assert_eq!(
            verify(&parts.join("."), &key.public_key(), t),
            Err("A JSON web token could not be decoded")
        );
        // Another key's public half does not verify it.
        let other = AppKey::from_pem(pkcs1_key(&temp("other")).as_bytes()).unwrap();
        assert!(verify(&jwt, &other.public_key(), t).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn openssl_verifies_the_signature() {
        let dir = temp("openssl");
        let pem = pkcs1_key(&dir);
        let key = AppKey::from_pem(pem.as_bytes()).unwrap();
        let jwt = key.jwt("123456", now()).unwrap();
        let (signed, sig) = jwt.rsplit_once('.').unwrap();
        std::fs::write(dir.join("signed"), signed).unwrap();
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .unwrap();
        std::fs::write(dir.join("sig"), sig).unwrap();
        let public = Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(dir.join("app.pem"))
            .arg("-out")
            .arg(dir.join("public.pem"))
            .output()
            .unwrap();
        assert!(public.status.success());
        let check = |file: &str| {
            Command::new("openssl")
                .args(["dgst", "-sha256", "-verify"])
                .arg(dir.join("public.pem"))
                .arg("-signature")
                .arg(dir.join("sig"))
                .arg(dir.join(file))
                .output()
                .unwrap()
        };
        let out = check("signed");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(dir.join("tampered"), format!("{signed}x")).unwrap();
        assert!(!check("tampered").status.success());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn pkcs8_keys_are_accepted_and_give_the_same_signer() {
        let dir = temp("pkcs8");
        let pkcs1 = pkcs1_key(&dir);
        let out = Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
            .arg(dir.join("app.pem"))
            .output()
            .unwrap();
        assert!(out.status.success());
        let pkcs8 = String::from_utf8(out.stdout).unwrap();
        assert!(pkcs8.starts_with("-----BEGIN PRIVATE KEY-----"), "{pkcs8}");
        let a = AppKey::from_pem(pkcs1.as_bytes()).unwrap();
        let b = AppKey::from_pem(pkcs8.trim_end().as_bytes()).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let jwt = b.jwt("7", now()).unwrap();
        assert!(verify(&jwt, &a.public_key(), now().as_second()).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn keys_that_cannot_sign_say_why() {
        let dir = temp("bad");
        let ec = Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .output()
            .unwrap();
        assert!(ec.status.success());
        let public = Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg({
                pkcs1_key(&dir);
                dir.join("app.pem")
            })
            .output()
            .unwrap();
        let cases: [(&[u8], &str); 6] = [
            (b"ghp_notakey", "not a PEM private key"),
            (b"", "not a PEM private key"),
            (&ec.stdout, "not an RSA private key"),
            (&public.stdout, "a PEM \"PUBLIC KEY\" block, not an RSA private key"),
            (
                b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "an encrypted private key",
            ),
            (
                b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
                "not an RSA private key",
            ),
        ];
        for (pem, expected) in cases {
            let e = AppKey::from_pem(pem).unwrap_err().to_string();
            assert!(e.contains(expected), "{expected}: {e}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}

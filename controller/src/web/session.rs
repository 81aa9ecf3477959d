//! Who is logged in, and the proof that a form came from our own page. A session is a
//! signed cookie (HMAC-SHA256 over the person and an expiry), so that any replica with
//! the same key reads it and nothing is kept server-side; a form's CSRF token is an HMAC
//! of the session, compared in constant time. Pure but for the key's randomness.

use std::fmt::Write as _;

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use jiff::{SignedDuration, Timestamp};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::ports::Person;

/// The session cookie's name.
pub const COOKIE: &str = "vigie_session";
/// How long a login lasts.
pub const LIFETIME: SignedDuration = SignedDuration::from_hours(8);
/// The most a session cookie may weigh (browsers keep 4 KiB per cookie).
const MAX_COOKIE: usize = 3800;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The key that signs sessions and CSRF tokens.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("the web session key {0}")]
pub struct KeyError(String);

impl Key {
    /// A key from bytes given by the operator (a file, a Secret): at least 32 bytes.
    ///
    /// # Errors
    /// It is shorter.
    pub fn new(bytes: &[u8]) -> Result<Self, KeyError> {
        let trimmed = bytes.trim_ascii().to_vec();
        if trimmed.len() < 32 {
            return Err(KeyError(format!(
                "has {} bytes; at least 32 are needed (e.g. `openssl rand -hex 32`)",
                trimmed.len()
            )));
        }
        Ok(Self(trimmed))
    }

    /// A fresh random key (sessions end when the process does).
    #[must_use]
    pub fn random() -> Self {
        let mut bytes = vec![0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).expect("the system's random source");
        Self(bytes)
    }

    fn mac(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac.finalize().into_bytes().to_vec()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    /// Name.
    n: String,
    /// Groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    g: Vec<String>,
    /// Uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    u: Option<String>,
    /// Expiry, seconds since the epoch.
    e: i64,
}

/// Why a login cannot become a session.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The person's name and groups do not fit in a cookie.
    #[error("this identity has too many groups to be kept in a session cookie ({0} bytes)")]
    TooLarge(usize),
}

/// The cookie value of a session for `person`, valid until `now` + [`LIFETIME`].
///
/// # Errors
/// The person does not fit in a cookie.
pub fn issue(key: &Key, person: &Person, now: Timestamp) -> Result<String, SessionError> {
    let claims = Claims {
        n: person.name.clone(),
        g: person.groups.clone(),
        u: person.uid.clone(),
        e: (now + LIFETIME).as_second(),
    };
    let body = b64(&serde_json::to_vec(&claims).expect("claims serialize"));
    let sig = b64(&key.mac(&[b"session", body.as_bytes()]));
    let value = format!("{body}.{sig}");
    if value.len() > MAX_COOKIE {
        return Err(SessionError::TooLarge(value.len()));
    }
    Ok(value)
}

/// The person of a cookie value, when its signature holds and it has not expired.
#[must_use]
pub fn read(key: &Key, value: &str, now: Timestamp) -> Option<Person> {
    if value.len() > MAX_COOKIE {
        return None;
    }
    let (body, sig) = value.split_once('.')?;
    let sig = unb64(sig)?;
    let expected = key.mac(&[b"session", body.as_bytes()]);
    if !bool::from(expected.ct_eq(&sig)) {
        return None;
    }
    let claims: Claims = serde_json::from_slice(&unb64(body)?).ok()?;
    (claims.e > now.as_second()).then_some(Person {
        name: claims.n,
        groups: claims.g,
        uid: claims.u,
    })
}

/// Where a person's proof of login comes from, which the CSRF token is bound to.
#[derive(Clone, Copy, Debug)]
pub enum Binding<'a> {
    /// A session cookie's value.
    Session(&'a str),
    /// A user named by the trusted reverse proxy's header.
    Proxy(&'a str),
}

/// The CSRF token of forms shown to a person logged in by `binding`.
#[must_use]
pub fn csrf(key: &Key, binding: Binding<'_>) -> String {
    let mac = match binding {
        Binding::Session(v) => key.mac(&[b"csrf-session", v.as_bytes()]),
        Binding::Proxy(u) => key.mac(&[b"csrf-proxy", u.as_bytes()]),
    };
    b64(&mac)
}

/// Whether `token` is the CSRF token of `binding` (constant time).
#[must_use]
pub fn csrf_holds(key: &Key, binding: Binding<'_>, token: &str) -> bool {
    bool::from(csrf(key, binding).as_bytes().ct_eq(token.as_bytes()))
}

/// The `Set-Cookie` value opening a session (`secure` over HTTPS).
#[must_use]
pub fn set_cookie(value: &str, secure: bool) -> String {
    let mut out = format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        LIFETIME.as_secs()
    );
    if secure {
        out.push_str("; Secure");
    }
    out
}

/// The `Set-Cookie` value ending a session.
#[must_use]
pub fn clear_cookie(secure: bool) -> String {
    let mut out = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if secure {
        out.push_str("; Secure");
    }
    out
}

/// The session cookie's value in a `Cookie` header.
#[must_use]
pub fn cookie_value(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// The people of a token file: one `name:token` per line (`#` starts a comment). A
/// token shorter than 16 characters, a line without a name, or a name used twice is
/// refused, naming the line (never the token).
///
/// # Errors
/// The file's first wrong line.
pub fn token_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut people: Vec<(String, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("line {}", n + 1);
        let (name, token) = line
            .split_once(':')
            .ok_or_else(|| format!("{}: expected `name:token`", at()))?;
        let (name, token) = (name.trim(), token.trim());
        if name.is_empty() || name.len() > 253 || name.chars().any(char::is_control) {
            return Err(format!(
                "{}: the name must be 1 to 253 printable characters",
                at()
            ));
        }
        if token.chars().count() < 16 {
            return Err(format!(
                "{}: the token of {name} is shorter than 16 characters",
                at()
            ));
        }
        if people.iter().any(|(p, _)| p == name) {
            return Err(format!("{}: {name} is listed twice", at()));
        }
        people.push((name.to_owned(), token.to_owned()));
    }
    if people.is_empty() {
        return Err("it lists nobody (`name:token` per line)".into());
    }
    Ok(people)
}

/// The person whose token is `token`, comparing every entry in constant time.
#[must_use]
pub fn holder<'a>(people: &'a [(String, String)], token: &str) -> Option<&'a str> {
    let mut found = None;
    for (name, t) in people {
        if bool::from(t.as_bytes().ct_eq(token.as_bytes())) {
            found = Some(name.as_str());
        }
    }
    found
}

/// A short random token for people to paste (`vigie` prints one when asked).
#[must_use]
pub fn new_token() -> String {
    let mut bytes = [0u8; 24];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system's random source");
    let mut out = String::new();
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person() -> Person {
        Person {
            name: "alice".into(),
            groups: vec!["dev".into()],
            uid: Some("42".into()),
        }
    }

    #[test]
    fn a_session_reads_back_until_it_expires_and_not_under_another_key() {
        let key = Key::random();
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let cookie = issue(&key, &person(), now).unwrap();
        assert_eq!(read(&key, &cookie, now), Some(person()));
        assert_eq!(
            read(&key, &cookie, now + LIFETIME - SignedDuration::from_secs(1)),
            Some(person())
        );
        assert_eq!(read(&key, &cookie, now + LIFETIME), None, "expired");
        assert_eq!(read(&Key::random(), &cookie, now), None, "another key");
    }

    #[test]
    fn a_forged_or_altered_session_is_refused() {
        let key = Key::random();
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let cookie = issue(&key, &person(), now).unwrap();
        let (body, sig) = cookie.split_once('.').unwrap();
        let mut claims: serde_json::Value = serde_json::from_slice(&unb64(body).unwrap()).unwrap();
        claims["n"] = "root".into();
        let forged = format!("{}.{sig}", b64(claims.to_string().as_bytes()));
        for bad in [
            forged.as_str(),
            body,
            "",
            ".",
            "x.y",
            &format!("{body}.{}", b64(b"not a signature")),
            &"a".repeat(10_000),
        ] {
            assert_eq!(read(&key, bad, now), None, "{bad:.40}");
        }
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_session_or_user() {
        let key = Key::random();
        let a = csrf(&key, Binding::Session("one"));
        assert!(csrf_holds(&key, Binding::Session("one"), &a));
        assert!(!csrf_holds(&key, Binding::Session("two"), &a));
        assert!(
            !csrf_holds(&key, Binding::Proxy("one"), &a),
            "another binding"
        );
        assert!(!csrf_holds(&Key::random(), Binding::Session("one"), &a));
        assert!(!csrf_holds(&key, Binding::Session("one"), ""));
        assert!(!csrf_holds(
            &key,
            Binding::Session("one"),
            &a[..a.len() - 1]
        ));
    }

    #[test]
    fn cookies_are_strict_http_only_and_found_among_others() {
        let set = set_cookie("abc", true);
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Path=/",
            "Secure",
            "Max-Age=28800",
        ] {
            assert!(set.contains(part), "{set}");
        }
        assert!(!set_cookie("abc", false).contains("Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
        assert_eq!(cookie_value("a=1; vigie_session=xyz; b=2"), Some("xyz"));
        assert_eq!(cookie_value("vigie_session_other=1"), None);
        assert_eq!(cookie_value("vigie_session="), None);
    }

    #[test]
    fn token_files_are_checked_line_by_line_without_echoing_tokens() {
        let people =
            token_file("# people\nalice: 0123456789abcdef0123\n\nbob:fedcba9876543210fe\n")
                .unwrap();
        assert_eq!(holder(&people, "0123456789abcdef0123"), Some("alice"));
        assert_eq!(holder(&people, "fedcba9876543210fe"), Some("bob"));
        assert_eq!(holder(&people, "0123456789abcdef012"), None);
        assert_eq!(holder(&people, ""), None);
        for (text, needle) in [
            ("alice 0123456789abcdef", "line 1: expected `name:token`"),
            ("alice:short", "line 1: the token of alice is shorter"),
            (":0123456789abcdef0123", "line 1: the name"),
            (
                "a:0123456789abcdef0123\na:0123456789abcdef9999",
                "line 2: a is listed twice",
            ),
            ("# nobody\n", "lists nobody"),
        ] {
            let e = token_file(text).unwrap_err();
            assert!(e.contains(needle), "{e}");
            assert!(!e.contains("0123456789abcdef"), "never the token: {e}");
        }
    }

    #[test]
    fn keys_are_long_enough() {
        assert!(
            Key::new(b"short")
                .unwrap_err()
                .to_string()
                .contains("at least 32")
        );
        assert!(Key::new(&[b'k'; 32]).is_ok());
        assert_eq!(new_token().len(), 48);
    }

    #[test]
    fn an_identity_too_large_for_a_cookie_is_refused() {
        let big = Person {
            groups: (0..500)
                .map(|i| format!("group-{i}-with-a-long-name"))
                .collect(),
            ..person()
        };
        assert!(matches!(
            issue(&Key::random(), &big, Timestamp::UNIX_EPOCH),
            Err(SessionError::TooLarge(_))
        ));
    }
}

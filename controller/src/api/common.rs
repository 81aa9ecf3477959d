//! Types shared by the three resources: commit SHAs, durations, secret sources,
//! ports, environment variables, mounts and conditions.

use std::{borrow::Cow, fmt, str::FromStr, time::Duration};

use jiff::Timestamp;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Pattern of a full, lowercase, 40-hexadecimal-digit git commit SHA.
pub const SHA_PATTERN: &str = "^[0-9a-f]{40}$";
/// Pattern of a revision: a full SHA, or a branch or tag name.
pub const REVISION_PATTERN: &str = r"^([0-9a-f]{40}|[A-Za-z0-9_][A-Za-z0-9._/+-]{0,254})$";
/// Pattern of a Kubernetes object name (RFC 1123 subdomain, as used for names).
pub const NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// Pattern of a duration such as `90s`, `5m`, `1h30m`.
pub const DURATION_PATTERN: &str = "^([0-9]+(ms|s|m|h))+$";

/// A full git commit SHA (40 lowercase hexadecimal digits).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha(String);

/// Error returned when a string is not a full commit SHA.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a full commit SHA (40 lowercase hexadecimal digits)")]
pub struct InvalidSha(String);

impl Sha {
    /// The SHA as a string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first seven digits, as shown to people.
    #[must_use]
    pub fn short(&self) -> &str {
        &self.0[..7]
    }
}

impl FromStr for Sha {
    type Err = InvalidSha;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidSha(s.to_owned()))
        }
    }
}

impl fmt::Display for Sha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Sha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha({})", self.short())
    }
}

impl Serialize for Sha {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Sha {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Sha {
    fn schema_name() -> Cow<'static, str> {
        "Sha".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": SHA_PATTERN,
            "description": "A full git commit SHA (40 lowercase hexadecimal digits)."
        })
    }
}

/// A duration written as `90s`, `5m`, `1h30m` or `250ms`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DurationSpec(Duration);

/// Error returned when a string is not a duration.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a duration such as 90s, 5m or 1h30m")]
pub struct InvalidDuration(String);

impl DurationSpec {
    /// A duration of `secs` seconds.
    #[must_use]
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// The duration.
    #[must_use]
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for DurationSpec {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl FromStr for DurationSpec {
    type Err = InvalidDuration;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || InvalidDuration(s.to_owned());
        if s.is_empty() {
            return Err(err());
        }
        let mut total = Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| err())?;
            rest = &rest[digits..];
            let (unit, len) = if rest.starts_with("ms") {
                (Duration::from_millis(1), 2)
            } else if rest.starts_with('s') {
                (Duration::from_secs(1), 1)
            } else if rest.starts_with('m') {
                (Duration::from_secs(60), 1)
            } else if rest.starts_with('h') {
                (Duration::from_secs(3600), 1)
            } else {
                return Err(err());
            };
            rest = &rest[len..];
            let part = unit
                .checked_mul(u32::try_from(n).map_err(|_| err())?)
                .ok_or_else(err)?;
            total = total.checked_add(part).ok_or_else(err)?;
        }
        Ok(Self(total))
    }
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            return write!(f, "{ms}ms");
        }
        let secs = self.0.as_secs();
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if secs == 0 {
            return f.write_str("0s");
        }
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for DurationSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for DurationSpec {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 32,
            "maxLength": 32,
        })
    }
}

/// Where a secret value comes from. Exactly one of the fields is set.
/// In the operator, `secretKeyRef` reads a Secret in the resource's namespace;
/// standalone, `env` and `file` read the VM's environment or a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum SecretSource {
    /// A key of a Kubernetes Secret in the same namespace.
    SecretKeyRef(SecretKeyRef),
    /// The name of an environment variable of the Vigie process.
    Env(#[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))] String),
    /// The path of a file whose content (trailing newline removed) is the secret.
    File(#[schemars(length(min = 1))] String),
}

/// A key of a Kubernetes Secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Name of the Secret, in the namespace of the resource that refers to it.
    #[schemars(regex(pattern = NAME_PATTERN), length(max = 253))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A reference to a whole Kubernetes Secret (several keys are read from it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Name of the Secret, in the namespace of the resource that refers to it.
    #[schemars(regex(pattern = NAME_PATTERN), length(max = 253))]
    pub name: String,
}

/// An environment variable given to the workload's container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    /// Variable name.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// Literal value.
    #[serde(default)]
    pub value: String,
}

/// Transport protocol of a published port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
}

/// A container port, and where it is published on the host (Docker) or the Service (Kubernetes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMapping {
    /// Port the application listens on inside the container.
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: u16,
    /// Port published on the host (Docker) or exposed by the Service (Kubernetes).
    /// Defaults to the container port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub host_port: Option<u16>,
    /// Host address the port is published on (Docker). Defaults to 127.0.0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// Protocol, TCP or UDP.
    #[serde(default)]
    pub protocol: Protocol,
}

/// A host path (or named volume) mounted into a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mount {
    /// Absolute host path, or the name of a Docker volume.
    #[schemars(length(min = 1))]
    pub source: String,
    /// Absolute path inside the container.
    #[schemars(regex(pattern = "^/"))]
    pub target: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// Status of a condition, as in Kubernetes' `metav1.Condition`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// It is not known whether the condition holds.
    Unknown,
}

/// One observation of the state of a resource, shaped like Kubernetes' `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition (`Ready`, `Progressing`, `Verified`, `Degraded`).
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// Machine-readable reason in `CamelCase`.
    pub reason: String,
    /// What a person should know.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (not when the reason or message did).
    #[schemars(with = "String")]
    pub last_transition_time: Timestamp,
    /// The generation of the spec this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha_accepts_only_full_lowercase_hex() {
        assert!(
            "0123456789abcdef0123456789abcdef01234567"
                .parse::<Sha>()
                .is_ok()
        );
        assert!(
            "0123456789ABCDEF0123456789abcdef01234567"
                .parse::<Sha>()
                .is_err()
        );
        assert!("0123456".parse::<Sha>().is_err());
        assert!(
            "g123456789abcdef0123456789abcdef01234567"
                .parse::<Sha>()
                .is_err()
        );
        let sha: Sha = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
        assert_eq!(sha.short(), "0123456");
    }

    #[test]
    fn durations_parse_and_print() {
        for (text, secs) in [("90s", 90), ("5m", 300), ("1h30m", 5400), ("1h", 3600)] {
            let d: DurationSpec = text.parse().unwrap();
            assert_eq!(d.get(), Duration::from_secs(secs), "{text}");
        }
        assert_eq!(
            "250ms".parse::<DurationSpec>().unwrap().get(),
            Duration::from_millis(250)
        );
        assert_eq!(DurationSpec::from_secs(5400).to_string(), "1h30m");
        assert_eq!(DurationSpec::from_secs(0).to_string(), "0s");
        for bad in ["", "5", "m", "5x", "-5m", "5 m"] {
            assert!(bad.parse::<DurationSpec>().is_err(), "{bad:?}");
        }
    }
}

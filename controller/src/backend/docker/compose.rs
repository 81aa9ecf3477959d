//! A service of an existing compose file, read with the `docker-compose-types` crate
//! (compose-spec), turned into what a container needs. Vigie then runs the service's
//! image with its tag set to the SHA.

use std::path::Path;

use docker_compose_types::{
    Command, Compose, Entrypoint, Environment, Ports, PublishedPort as ComposePublished, Volumes,
};

use super::plan::PublishedPort;
use crate::backend::BackendError;

/// What Vigie takes from a compose service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComposeService {
    /// Compose project name (`name:` or the directory of the file).
    pub project: String,
    /// Service name.
    pub service: String,
    /// The service's image reference (its tag is replaced by the SHA's).
    pub image: String,
    /// `NAME=value` environment.
    pub env: Vec<String>,
    /// Bind mounts and named volumes, relative paths resolved against the file's directory.
    pub binds: Vec<String>,
    /// Published ports.
    pub ports: Vec<PublishedPort>,
    /// Command.
    pub command: Option<Vec<String>>,
    /// Entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Working directory.
    pub working_dir: Option<String>,
}

fn err(file: &str, reason: impl Into<String>) -> BackendError {
    BackendError::Compose {
        file: file.to_owned(),
        reason: reason.into(),
    }
}

/// Reads `service` from the compose file at `file`.
pub fn load(file: &str, service: &str) -> Result<ComposeService, BackendError> {
    let text = std::fs::read_to_string(file).map_err(|e| err(file, e.to_string()))?;
    let dir = Path::new(file).parent().unwrap_or(Path::new("."));
    parse(file, &text, dir, service)
}

/// Parses `text` (the content of `file`, in directory `dir`) and extracts `service`.
pub fn parse(
    file: &str,
    text: &str,
    dir: &Path,
    service: &str,
) -> Result<ComposeService, BackendError> {
    let compose: Compose =
        crate::manifest::yaml::from_str(text).map_err(|e| err(file, e.to_string()))?;
    let Some(Some(s)) = compose.services.0.get(service) else {
        let known: Vec<&String> = compose.services.0.keys().collect();
        return Err(err(
            file,
            format!("no service {service:?} (services: {known:?})"),
        ));
    };
    let image = s
        .image
        .clone()
        .ok_or_else(|| err(file, format!("service {service:?} has no image")))?;
    let project = compose.name.clone().unwrap_or_else(|| {
        let base = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
        base.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("default")
            .to_owned()
    });
    let project: String = project
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let env = match &s.environment {
        Environment::List(list) => list.clone(),
        Environment::KvPair(map) => {
            let mut pairs: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        v.as_ref().map(ToString::to_string).unwrap_or_default()
                    )
                })
                .collect();
            pairs.sort();
            pairs
        }
    };
    let binds = s
        .volumes
        .iter()
        .filter_map(|v| match v {
            Volumes::Simple(spec) => Some(resolve_bind(spec, dir)),
            Volumes::Advanced(a) => a.source.as_ref().map(|src| {
                let spec = format!("{src}:{}{}", a.target, if a.read_only { ":ro" } else { "" });
                resolve_bind(&spec, dir)
            }),
        })
        .collect();
    let ports = ports(file, &s.ports)?;
    let command = s.command.as_ref().map(|c| match c {
        Command::Simple(s) => s.split_whitespace().map(str::to_owned).collect(),
        Command::Args(a) => a.clone(),
    });
    let entrypoint = s.entrypoint.as_ref().map(|e| match e {
        Entrypoint::Simple(s) => s.split_whitespace().map(str::to_owned).collect(),
        Entrypoint::List(l) => l.clone(),
    });
    Ok(ComposeService {
        project,
        service: service.to_owned(),
        image,
        env,
        binds,
        ports,
        command,
        entrypoint,
        working_dir: s.working_dir.clone(),
    })
}

fn resolve_bind(spec: &str, dir: &Path) -> String {
    match spec.split_once(':') {
        Some((src, rest)) if src.starts_with('.') => format!("{}:{rest}", dir.join(src).display()),
        _ => spec.to_owned(),
    }
}

fn ports(file: &str, ports: &Ports) -> Result<Vec<PublishedPort>, BackendError> {
    let mut out = Vec::new();
    match ports {
        Ports::Short(list) => {
            for spec in list {
                out.push(
                    short_port(spec)
                        .ok_or_else(|| err(file, format!("cannot read port {spec:?}")))?,
                );
            }
        }
        Ports::Long(list) => {
            for p in list {
                let host_port = match &p.published {
                    Some(ComposePublished::Single(n)) => *n,
                    Some(ComposePublished::Range(r)) => r
                        .parse()
                        .map_err(|_| err(file, format!("port ranges are not supported: {r:?}")))?,
                    None => p.target,
                };
                out.push(PublishedPort {
                    container_port: p.target,
                    protocol: if p.protocol.as_deref() == Some("udp") {
                        "udp"
                    } else {
                        "tcp"
                    },
                    host_ip: p.host_ip.clone().unwrap_or_else(|| "127.0.0.1".into()),
                    host_port,
                });
            }
        }
    }
    Ok(out)
}

/// `[ip:]host:container[/proto]` or `container`.
fn short_port(spec: &str) -> Option<PublishedPort> {
    let (spec, protocol) = match spec.split_once('/') {
        Some((s, "udp")) => (s, "udp"),
        Some((s, _)) => (s, "tcp"),
        None => (spec, "tcp"),
    };
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    let (container, host, ip) = match parts.as_slice() {
        [c] => (*c, *c, "127.0.0.1"),
        [c, h] => (*c, *h, "127.0.0.1"),
        [c, h, ip] => (*c, *h, *ip),
        _ => return None,
    };
    Some(PublishedPort {
        container_port: container.parse().ok()?,
        protocol,
        host_ip: ip.to_owned(),
        host_port: host.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
name: Mangetamain
services:
  preprod:
    image: registry.example/mangetamain:latest
    ports: ["8500:8501", "127.0.0.1:9000:9000/udp"]
    environment:
      APP_ENV: preprod
      DEBUG: "false"
    volumes:
      - ./data:/data:ro
      - cache:/cache
    command: streamlit run app.py
  db:
    image: postgres:16
"#;

    #[test]
    fn a_compose_file_whose_aliases_expand_past_the_bound_is_refused() {
        let list = vec!["x"; 10_000].join(", ");
        let aliases = vec!["*a"; 1_000].join(", ");
        let text = format!(
            "x-big: &a [{list}]\nservices:\n  preprod:\n    image: app\n    command: [{aliases}]\n"
        );
        let e = parse("compose.yaml", &text, Path::new("/srv/app"), "preprod").unwrap_err();
        assert!(e.to_string().contains("expands to more than 2 MiB"), "{e}");
    }

    #[test]
    fn a_service_is_read_with_its_ports_env_and_volumes() {
        let s = parse("docker-compose.yml", FILE, Path::new("/srv/app"), "preprod").unwrap();
        assert_eq!(s.project, "mangetamain");
        assert_eq!(s.image, "registry.example/mangetamain:latest");
        assert_eq!(s.env, vec!["APP_ENV=preprod", "DEBUG=false"]);
        assert_eq!(s.binds, vec!["/srv/app/./data:/data:ro", "cache:/cache"]);
        assert_eq!(
            s.command,
            Some(vec!["streamlit".into(), "run".into(), "app.py".into()])
        );
        assert_eq!(
            s.ports,
            vec![
                PublishedPort {
                    container_port: 8501,
                    protocol: "tcp",
                    host_ip: "127.0.0.1".into(),
                    host_port: 8500
                },
                PublishedPort {
                    container_port: 9000,
                    protocol: "udp",
                    host_ip: "127.0.0.1".into(),
                    host_port: 9000
                },
            ]
        );
    }

    #[test]
    fn a_missing_service_or_image_is_named() {
        let e = parse("c.yml", FILE, Path::new("/srv"), "web")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no service \"web\""), "{e}");
        let e = parse(
            "c.yml",
            "services:\n  web:\n    build: .\n",
            Path::new("/srv"),
            "web",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("has no image"), "{e}");
        let e = parse("c.yml", "services: [", Path::new("/srv"), "web")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("failed to use compose file c.yml"), "{e}");
    }
}

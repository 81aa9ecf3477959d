//! Containers as data: the name, labels and create request of a Release's container
//! for a SHA, and of a hook run. Pure functions, tested as structs; the runner in
//! `mod.rs` only sends them.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use sha2::{Digest, Sha256};

use super::compose::ComposeService;
use crate::{
    api::{
        Sha,
        code_location::Artifact,
        common::{Mount, Protocol},
        environment::Hook,
    },
    backend::{Workload, substitute},
    lifecycle::HookRun,
};

/// `app.kubernetes.io/managed-by=vigie` marks everything Vigie owns.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Environment of the container.
pub const LABEL_ENVIRONMENT: &str = "vigie.dev/environment";
/// Code location of the container.
pub const LABEL_LOCATION: &str = "vigie.dev/code-location";
/// Release of the container.
pub const LABEL_RELEASE: &str = "vigie.dev/release";
/// SHA the container runs.
pub const LABEL_SHA: &str = "vigie.dev/sha";
/// The Vigie instance owning the container.
pub const LABEL_INSTANCE: &str = "vigie.dev/instance";
/// Hash of the container's configuration: a changed spec recreates the container.
pub const LABEL_CONFIG: &str = "vigie.dev/config-hash";
/// Name of the hook a one-off container runs.
pub const LABEL_HOOK: &str = "vigie.dev/hook";
/// Where a hook's output was written.
pub const LABEL_HOOK_OUTPUT: &str = "vigie.dev/hook-output";

/// A container to create, as data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPlan {
    /// Deterministic name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// `NAME=value` environment.
    pub env: Vec<String>,
    /// Entrypoint override.
    pub entrypoint: Option<Vec<String>>,
    /// Command override.
    pub cmd: Option<Vec<String>>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Labels (ours and compose's).
    pub labels: BTreeMap<String, String>,
    /// Published ports.
    pub ports: Vec<PublishedPort>,
    /// Bind mounts, `source:target[:ro]`.
    pub binds: Vec<String>,
    /// Restart the container when it exits (workloads) or not (hooks).
    pub restart: bool,
    /// Docker network mode (`container:<name>` for a post-deploy hook, a network's
    /// name for a Dagster code server), else the default.
    pub network: Option<String>,
    /// Names other containers of `network` reach this one by (a code location's alias).
    pub aliases: Vec<String>,
}

/// A port published on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedPort {
    /// Port in the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// Host address.
    pub host_ip: String,
    /// Host port.
    pub host_port: u16,
}

/// `vigie-<environment>-<location>-<sha7>`.
#[must_use]
pub fn container_name(w: &Workload, sha: &Sha) -> String {
    format!(
        "vigie-{}-{}-{}",
        w.environment,
        w.code_location,
        sha.short()
    )
}

/// What holds a container name Vigie needs (from `docker inspect NAME`).
#[derive(Clone, Debug, Default)]
pub struct NameHolder {
    /// Container id.
    pub id: String,
    /// Image reference.
    pub image: String,
    /// `running`, `exited`, …
    pub state: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
}

/// Label Docker Compose puts on the containers of a project.
const COMPOSE_PROJECT: &str = "com.docker.compose.project";
/// Label Docker Compose puts on the containers of a service.
const COMPOSE_SERVICE: &str = "com.docker.compose.service";

/// Who holds container name `name`, and what to do so that Vigie can create its own
/// (`instance`: this Vigie's instance label).
#[must_use]
pub fn name_taken(name: &str, holder: &NameHolder, instance: &str) -> String {
    let label = |key: &str| holder.labels.get(key).map(String::as_str);
    let id = &holder.id[..holder.id.len().min(12)];
    let what = format!(
        "container {id}, image {}, {}",
        holder.image,
        if holder.state.is_empty() {
            "state unknown"
        } else {
            &holder.state
        }
    );
    let remove = format!("`docker rm -f {name}`");
    let whose = match (label(MANAGED_BY), label(LABEL_INSTANCE)) {
        (Some("vigie"), Some(other)) if other != instance => format!(
            "another Vigie ({what}; instance {other}, release {}): two Vigie processes with \
             different state files drive this engine with the same environment name; stop \
             one of them or rename the environment in one, then remove the container with \
             {remove}",
            label(LABEL_RELEASE).unwrap_or("unknown")
        ),
        (Some("vigie"), _) => format!(
            "a container of this Vigie whose labels do not match the workload ({what}); \
             remove it with {remove} and Vigie creates it again"
        ),
        _ => match label(COMPOSE_PROJECT) {
            Some(project) => format!(
                "the Docker Compose project {project:?} (service {:?}; {what}), not Vigie: \
                 remove it with `docker compose -p {project} rm -sf {}` or {remove}, and \
                 Vigie creates its own at the next round",
                label(COMPOSE_SERVICE).unwrap_or("?"),
                label(COMPOSE_SERVICE).unwrap_or("SERVICE"),
            ),
            None => format!(
                "a container Vigie did not create ({what}): remove it with {remove}, or \
                 rename it with `docker rename {name} NEW_NAME`, and Vigie creates its own \
                 at the next round"
            ),
        },
    };
    format!("the container name {name} is held by {whose}")
}

/// Label filters selecting every container of a workload.
#[must_use]
pub fn workload_filter(w: &Workload) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{MANAGED_BY}=vigie"),
            format!("{LABEL_INSTANCE}={}", w.instance),
            format!("{LABEL_ENVIRONMENT}={}", w.environment),
            format!("{LABEL_LOCATION}={}", w.code_location),
        ],
    )])
}

/// Label filters selecting every container of an environment.
#[must_use]
pub fn environment_filter(instance: &str, environment: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{MANAGED_BY}=vigie"),
            format!("{LABEL_INSTANCE}={instance}"),
            format!("{LABEL_ENVIRONMENT}={environment}"),
        ],
    )])
}

fn bind(m: &Mount) -> String {
    if m.read_only {
        format!("{}:{}:ro", m.source, m.target)
    } else {
        format!("{}:{}", m.source, m.target)
    }
}

/// The working tree of a git-checkout artifact for this workload.
#[must_use]
pub fn checkout_path(template: &str, w: &Workload) -> String {
    template.replace("{environment}", &w.environment)
}

/// Strips the tag (and digest) from an image reference: `host:5000/app:1.2` → `host:5000/app`.
#[must_use]
pub fn image_repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

/// The container of `w` running `sha`. `compose` is the parsed service for a compose artifact.
#[must_use]
pub fn workload_container(
    w: &Workload,
    sha: &Sha,
    compose: Option<&ComposeService>,
) -> ContainerPlan {
    let c = &w.container;
    let mut env: Vec<String> = Vec::new();
    let mut binds: Vec<String> = Vec::new();
    let mut entrypoint = None;
    let mut cmd = None;
    let mut working_dir = c.working_dir.clone();
    let mut ports: Vec<PublishedPort> = Vec::new();
    let (mut project, mut service) = (w.project.clone(), w.code_location.clone());
    let image = match &w.artifact {
        Artifact::Image(i) => substitute(&i.template, sha),
        Artifact::Compose(a) => {
            let s = compose.expect("a compose artifact is planned with its service");
            env.extend(s.env.iter().cloned());
            binds.extend(s.binds.iter().cloned());
            entrypoint.clone_from(&s.entrypoint);
            cmd.clone_from(&s.command);
            if working_dir.is_none() {
                working_dir.clone_from(&s.working_dir);
            }
            ports.extend(s.ports.iter().cloned());
            project.clone_from(&s.project);
            service.clone_from(&s.service);
            format!("{}:{}", image_repository(&s.image), substitute(&a.tag, sha))
        }
        Artifact::GitCheckout(g) => {
            binds.push(format!("{}:{}", checkout_path(&g.path, w), g.mount_path));
            if working_dir.is_none() {
                working_dir = Some(g.mount_path.clone());
            }
            g.image.clone()
        }
    };
    // The CodeLocation's (and Release's) settings win over the compose file's.
    for var in &c.env {
        env.retain(|e| e.split('=').next() != Some(var.name.as_str()));
        env.push(format!("{}={}", var.name, var.value));
    }
    env.retain(|e| !e.starts_with("VIGIE_"));
    env.push(format!("VIGIE_SHA={sha}"));
    env.push(format!("VIGIE_ENVIRONMENT={}", w.environment));
    env.push(format!("VIGIE_CODE_LOCATION={}", w.code_location));
    if w.dagster.is_some() {
        // Dagster launches runs in the image the code server reports.
        env.retain(|e| !e.starts_with("DAGSTER_CURRENT_IMAGE="));
        env.push(format!("DAGSTER_CURRENT_IMAGE={image}"));
    }
    if !c.ports.is_empty() {
        ports = c
            .ports
            .iter()
            .map(|p| PublishedPort {
                container_port: p.container_port,
                protocol: match p.protocol {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                },
                host_ip: p.host_ip.clone().unwrap_or_else(|| "127.0.0.1".to_owned()),
                host_port: p.host_port.unwrap_or(p.container_port),
            })
            .collect();
    }
    binds.extend(c.volumes.iter().map(bind));
    if !c.command.is_empty() {
        entrypoint = Some(c.command.clone());
    }
    if !c.args.is_empty() {
        cmd = Some(c.args.clone());
    }
    let mut labels = base_labels(w, sha);
    labels.insert("com.docker.compose.project".into(), project);
    labels.insert("com.docker.compose.service".into(), service);
    labels.insert("com.docker.compose.oneoff".into(), "False".into());
    labels.insert("com.docker.compose.container-number".into(), "1".into());
    let mut plan = ContainerPlan {
        name: container_name(w, sha),
        image,
        env,
        entrypoint,
        cmd,
        working_dir,
        labels,
        ports,
        binds,
        restart: true,
        network: w.dagster.as_ref().and_then(|d| d.network.clone()),
        aliases: w
            .dagster
            .as_ref()
            .filter(|d| d.network.is_some())
            .map(|d| vec![d.location.clone()])
            .unwrap_or_default(),
    };
    let hash = plan.config_hash();
    plan.labels.insert(LABEL_CONFIG.into(), hash);
    plan
}

fn base_labels(w: &Workload, sha: &Sha) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_owned(), "vigie".to_owned()),
        (LABEL_INSTANCE.to_owned(), w.instance.clone()),
        (LABEL_ENVIRONMENT.to_owned(), w.environment.clone()),
        (LABEL_LOCATION.to_owned(), w.code_location.clone()),
        (LABEL_RELEASE.to_owned(), w.release.clone()),
        (LABEL_SHA.to_owned(), sha.to_string()),
    ])
}

/// `vigie-hook-<environment>-<location>-<hook>-<sha7>-<attempt>`: one run per hook and
/// rollout (the attempt is the rollout's start, in seconds).
#[must_use]
pub fn hook_container_name(w: &Workload, hook: &str, run: &HookRun) -> String {
    format!(
        "vigie-hook-{}-{}-{hook}-{}-{}",
        w.environment,
        w.code_location,
        run.sha.short(),
        run.attempt.as_second()
    )
}

/// The one-off container of a hook run. `time` replaces `{time}` in the output path.
#[must_use]
pub fn hook_container(w: &Workload, hook: &Hook, run: &HookRun, time: &str) -> ContainerPlan {
    let output = hook.output.as_ref().map(|o| {
        substitute(o, &run.sha)
            .replace("{environment}", &w.environment)
            .replace("{time}", time)
    });
    let mut env: Vec<String> = hook
        .env
        .iter()
        .map(|e| format!("{}={}", e.name, e.value))
        .collect();
    env.push(format!("VIGIE_SHA={}", run.sha));
    env.push(format!(
        "VIGIE_PREVIOUS_SHA={}",
        run.previous
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    ));
    env.push(format!("VIGIE_ENVIRONMENT={}", w.environment));
    env.push(format!("VIGIE_CODE_LOCATION={}", w.code_location));
    env.push(format!(
        "VIGIE_HOOK_STAGE={}",
        crate::backend::kubernetes::stage(run)
    ));
    if let Some(output) = &output {
        env.push(format!("VIGIE_OUTPUT={output}"));
    }
    let mut labels = base_labels(w, &run.sha);
    labels.insert(LABEL_HOOK.into(), hook.name.clone());
    if let Some(output) = output {
        labels.insert(LABEL_HOOK_OUTPUT.into(), output);
    }
    ContainerPlan {
        name: hook_container_name(w, &hook.name, run),
        image: substitute(&hook.image, &run.sha),
        env,
        entrypoint: (!hook.command.is_empty()).then(|| hook.command.clone()),
        cmd: None,
        working_dir: None,
        labels,
        ports: Vec::new(),
        binds: hook.mounts.iter().map(bind).collect(),
        restart: false,
        // A smoke test shares the new container's network: the app is on localhost.
        network: run
            .after_deploy
            .then(|| format!("container:{}", container_name(w, &run.sha))),
        aliases: Vec::new(),
    }
}

impl ContainerPlan {
    /// A short hash of everything but the hash label itself.
    #[must_use]
    pub fn config_hash(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |s: &str| {
            h.update(s.as_bytes());
            h.update([0]);
        };
        field(&self.image);
        self.env.iter().for_each(|e| field(e));
        field(&format!(
            "{:?}{:?}{:?}{}",
            self.entrypoint, self.cmd, self.working_dir, self.restart
        ));
        for (k, v) in self.labels.iter().filter(|(k, _)| *k != LABEL_CONFIG) {
            field(k);
            field(v);
        }
        for p in &self.ports {
            field(&format!(
                "{}/{}:{}:{}",
                p.container_port, p.protocol, p.host_ip, p.host_port
            ));
        }
        self.binds.iter().for_each(|b| field(b));
        field(self.network.as_deref().unwrap_or_default());
        self.aliases.iter().for_each(|a| field(a));
        hex::encode(&h.finalize()[..8])
    }

    /// The Docker Engine API create request.
    #[must_use]
    pub fn create_body(&self) -> ContainerCreateBody {
        let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for p in &self.ports {
            port_bindings
                .entry(format!("{}/{}", p.container_port, p.protocol))
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_default()
                .push(PortBinding {
                    host_ip: Some(p.host_ip.clone()),
                    host_port: Some(p.host_port.to_string()),
                });
        }
        let exposed: Vec<String> = port_bindings.keys().cloned().collect();
        ContainerCreateBody {
            image: Some(self.image.clone()),
            env: Some(self.env.clone()),
            entrypoint: self.entrypoint.clone(),
            cmd: self.cmd.clone(),
            working_dir: self.working_dir.clone(),
            labels: Some(self.labels.clone().into_iter().collect()),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            host_config: Some(HostConfig {
                port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
                binds: (!self.binds.is_empty()).then(|| self.binds.clone()),
                restart_policy: Some(RestartPolicy {
                    name: Some(if self.restart {
                        RestartPolicyNameEnum::UNLESS_STOPPED
                    } else {
                        RestartPolicyNameEnum::NO
                    }),
                    maximum_retry_count: None,
                }),
                network_mode: self.network.clone(),
                ..HostConfig::default()
            }),
            networking_config: self
                .network
                .as_ref()
                .filter(|_| !self.aliases.is_empty())
                .map(|network| NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        network.clone(),
                        EndpointSettings {
                            aliases: Some(self.aliases.clone()),
                            ..EndpointSettings::default()
                        },
                    )])),
                }),
            ..ContainerCreateBody::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_name_says_who_holds_it_and_what_to_do() {
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let holder = |l: HashMap<String, String>| NameHolder {
            id: "0123456789abcdef0123".into(),
            image: "busybox".into(),
            state: "running".into(),
            labels: l,
        };
        let name = "vigie-preprod-app-1111111";
        let foreign = name_taken(name, &holder(HashMap::new()), "me");
        assert_eq!(
            foreign,
            "the container name vigie-preprod-app-1111111 is held by a container Vigie did \
             not create (container 0123456789ab, image busybox, running): remove it with \
             `docker rm -f vigie-preprod-app-1111111`, or rename it with `docker rename \
             vigie-preprod-app-1111111 NEW_NAME`, and Vigie creates its own at the next round"
        );
        let compose = name_taken(
            name,
            &holder(labels(&[
                (COMPOSE_PROJECT, "shop"),
                (COMPOSE_SERVICE, "web"),
            ])),
            "me",
        );
        assert!(
            compose.contains(
                "the Docker Compose project \"shop\" (service \"web\"; container 0123456789ab"
            ) && compose.contains("`docker compose -p shop rm -sf web`"),
            "{compose}"
        );
        let other = name_taken(
            name,
            &holder(labels(&[
                (MANAGED_BY, "vigie"),
                (LABEL_INSTANCE, "them"),
                (LABEL_RELEASE, "default/app-preprod"),
            ])),
            "me",
        );
        assert!(
            other.contains("another Vigie (container 0123456789ab, image busybox, running; instance them, release default/app-preprod)"),
            "{other}"
        );
        let ours = name_taken(
            name,
            &holder(labels(&[(MANAGED_BY, "vigie"), (LABEL_INSTANCE, "me")])),
            "me",
        );
        assert!(ours.contains("a container of this Vigie"), "{ours}");
    }
    use crate::api::{
        code_location::{ContainerSettings, GitCheckoutArtifact, ImageArtifact},
        common::{EnvVar, PortMapping},
    };

    fn sha() -> Sha {
        "476f1636fe090d4ba223d8c9a1cbbc83940090a8".parse().unwrap()
    }

    fn workload(artifact: Artifact) -> Workload {
        Workload {
            environment: "preprod".into(),
            code_location: "app".into(),
            release: "app-preprod".into(),
            repo_url: "file:///srv/app.git".into(),
            artifact,
            container: ContainerSettings {
                ports: vec![PortMapping {
                    container_port: 8080,
                    host_port: Some(8500),
                    host_ip: None,
                    protocol: Protocol::Tcp,
                }],
                env: vec![EnvVar {
                    name: "APP_ENV".into(),
                    value: "preprod".into(),
                }],
                replicas: 1,
                ..ContainerSettings::default()
            },
            health_check: None,
            project: "vigie-preprod".into(),
            instance: "test".into(),
            deployment: None,
            owner: None,
            dagster: None,
        }
    }

    #[test]
    fn an_image_container_is_named_labelled_and_published_on_loopback() {
        let w = workload(Artifact::Image(ImageArtifact {
            template: "registry.example/app:{sha}".into(),
        }));
        let p = workload_container(&w, &sha(), None);
        assert_eq!(p.name, "vigie-preprod-app-476f163");
        assert_eq!(
            p.image,
            "registry.example/app:476f1636fe090d4ba223d8c9a1cbbc83940090a8"
        );
        assert_eq!(p.labels[MANAGED_BY], "vigie");
        assert_eq!(p.labels[LABEL_SHA], sha().to_string());
        assert_eq!(p.labels["com.docker.compose.project"], "vigie-preprod");
        assert_eq!(p.labels["com.docker.compose.service"], "app");
        assert_eq!(p.labels[LABEL_CONFIG], p.config_hash());
        assert_eq!(
            p.ports,
            vec![PublishedPort {
                container_port: 8080,
                protocol: "tcp",
                host_ip: "127.0.0.1".into(),
                host_port: 8500
            }]
        );
        assert!(p.env.contains(&"APP_ENV=preprod".to_owned()));
        assert!(p.env.contains(&format!("VIGIE_SHA={}", sha())));
        let body = p.create_body();
        let bindings = body.host_config.unwrap().port_bindings.unwrap();
        assert_eq!(
            bindings["8080/tcp"].as_ref().unwrap()[0]
                .host_port
                .as_deref(),
            Some("8500")
        );
        assert_eq!(body.exposed_ports, Some(vec!["8080/tcp".to_owned()]));
    }

    #[test]
    fn a_git_checkout_container_mounts_the_working_tree() {
        let w = workload(Artifact::GitCheckout(GitCheckoutArtifact {
            path: "/srv/app/{environment}".into(),
            image: "runtime:1".into(),
            mount_path: "/app".into(),
        }));
        let p = workload_container(&w, &sha(), None);
        assert_eq!(p.image, "runtime:1");
        assert_eq!(p.binds, vec!["/srv/app/preprod:/app".to_owned()]);
        assert_eq!(p.working_dir.as_deref(), Some("/app"));
    }

    #[test]
    fn the_config_hash_changes_with_the_spec_only() {
        let w = workload(Artifact::Image(ImageArtifact {
            template: "app:{sha}".into(),
        }));
        let a = workload_container(&w, &sha(), None);
        assert_eq!(a, workload_container(&w, &sha(), None));
        let mut w2 = w.clone();
        w2.container.env[0].value = "other".into();
        assert_ne!(
            a.labels[LABEL_CONFIG],
            workload_container(&w2, &sha(), None).labels[LABEL_CONFIG]
        );
    }

    #[test]
    fn image_repositories_lose_their_tag_only() {
        assert_eq!(image_repository("app:latest"), "app");
        assert_eq!(
            image_repository("host:5000/team/app:1.2"),
            "host:5000/team/app"
        );
        assert_eq!(image_repository("host:5000/team/app"), "host:5000/team/app");
        assert_eq!(image_repository("app@sha256:abc"), "app");
    }

    #[test]
    fn a_hook_run_is_one_container_per_hook_and_sha() {
        let w = workload(Artifact::Image(ImageArtifact {
            template: "app:{sha}".into(),
        }));
        let hook = Hook {
            name: "backup".into(),
            image: "backup:1".into(),
            command: vec![
                "sh".into(),
                "-c".into(),
                "tar czf $VIGIE_OUTPUT /data".into(),
            ],
            env: vec![],
            mounts: vec![Mount {
                source: "/srv/data".into(),
                target: "/data".into(),
                read_only: true,
            }],
            timeout: "10m".parse().unwrap(),
            output: Some("/backups/{environment}-{shortSha}-{time}.tgz".into()),
        };
        let previous: Sha = "2c4a511a38c17c64f40d657effba4f8846822f62".parse().unwrap();
        let run = HookRun {
            name: "backup".into(),
            sha: sha(),
            previous: Some(previous.clone()),
            attempt: "2026-11-23T10:00:00Z".parse().unwrap(),
            after_deploy: false,
        };
        let p = hook_container(&w, &hook, &run, "20261123T1000Z");
        assert_eq!(p.name, "vigie-hook-preprod-app-backup-476f163-1795428000");
        assert!(!p.restart);
        assert_eq!(
            p.labels[LABEL_HOOK_OUTPUT],
            "/backups/preprod-476f163-20261123T1000Z.tgz"
        );
        assert!(p.env.contains(&format!("VIGIE_PREVIOUS_SHA={previous}")));
        assert_eq!(p.binds, vec!["/srv/data:/data:ro".to_owned()]);
    }
}

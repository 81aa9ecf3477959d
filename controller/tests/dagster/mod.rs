//! Real Dagster on the real Docker engine, for the end-to-end tests: images built by
//! `e2e/dagster.sh` (no registry), code servers and a webserver on a network of their
//! own, and the webserver's GraphQL. What Dagster does, measured: `FACTS.md` here.
//!
//! A test binary uses it with `mod docker; mod skip; mod dagster;` and starts with
//! `if !docker::docker_available() { return; }` (skipped without an engine, a failure
//! under `make test`).

#![allow(
    dead_code,
    reason = "each test file uses a different part of the harness"
)]

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::docker::{Vigie, free_port, root};

mod entries;

/// The port every code server listens on, inside its container.
pub const CODE_SERVER_PORT: u16 = 4000;

/// The label on every container and network made here, valued by the network's name.
const LABEL: &str = "vigie.dev/e2e-dagster";

/// Runs a command; its trimmed stdout, or a panic with its stderr.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} starts: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn docker() -> Command {
    Command::new("docker")
}

/// The base image (Debian, Python 3, pinned dagster, dagster-webserver, dagster-graphql),
/// `vigie-dagster:<version>-<hash>`: `e2e/dagster.sh base`, once per process. The first
/// build on a machine takes about 2 minutes; then it is reused (or re-imported from its
/// cached tarball in seconds). The script's lock makes concurrent tests build it once.
pub fn base_image() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| run(Command::new(root().join("e2e/dagster.sh")).arg("base")))
}

/// A code location's image, `vigie-dagster-NAME:SHA`: the base with `files` (relative
/// path, content) in `/opt/dagster/app` (the working directory and `PYTHONPATH`).
/// Rebuilt only when the files changed; a few seconds.
pub fn location_image(name: &str, sha: &str, files: &[(&str, &str)]) -> String {
    static BUILDS: AtomicU32 = AtomicU32::new(0);
    base_image();
    // A directory of this call's own: tests of one binary run at once, and two of them
    // may ask for the same image.
    let dir = root().join("target/e2e-dagster/src").join(format!(
        "{name}-{sha}-{}-{}",
        std::process::id(),
        BUILDS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    for (path, content) in files {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    let image = run(Command::new(root().join("e2e/dagster.sh"))
        .args(["location", name, sha])
        .arg(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    image
}

/// A Docker network of a test's own, removed on drop (after the containers, when it is
/// declared before them). Names should start with `vigie-dagster`.
pub struct Network {
    pub name: String,
}

/// Creates the network `name`, first removing what a crashed run left under that name
/// (its containers, found by label, and the network).
pub fn create_network(name: &str) -> Network {
    remove_leftovers(name);
    run(docker().args([
        "network",
        "create",
        "--label",
        &format!("{LABEL}={name}"),
        name,
    ]));
    Network {
        name: name.to_owned(),
    }
}

fn remove_leftovers(network: &str) {
    // Ours by label, and whatever else joined it (the code servers Vigie started).
    let ids = run(docker().args([
        "ps",
        "-aq",
        "--filter",
        &format!("label={LABEL}={network}"),
        "--filter",
        &format!("network={network}"),
    ]));
    let joined = run(docker().args(["ps", "-aq", "--filter", &format!("network={network}")]));
    let ids = format!("{ids} {joined}");
    if !ids.trim().is_empty() {
        let _ = docker()
            .args(["rm", "-f"])
            .args(ids.split_whitespace())
            .output();
    }
    let _ = docker().args(["network", "rm", network]).output();
}

impl Drop for Network {
    fn drop(&mut self) {
        remove_leftovers(&self.name);
    }
}

/// A container started here, removed on drop; its log goes to stderr first when the
/// test is failing.
pub struct Container {
    pub id: String,
    pub name: String,
}

impl Container {
    /// `docker run -d` on `network`, named `<network>-<name>` and labelled; `args` go
    /// between the options and the image, `command` after it.
    pub fn run(
        network: &Network,
        name: &str,
        args: &[&str],
        image: &str,
        command: &[&str],
    ) -> Self {
        let name = format!("{}-{name}", network.name);
        let id = run(docker()
            .args(["run", "-d", "--name", &name, "--network", &network.name])
            .args(["--label", &format!("{LABEL}={}", network.name)])
            .args(args)
            .arg(image)
            .args(command));
        Self { id, name }
    }

    /// Its stdout and stderr so far.
    pub fn logs(&self) -> String {
        let out = docker().args(["logs", &self.id]).output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Waits until its log holds `text`; panics with the log after `timeout`.
    pub fn wait_log(&self, text: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            let logs = self.logs();
            if logs.contains(text) {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "{} did not log {text:?} within {timeout:?}:\n{logs}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether it is still running.
    pub fn running(&self) -> bool {
        run(docker().args(["inspect", "-f", "{{.State.Running}}", &self.id])) == "true"
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- log of {} ---\n{}", self.name, self.logs());
        }
        let _ = docker().args(["rm", "-f", "-v", &self.id]).output();
    }
}

/// A code server, `dagster code-server start -h 0.0.0.0 -p 4000 -m MODULE`, reachable
/// on `network` as `alias`, with `DAGSTER_CURRENT_IMAGE` set to its image (the
/// webserver shows it as the location's `image`). It stays up when the module raises
/// at import, and hands the error to the webserver. Returns once it serves (loaded or
/// failed).
pub fn code_server(network: &Network, alias: &str, image: &str, module: &str) -> Container {
    // A replacement under the same alias gets a container name of its own.
    let tag = image.rsplit_once(':').map_or(image, |(_, t)| t);
    let c = Container::run(
        network,
        &format!("{alias}-{tag}"),
        &[
            "--network-alias",
            alias,
            "-e",
            &format!("DAGSTER_CURRENT_IMAGE={image}"),
        ],
        image,
        &[
            "dagster",
            "code-server",
            "start",
            "-h",
            "0.0.0.0",
            "-p",
            &CODE_SERVER_PORT.to_string(),
            "-m",
            module,
        ],
    );
    c.wait_log("Started Dagster code proxy server", Duration::from_secs(60));
    c
}

/// Writes a workspace file listing `grpc_server` entries (location name, host = the
/// code server's network alias, port 4000), atomically.
pub fn write_workspace(path: &Path, locations: &[(&str, &str)]) {
    let mut yaml = String::from("load_from:\n");
    for (name, host) in locations {
        let _ = write!(
            yaml,
            "  - grpc_server:\n      host: {host}\n      port: {CODE_SERVER_PORT}\n      location_name: {name}\n"
        );
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// A work directory for a test's workspace file, emptied.
pub fn work_dir(test: &str) -> PathBuf {
    let dir = root().join("target/e2e-dagster/work").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `dagster-webserver` on `network`, its port published on 127.0.0.1 only.
pub struct Webserver {
    /// `http://127.0.0.1:<port>/graphql`.
    pub url: String,
    pub port: u16,
    pub container: Container,
}

impl Webserver {
    /// Starts the webserver on the workspace file `workspace` (its directory is
    /// bind-mounted read-only, so a file replaced by rename is seen), waits until it
    /// answers. It does not wait for the code servers.
    pub fn start(network: &Network, workspace: &Path) -> Self {
        let dir = workspace.parent().unwrap().canonicalize().unwrap();
        let file = workspace
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let container = Container::run(
            network,
            "webserver",
            &[
                "-p",
                "127.0.0.1::3000",
                "-v",
                &format!("{}:/opt/dagster/workspace:ro", dir.display()),
            ],
            base_image(),
            &[
                "dagster-webserver",
                "-h",
                "0.0.0.0",
                "-p",
                "3000",
                "-w",
                &format!("/opt/dagster/workspace/{file}"),
            ],
        );
        let published = run(docker().args(["port", &container.id, "3000/tcp"]));
        let port: u16 = published
            .lines()
            .next()
            .and_then(|l| l.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("no published port in {published:?}"));
        let start = Instant::now();
        while super::docker::http_get(port, "/server_info").is_none_or(|(s, _)| s != 200) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the webserver did not answer within 60 s:\n{}",
                container.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Self {
            url: format!("http://127.0.0.1:{port}/graphql"),
            port,
            container,
        }
    }
}

/// One GraphQL request; the response's JSON, whatever the HTTP status (the webserver
/// answers 500 with `data` and `errors` when a field failed).
pub fn graphql(url: &str, query: &str, variables: &Value) -> Value {
    let body = serde_json::to_vec(&json!({"query": query, "variables": variables})).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = runtime.block_on(async {
        reqwest::Client::new()
            .post(url)
            .header("Content-Type", "application/json")
            .body(body)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"))
            .text()
            .await
            .unwrap()
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url} answered {text:?}: {e}"))
}

/// A code location as the webserver lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub name: String,
    /// `LOADED` (also after a failed load) or `LOADING`.
    pub status: String,
    /// The definitions' names when loaded (asset keys joined by `/`, then the jobs but
    /// the implicit `__ASSET_JOB`, sorted), or the Python error: `ClassName: message`
    /// of its causes (the exception the code raised) or of itself.
    pub definitions: Result<Vec<String>, String>,
}

impl Location {
    /// Whether the webserver could not reach the code server (not listening yet, or
    /// gone): not a verdict on the code.
    pub fn unreachable(&self) -> bool {
        self.definitions
            .as_ref()
            .is_err_and(|e| e.contains("DagsterUserCodeUnreachableError"))
    }
}

/// The fields of a `WorkspaceLocationEntry` that [`Location`] reads.
const ENTRY: &str = "name loadStatus locationOrLoadError { __typename
  ... on RepositoryLocation { repositories { name assetNodes { assetKey { path } } jobs { name } } }
  ... on PythonError { message className causes { message className } } }";

fn location(entry: &Value) -> Location {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let load = &entry["locationOrLoadError"];
    let definitions = match load["__typename"].as_str() {
        Some("RepositoryLocation") => {
            let repositories = load["repositories"].as_array().cloned().unwrap_or_default();
            let mut assets = Vec::new();
            let mut jobs = Vec::new();
            for repository in &repositories {
                for node in repository["assetNodes"].as_array().into_iter().flatten() {
                    let path: Vec<String> = node["assetKey"]["path"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(text)
                        .collect();
                    assets.push(path.join("/"));
                }
                for job in repository["jobs"].as_array().into_iter().flatten() {
                    let name = text(&job["name"]);
                    if !name.starts_with("__") {
                        jobs.push(name);
                    }
                }
            }
            assets.sort();
            jobs.sort();
            assets.extend(jobs);
            Ok(assets)
        }
        Some("PythonError") => {
            let causes: Vec<String> = load["causes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| text(&c["message"]).trim().to_owned())
                .collect();
            Err(if causes.is_empty() {
                text(&load["message"]).trim().to_owned()
            } else {
                causes.join("\n")
            })
        }
        other => Err(format!("no location nor error ({other:?}): {entry}")),
    };
    Location {
        name: text(&entry["name"]),
        status: text(&entry["loadStatus"]),
        definitions,
    }
}

/// Every location of the workspace, in the workspace file's order.
pub fn locations(url: &str) -> Vec<Location> {
    let query = format!(
        "query Locations {{ workspaceOrError {{ __typename
           ... on Workspace {{ locationEntries {{ {ENTRY} }} }}
           ... on PythonError {{ message }} }} }}"
    );
    let response = graphql(url, &query, &json!({}));
    let workspace = &response["data"]["workspaceOrError"];
    assert_eq!(
        workspace["__typename"], "Workspace",
        "workspaceOrError: {response}"
    );
    workspace["locationEntries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(location)
        .collect()
}

/// `reloadRepositoryLocation(name)`: blocks until the location is loaded (or failed)
/// and returns it; `Err("Typename: message")` for the other answers
/// (`RepositoryLocationNotFound`, `ReloadNotSupported`, `UnauthorizedError`,
/// `PythonError`).
pub fn reload_location(url: &str, name: &str) -> Result<Location, String> {
    let query = format!(
        "mutation Reload($name: String!) {{ reloadRepositoryLocation(repositoryLocationName: $name) {{
           __typename
           ... on WorkspaceLocationEntry {{ {ENTRY} }}
           ... on ReloadNotSupported {{ message }}
           ... on RepositoryLocationNotFound {{ message }}
           ... on UnauthorizedError {{ message }}
           ... on PythonError {{ message }} }} }}"
    );
    let response = graphql(url, &query, &json!({"name": name}));
    let result = &response["data"]["reloadRepositoryLocation"];
    match result["__typename"].as_str() {
        Some("WorkspaceLocationEntry") => Ok(location(result)),
        Some(other) => Err(format!("{other}: {}", result["message"])),
        None => Err(format!("no result: {response}")),
    }
}

/// Reloads `name` until the webserver reaches its code server (a replacement may not
/// listen yet), for at most `timeout`; the location then.
pub fn reload_until_reachable(url: &str, name: &str, timeout: Duration) -> Location {
    let start = Instant::now();
    loop {
        let location = reload_location(url, name).unwrap_or_else(|e| panic!("reload {name}: {e}"));
        if !location.unreachable() {
            return location;
        }
        assert!(
            start.elapsed() < timeout,
            "{name} still unreachable after {timeout:?}: {location:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `reloadWorkspace`: reads the workspace file again and reloads every location;
/// blocks until done; the (name, status) of each entry. It asks for nothing nested (a
/// new location's definitions make this mutation fail with HTTP 500): read them with
/// [`locations`] afterwards.
pub fn reload_workspace(url: &str) -> Result<Vec<(String, String)>, String> {
    let query = "mutation { reloadWorkspace { __typename
        ... on Workspace { locationEntries { name loadStatus } }
        ... on UnauthorizedError { message }
        ... on PythonError { message } } }";
    let response = graphql(url, query, &json!({}));
    let result = &response["data"]["reloadWorkspace"];
    match result["__typename"].as_str() {
        Some("Workspace") => Ok(result["locationEntries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or_default().to_owned(),
                    e["loadStatus"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()),
        Some(other) => Err(format!("{other}: {}", result["message"])),
        None => Err(format!("no result: {response}")),
    }
}

// What `vigie run` is given and how its Releases are read, shared by the end-to-end
// tests and `make bench-dagster`.

/// A location whose definitions load: two assets.
pub const ORDERS: &str = r"import dagster as dg


@dg.asset
def raw_orders():
    return [1, 2, 3]


@dg.asset
def order_count(raw_orders):
    return len(raw_orders)


defs = dg.Definitions(assets=[raw_orders, order_count])
";

/// A module that raises at import.
pub const BROKEN: &str = r#"import dagster as dg

raise RuntimeError("sales: broken at import")
"#;

/// The same location with a third asset.
pub const ORDERS_AND_TOTAL: &str = r"import dagster as dg


@dg.asset
def raw_orders():
    return [1, 2, 3]


@dg.asset
def order_count(raw_orders):
    return len(raw_orders)


@dg.asset
def order_total(raw_orders):
    return sum(raw_orders)


defs = dg.Definitions(assets=[raw_orders, order_count, order_total])
";

/// Another department's location.
pub const HEADCOUNT: &str = r"import dagster as dg


@dg.asset
def headcount():
    return 12


defs = dg.Definitions(assets=[headcount])
";

pub fn manifests(env: &str, extra: &str, graphql: &str, workspace: &str, network: &str) -> String {
    let location = |name: &str, port: u16| {
        format!(
            r#"---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: {name}}}
spec:
  repo: {{url: "file:///nonexistent/{name}.git"}}
  ci: {{webhook: {{}}}}
  artifact: {{image: {{template: "vigie-dagster-{name}:{{sha}}"}}}}
  container:
    ports: [{{containerPort: 4000, hostPort: {port}}}]
  dagster: {{module: defs}}
"#
        )
    };
    format!(
        r#"apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {{name: {env}}}
spec:
  backend: {{docker: {{}}}}
  verification: {{timeout: 5m, healthTimeout: 2m}}
  dagster:
    graphqlUrl: "{graphql}"
    workspace: {{file: "{workspace}"}}
    network: {network}
    timeout: 60s{extra}
{}{}"#,
        location("sales", free_port()),
        location("hr", free_port()),
    )
}

pub fn release_in(env: &str, location: &str, sha: &str) -> String {
    format!(
        "apiVersion: vigie.dev/v1alpha1\nkind: Release\nmetadata: {{name: {location}-dev}}\nspec: {{codeLocation: {location}, environment: {env}, revision: \"{sha}\"}}\n"
    )
}

/// Waits until the webserver lists `name` as `expected` (it reloads on Vigie's ask; a
/// read is only a read).
pub fn served(url: &str, name: &str, expected: &Result<Vec<String>, String>, timeout: Duration) {
    let start = Instant::now();
    loop {
        let all = locations(url);
        let found = all.iter().find(|l| l.name == name);
        let ok = match (found.map(|l| &l.definitions), expected) {
            (Some(Ok(d)), Ok(e)) => d == e,
            (Some(Err(d)), Err(e)) => d.contains(e.as_str()),
            _ => false,
        };
        if ok {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "{name} not served as {expected:?} within {timeout:?}: {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The entries of the workspace file (see `entries.rs`).
pub fn names(workspace: &std::path::Path) -> Vec<String> {
    entries::entries(&std::fs::read_to_string(workspace).unwrap())
}

/// The status of `location`'s Release, from the state file.
pub fn release_status(vigie: &Vigie, location: &str) -> serde_json::Value {
    let state = serde_json::to_value(vigie.state()).unwrap();
    state["releases"][format!("default/{location}-dev")]["status"].clone()
}

pub fn history(vigie: &Vigie, location: &str) -> Vec<serde_json::Value> {
    release_status(vigie, location)["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

pub fn wait_release(vigie: &Vigie, location: &str, phase: &str, timeout: Duration) {
    let start = Instant::now();
    loop {
        let status = release_status(vigie, location);
        if status["phase"] == phase {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "{location} not {phase} within {timeout:?}: {status:#}\n--- log ---\n{}",
            vigie.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn wait_for_sha(vigie: &Vigie, location: &str, sha: &str, phase: &str, timeout: Duration) {
    let start = Instant::now();
    loop {
        let status = release_status(vigie, location);
        if status["phase"] == phase && status["rollout"]["sha"] == sha {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "{location} not {phase} at {sha} within {timeout:?}: {status:#}\n--- log ---\n{}",
            vigie.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn wait_rolled_back_from(
    vigie: &Vigie,
    location: &str,
    sha: &str,
    to: &str,
    timeout: Duration,
) {
    let start = Instant::now();
    loop {
        let status = release_status(vigie, location);
        let back = status["phase"] == "RolledBack"
            && history(vigie, location)
                .iter()
                .any(|h| h["event"] == "RolledBack" && h["sha"] == sha);
        if back {
            assert_eq!(status["deployedSha"], to, "{status:#}");
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "{location} not rolled back from {sha} within {timeout:?}: {status:#}\n--- log ---\n{}",
            vigie.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

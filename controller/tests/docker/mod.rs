//! Harness of the end-to-end tests against the real Docker engine: the demo
//! repository and images (built locally by `e2e/demo-repo.sh`), a `vigie run`
//! process per test, signed webhook deliveries and plain HTTP checks.
//!
//! With `VIGIE_E2E_DOCKER=1` (set by `make test`) a missing engine fails the tests;
//! without it they are skipped when no engine answers.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the harness"
)]

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use vigie::{
    ci::webhook,
    standalone::{state, status},
};

pub const SECRET: &str = "e2e-webhook-secret";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Whether the Docker tests run; panics when they must and cannot.
pub fn docker_available() -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        super::skip::skip(
            "a Docker engine answering (e2e/docker.sh start, as root: installs docker.io and starts dockerd)",
            "VIGIE_E2E_DOCKER",
        );
    }
    ok
}

/// The demo repository and its images, built once per test binary.
pub struct Demo {
    pub repo: PathBuf,
    pub commits: HashMap<String, String>,
}

impl Demo {
    pub fn get() -> &'static Demo {
        static DEMO: OnceLock<Demo> = OnceLock::new();
        DEMO.get_or_init(|| {
            let dir = root().join("target/e2e-demo");
            let out = Command::new(root().join("e2e/demo-repo.sh"))
                .arg(&dir)
                .output()
                .expect("e2e/demo-repo.sh runs");
            assert!(
                out.status.success(),
                "demo-repo.sh: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let commits = std::fs::read_to_string(dir.join("commits"))
                .unwrap()
                .lines()
                .map(|l| {
                    let (name, sha) = l.split_once(' ').unwrap();
                    (name.to_owned(), sha.to_owned())
                })
                .collect();
            Demo {
                repo: dir.join("repo"),
                commits,
            }
        })
    }

    pub fn sha(&self, name: &str) -> &str {
        &self.commits[name]
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.repo.display())
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET http://127.0.0.1:port/path`: status and body, or `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// `POST` raw bytes with headers; returns the status code.
pub fn http_post(port: u16, path: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
    http_post_reply(port, path, headers, body).0
}

/// `POST` raw bytes with headers; returns the status code and the body.
pub fn http_post_reply(
    port: u16,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // A server refusing a large body may close early: ignore the write error then.
    let _ = stream.write_all(body);
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Polls `f` every 200 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A `vigie run` process with its own manifests, state file and port.
pub struct Vigie {
    pub dir: PathBuf,
    pub manifests: PathBuf,
    /// `--manifests` when not the directory (a git source).
    pub source: Option<String>,
    /// More arguments of `vigie run`.
    pub extra_args: Vec<String>,
    /// `--interval` (seconds); 0.5 unless set.
    pub interval: f64,
    /// The open-file limit (soft and hard) `vigie run` starts with, by `prlimit`.
    pub nofile: Option<u64>,
    pub state: PathBuf,
    pub port: u16,
    child: Option<Child>,
    environments: Vec<String>,
}

impl Vigie {
    /// A work directory named after the test; nothing is started yet.
    pub fn new(test: &str, environments: &[&str]) -> Self {
        let dir = root().join("target/e2e").join(test);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        std::fs::write(dir.join("secret"), SECRET).unwrap();
        let v = Self {
            manifests: dir.join("manifests"),
            source: None,
            extra_args: Vec::new(),
            interval: 0.5,
            nofile: None,
            state: dir.join("state.json"),
            dir,
            port: free_port(),
            child: None,
            environments: environments.iter().map(|e| (*e).to_owned()).collect(),
        };
        v.remove_containers();
        v
    }

    pub fn write(&self, file: &str, yaml: &str) {
        let tmp = self.manifests.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(tmp, self.manifests.join(file)).unwrap();
    }

    pub fn start(&mut self) {
        self.spawn();
        wait_for(Duration::from_secs(30), "vigie to be ready", || {
            http_get(self.port, "/readyz").filter(|(s, _)| *s == 200)
        });
    }

    /// Starts `vigie run` and returns once it answers `/healthz` (its first round may
    /// not have ended).
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("vigie.log"))
            .unwrap();
        let mut command = match self.nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(env!("CARGO_BIN_EXE_vigie"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_vigie")),
        };
        let child = command
            .args(["run", "--interval", &self.interval.to_string()])
            .args(["--removal-grace", "2", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--manifests")
            .arg(
                self.source
                    .clone()
                    .unwrap_or_else(|| self.manifests.display().to_string()),
            )
            .args(&self.extra_args)
            .arg("--state")
            .arg(&self.state)
            .arg("--webhook-secret-file")
            .arg(self.dir.join("secret"))
            .env("RUST_LOG", "info,vigie=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for(Duration::from_secs(30), "vigie to answer", || {
            http_get(self.port, "/healthz").filter(|(s, _)| *s == 200)
        });
    }

    /// SIGTERM; the exit status, or `None` when the process is still there after
    /// `within` (it is then killed).
    pub fn terminate_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.sigterm();
        let start = std::time::Instant::now();
        while start.elapsed() < within {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// The process id of the running `vigie run`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, as `systemctl stop`; waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.sigterm().wait().unwrap()
    }

    /// Sends SIGTERM to the running `vigie run` and hands over its process.
    fn sigterm(&mut self) -> Child {
        let child = self.child.take().expect("vigie runs");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        child
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vigie.log")).unwrap_or_default()
    }

    pub fn rows(&self) -> Vec<status::Row> {
        match state::load(&self.state) {
            Ok(Some(s)) => status::rows(&s),
            _ => Vec::new(),
        }
    }

    pub fn state(&self) -> state::State {
        state::load(&self.state).unwrap().unwrap_or_default()
    }

    pub fn row(&self, environment: &str) -> Option<status::Row> {
        self.rows()
            .into_iter()
            .find(|r| r.environment == environment)
    }

    /// Waits until the Release in `environment` is in `phase`.
    pub fn wait_phase(&self, environment: &str, phase: &str, timeout: Duration) -> status::Row {
        let start = Instant::now();
        loop {
            if let Some(r) = self.row(environment).filter(|r| r.phase == phase) {
                return r;
            }
            assert!(
                start.elapsed() <= timeout,
                "timed out waiting for {environment} to be {phase}: {:#?}\n--- log ---\n{}",
                self.row(environment),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Posts a signed verdict; returns the HTTP status.
    pub fn verdict(&self, location: &str, sha: &str, state: &str) -> u16 {
        let body = format!(
            r#"{{"codeLocation":"{location}","sha":"{sha}","state":"{state}","url":"https://ci.example/{location}/{sha}/{state}"}}"#
        );
        self.post(body.as_bytes())
    }

    pub fn post(&self, body: &[u8]) -> u16 {
        let signature = webhook::sign(SECRET.as_bytes(), body);
        http_post(
            self.port,
            "/hooks/ci",
            &[("X-Vigie-Signature", signature)],
            body,
        )
    }

    pub fn remove_containers(&self) {
        for env in &self.environments {
            let out = Command::new("docker")
                .args([
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label=vigie.dev/environment={env}"),
                ])
                .output()
                .unwrap();
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
    }

    /// Names of the containers of an environment, with their state.
    pub fn containers(environment: &str) -> Vec<(String, String)> {
        let out = Command::new("docker")
            .args([
                "ps",
                "-a",
                "--filter",
                &format!("label=vigie.dev/environment={environment}"),
                "--format",
                "{{.Names}} {{.State}}",
            ])
            .output()
            .unwrap();
        let mut v: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
            .collect();
        v.sort();
        v
    }

    /// The Docker id of a container.
    pub fn container_id(name: &str) -> Option<String> {
        let out = Command::new("docker")
            .args(["inspect", "--format", "{{.Id}}", name])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for Vigie {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            self.remove_containers();
        }
    }
}

/// Environment + CodeLocation manifests of the demo app, for environments `preprod`
/// (deploy-first) and `prod` (validated-only, manual), names prefixed by `prefix`.
pub fn vm_manifests(prefix: &str, demo: &Demo, artifact: &str) -> String {
    format!(
        r#"apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {{name: {prefix}-preprod}}
spec:
  backend: {{docker: {{}}}}
  verification: {{timeout: 2m, healthTimeout: 1m}}
---
apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {{name: {prefix}-prod}}
spec:
  backend: {{docker: {{}}}}
  strategy: ValidatedOnly
  promotion: {{from: {prefix}-preprod, approval: Manual}}
  verification: {{healthTimeout: 1m}}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: app}}
spec:
  repo: {{url: "{url}"}}
  ci: {{webhook: {{}}}}
  artifact:
{artifact}
  container:
    ports: [{{containerPort: 8080}}]
  healthCheck: {{path: /health, expectedBody: ok, timeout: 2s, retries: 3, interval: 500ms}}
"#,
        url = demo.url()
    )
}

pub fn release(prefix: &str, env: &str, revision: Option<&str>, port: u16, extra: &str) -> String {
    let revision = revision
        .map(|r| format!("\n  revision: {r}"))
        .unwrap_or_default();
    format!(
        r"apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {{name: app-{env}}}
spec:
  codeLocation: app
  environment: {prefix}-{env}{revision}
  overrides:
    ports: [{{containerPort: 8080, hostPort: {port}}}]
{extra}"
    )
}

pub const IMAGE_ARTIFACT: &str = "    image: {template: \"vigie-demo:{sha}\"}";

/// The subject line of a commit of the demo repository.
pub fn git_subject(repo: &std::path::Path, sha: &str) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["log", "-1", "--format=%s", sha])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs `cmd` with `input` on its stdin; its output.
pub fn with_stdin(cmd: &mut Command, input: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

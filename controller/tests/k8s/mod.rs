//! Harness of the Kubernetes end-to-end tests: the control plane `e2e/k8s.sh` builds
//! and starts (real etcd, kube-apiserver with RBAC, kube-controller-manager,
//! kube-scheduler, kwok nodes), a temporary namespace per test that dumps its objects,
//! events and the controller's log when the test fails, and `vigie controller`
//! processes run from this build.

#![allow(dead_code, reason = "each test binary uses part of the harness")]

pub mod docs;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// The control plane's directory (`e2e/k8s.sh`).
#[must_use]
pub fn dir() -> PathBuf {
    PathBuf::from(
        std::env::var("VIGIE_E2E_K8S_DIR").unwrap_or_else(|_| "/var/lib/vigie-e2e/k8s".into()),
    )
}

/// The repository root.
#[must_use]
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is in a workspace")
        .to_owned()
}

/// Whether the tests run: `VIGIE_E2E_K8S=1` (set by `make test`) and the control plane
/// answers. Asked for and not answering is a failure, not a skip.
#[must_use]
pub fn enabled(test: &str) -> bool {
    if std::env::var("VIGIE_E2E_K8S").as_deref() != Ok("1") {
        super::skip::skip(
            &format!("{test}: a control plane (set VIGIE_E2E_K8S=1 and run e2e/k8s.sh ensure)"),
            "VIGIE_E2E_K8S",
        );
        return false;
    }
    let out = kubectl(&["get", "--raw", "/readyz"]);
    assert!(
        out.status.success(),
        "VIGIE_E2E_K8S=1 but the API server does not answer: run e2e/k8s.sh ensure\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The CRDs, as a user installs them.
    let crds = root().join("crds");
    let applied = kubectl(&["apply", "--server-side", "-f", crds.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let established = kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/releases.vigie.dev",
        "crd/environments.vigie.dev",
        "crd/codelocations.vigie.dev",
        "--timeout=60s",
    ]);
    assert!(established.status.success(), "{}", stderr(&established));
    true
}

/// The admin kubeconfig.
#[must_use]
pub fn admin() -> PathBuf {
    dir().join("admin.kubeconfig")
}

/// A binary of the control plane (kubectl, helm).
#[must_use]
pub fn bin(name: &str) -> PathBuf {
    dir().join("bin").join(name)
}

/// kubectl as the cluster admin.
pub fn kubectl(args: &[&str]) -> Output {
    kubectl_as(&admin(), args)
}

/// kubectl with a given kubeconfig.
pub fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(bin("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs")
}

/// kubectl with `stdin` as input.
pub fn kubectl_stdin(kubeconfig: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(bin("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Applies YAML as the admin; panics with kubectl's message on failure.
pub fn apply(yaml: &str) {
    let out = kubectl_stdin(&admin(), &["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "kubectl apply: {}", stderr(&out));
}

/// stderr as text.
#[must_use]
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// stdout as text.
#[must_use]
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A kube client as the admin.
pub async fn client() -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(admin()).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Polls until `f` returns `Some`, or panics naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A temporary namespace, deleted at the end; on a failed test its objects, events and
/// the logs of the controllers registered with it are printed first.
pub struct Namespace {
    pub name: String,
    pub logs: std::sync::Mutex<Vec<PathBuf>>,
}

impl Namespace {
    /// Creates `vigie-e2e-<test>-<random>`.
    #[must_use]
    pub fn new(test: &str) -> Self {
        let suffix: u32 = rand_suffix();
        let mut name = format!("e2e-{test}");
        name.truncate(50);
        let name = format!("{}-{suffix:05}", name.trim_end_matches('-'));
        let out = kubectl(&["create", "namespace", &name]);
        assert!(out.status.success(), "{}", stderr(&out));
        Self {
            name,
            logs: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Registers a log file to print if the test fails.
    pub fn watch_log(&self, path: PathBuf) {
        self.logs.lock().unwrap().push(path);
    }
}

fn rand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (nanos ^ std::process::id().rotate_left(7)) % 100_000
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("===== namespace {} at the failure =====", self.name);
            let what = "environments,codelocations,releases,deployments,replicasets,pods,services,jobs,leases";
            eprintln!(
                "{}",
                stdout(&kubectl(&["-n", &self.name, "get", what, "-o", "wide"]))
            );
            eprintln!(
                "{}",
                stdout(&kubectl(&[
                    "-n", &self.name, "get", "releases", "-o", "yaml"
                ]))
            );
            eprintln!(
                "{}",
                stdout(&kubectl(&[
                    "-n",
                    &self.name,
                    "get",
                    "events",
                    "--sort-by=.metadata.creationTimestamp"
                ]))
            );
            for log in self.logs.lock().unwrap().iter() {
                eprintln!("===== {} =====", log.display());
                eprintln!("{}", std::fs::read_to_string(log).unwrap_or_default());
            }
        }
        let _ = kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// A free TCP port on 127.0.0.1.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `vigie controller` process of this build.
pub struct Controller {
    pub child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, Option<String>)>,
    kubeconfig: PathBuf,
    secret: String,
}

/// The HMAC key the test controllers check `/hooks/ci` deliveries with.
pub const WEBHOOK_SECRET: &str = "e2e-webhook-secret";

impl Controller {
    /// A controller watching `ns` only, with its Lease in `ns`, as `kubeconfig`.
    #[must_use]
    pub fn new(ns: &Namespace, kubeconfig: &Path, identity: &str) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("{}-{identity}.log", ns.name));
        ns.watch_log(log.clone());
        Self {
            child: None,
            port,
            log,
            args: vec![
                "controller".into(),
                format!("--listen=127.0.0.1:{port}"),
                format!("--namespace={}", ns.name),
                format!("--lease-namespace={}", ns.name),
                format!("--identity={identity}"),
                "--log-format=text".into(),
                "--instance=e2e".into(),
            ],
            env: vec![("POD_NAME".into(), None)],
            kubeconfig: kubeconfig.to_owned(),
            secret: WEBHOOK_SECRET.into(),
        }
    }

    /// Adds arguments of `vigie controller`.
    pub fn args(&mut self, more: &[String]) {
        self.args.extend_from_slice(more);
    }

    /// Drops the arguments `new` set that start with `prefix` (`--identity=`,
    /// `--lease-namespace=`), so the controller takes its default.
    pub fn without_arg(&mut self, prefix: &str) {
        self.args.retain(|a| !a.starts_with(prefix));
    }

    /// Sets an environment variable of the process, or with `None` makes sure it is
    /// unset (`POD_NAME` is unset unless a test sets it).
    pub fn env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.map(Into::into)));
    }

    /// Starts (again).
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_vigie"));
        for (key, value) in &self.env {
            match value {
                Some(v) => command.env(key, v),
                None => command.env_remove(key),
            };
        }
        let child = command
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("VIGIE_WEBHOOK_SECRET", &self.secret)
            .env("RUST_LOG", "info,vigie=debug,kube=warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("vigie controller starts");
        self.child = Some(child);
    }

    /// SIGKILL: no cleanup, no Lease release.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and waits for the exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The controller's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/metrics`, if it answers.
    #[must_use]
    pub fn metrics(&self) -> Option<String> {
        http(self.port, "GET", "/metrics", &[], b"").map(|(_, b)| b)
    }

    /// Posts a signed `/hooks/ci` verdict; returns the status code.
    #[must_use]
    pub fn verdict(&self, location: &str, sha: &str, state: &str) -> u16 {
        let body = serde_json::to_vec(&serde_json::json!({
            "codeLocation": location,
            "sha": sha,
            "state": state,
            "url": format!("https://ci.example/{sha}"),
        }))
        .unwrap();
        let signature = vigie::ci::webhook::sign(self.secret.as_bytes(), &body);
        // A CodeLocation created a moment ago may not have reached this replica's
        // watch yet (404): a CI system would retry, so does the test.
        let start = Instant::now();
        loop {
            let status = http(
                self.port,
                "POST",
                "/hooks/ci",
                &[
                    (vigie::ci::webhook::SIGNATURE_HEADER, signature.clone()),
                    ("content-type", "application/json".into()),
                ],
                &body,
            )
            .map_or(0, |(s, _)| s);
            if status != 404 || start.elapsed() > Duration::from_secs(15) {
                return status;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP/1.1 request to 127.0.0.1; `(status, body)`.
#[must_use]
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Option<(u16, String)> {
    exchange(port, method, path, headers, body).map(|a| (a.status, a.body))
}

/// An HTTP answer: status, headers (names in lower case) and body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The first value of header `name` (lower case).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 request to 127.0.0.1, with the answer's headers.
#[must_use]
pub fn exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Option<Answer> {
    use std::{fmt::Write as _, io::Read};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Answer {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// A 40-digit SHA made of one repeated hex digit (the Kubernetes tests use images
/// that are never pulled: kwok runs no containers).
#[must_use]
pub fn sha(c: char) -> String {
    std::iter::repeat_n(c, 40).collect()
}

/// An Environment (Kubernetes backend, its own namespace), a CodeLocation reporting
/// through `/hooks/ci`, and a Release at `revision`.
#[must_use]
pub fn manifests(ns: &str, revision: &str) -> String {
    format!(
        r#"apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {{name: preprod, namespace: {ns}}}
spec:
  backend: {{kubernetes: {{namespace: {ns}}}}}
  verification: {{timeout: 10m}}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: web, namespace: {ns}}}
spec:
  repo: {{url: "https://git.example/web.git"}}
  ci: {{webhook: {{}}}}
  artifact: {{image: {{template: "registry.example/web:{{sha}}"}}}}
  container:
    ports: [{{containerPort: 8080, hostPort: 80}}]
    replicas: 2
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {{name: web-preprod, namespace: {ns}}}
spec:
  codeLocation: web
  environment: preprod
  revision: "{revision}"
"#
    )
}

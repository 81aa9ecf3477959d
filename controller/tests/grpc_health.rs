//! The gRPC health check against real servers on 127.0.0.1: Dagster's own code servers
//! (`dagster api grpc`, `dagster code-server start`) and grpcio's stock health servicer
//! (the one Dagster registers) set to each status. Each time Vigie's verdict is
//! compared with the one of `dagster api grpc-health-check` on the same server.
//!
//! Dagster and grpcio-health-checking come from the virtualenv `make deps` builds
//! (`e2e/deps.sh`, pinned in `e2e/python-requirements.txt`) in `$VIGIE_E2E_PYTHON_DIR`
//! (default `/var/lib/vigie-e2e/python`); without it the tests skip, or fail under
//! `make test`.

mod skip;

use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use vigie::{
    api::code_location::{DAGSTER_API_SERVICE, HealthCheck},
    backend::{grpc_health, health::HealthError},
};

/// The virtualenv's interpreter, when Dagster and grpcio's health servicer import.
fn python() -> Option<PathBuf> {
    let dir = std::env::var_os("VIGIE_E2E_PYTHON_DIR")
        .map_or_else(|| PathBuf::from("/var/lib/vigie-e2e/python"), PathBuf::from);
    let python = dir.join("bin/python");
    let imports = Command::new(&python)
        .args([
            "-c",
            "import importlib.util as u, sys; sys.exit(not (u.find_spec('dagster') and u.find_spec('grpc_health')))",
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if imports {
        Some(python)
    } else {
        skip::skip(
            &format!(
                "Dagster and grpcio-health-checking in the virtualenv {} (make deps builds it: e2e/deps.sh; or set VIGIE_E2E_PYTHON_DIR)",
                dir.display()
            ),
            "VIGIE_E2E_DOCKER",
        );
        None
    }
}

/// A directory of its own under the target directory, with a `DAGSTER_HOME` whose
/// telemetry is off.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("grpc-health-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("home")).unwrap();
    std::fs::write(
        dir.join("home/dagster.yaml"),
        "telemetry:\n  enabled: false\n",
    )
    .unwrap();
    dir
}

fn fixture(name: &str) -> String {
    format!("{}/tests/grpc/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process in its own process group, killed with its children (the code
/// server's `dagster api grpc`) when dropped.
struct Server {
    child: Child,
    port: u16,
    log: Option<PathBuf>,
}

impl Server {
    /// grpcio's health servicer with `statuses` (`SERVICE=STATUS`), on the port it prints.
    fn grpcio(python: &Path, statuses: &[&str]) -> Self {
        let mut child = Command::new(python)
            .arg(fixture("health_server.py"))
            .args(statuses)
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("health_server.py printed {line:?}, not its port"));
        Self {
            child,
            port,
            log: None,
        }
    }

    /// `dagster ARGS… -h 127.0.0.1 -p PORT -f defs.py`, its output in `dir`.
    fn dagster(python: &Path, dir: &Path, args: &[&str]) -> Self {
        let port = free_port();
        let log = dir.join(format!("{}.log", args.join("-")));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(python)
            .args(["-m", "dagster"])
            .args(args)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-f", &fixture("defs.py")])
            .current_dir(dir)
            .env("DAGSTER_HOME", dir.join("home"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap();
        Self {
            child,
            port,
            log: Some(log),
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gRPC check of `service`: one call, bounded by `timeout`.
fn check_of(service: &str, timeout: &str) -> HealthCheck {
    serde_json::from_value(serde_json::json!({
        "grpc": {"service": service},
        "timeout": timeout,
        "retries": 0,
    }))
    .unwrap()
}

/// Runs `dagster api grpc-health-check -h 127.0.0.1 -p PORT` on each port, the
/// command itself in one Python process (`tests/grpc/dagster_check.py`): for each,
/// whether it exited 0, and what it printed.
fn dagster_cli_verdicts(python: &Path, dir: &Path, ports: &[u16]) -> Vec<(bool, String)> {
    let out = Command::new(python)
        .arg(fixture("dagster_check.py"))
        .args(ports.iter().map(u16::to_string))
        .env("DAGSTER_HOME", dir.join("home"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), ports.len());
    lines
        .into_iter()
        .map(|l| {
            (
                l["exit"] == 0,
                l["output"].as_str().unwrap_or_default().trim().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn dagster_code_servers_are_serving_as_dagsters_own_check_says() {
    let Some(python) = python() else { return };
    let dir = scratch("dagster");
    let servers = [
        Server::dagster(&python, &dir, &["api", "grpc"]),
        Server::dagster(&python, &dir, &["code-server", "start"]),
    ];
    // Both start at once; each is checked until it answers SERVING.
    let deadline = Instant::now() + Duration::from_secs(60);
    for server in &servers {
        loop {
            let checked =
                grpc_health::check(&server.address(), &check_of(DAGSTER_API_SERVICE, "2s")).await;
            match checked {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline => {
                    assert!(
                        matches!(
                            e,
                            HealthError::GrpcUnanswered { .. }
                                | HealthError::GrpcServiceUnknown { .. }
                        ),
                        "while starting, only no answer or NOT_FOUND: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{e}\n{}", server.log()),
            }
        }
        // The whole server too, as grpcio's servicer starts it.
        grpc_health::check(&server.address(), &check_of("", "2s"))
            .await
            .unwrap();
    }
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    let verdicts = dagster_cli_verdicts(&python, &dir, &ports);
    for (server, (ok, printed)) in servers.iter().zip(verdicts) {
        assert!(ok, "{printed}\n{}", server.log());
        assert_eq!(printed, "gRPC connection successful");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcio_health_servers_are_judged_as_dagsters_check_judges_them() {
    let Some(python) = python() else { return };
    let dir = scratch("grpcio");
    // (statuses set, service Vigie asks about, Vigie's reason when unhealthy, the last
    // line `dagster api grpc-health-check` prints: it asks about DagsterApi)
    let cases: [(&[&str], &str, Option<&str>, &str); 6] = [
        (
            &["DagsterApi=SERVING"],
            DAGSTER_API_SERVICE,
            None,
            "gRPC connection successful",
        ),
        (
            &["DagsterApi=NOT_SERVING"],
            DAGSTER_API_SERVICE,
            Some("service \"DagsterApi\" is NOT_SERVING"),
            "Unable to connect to gRPC server: NOT_SERVING",
        ),
        (
            &["DagsterApi=UNKNOWN"],
            DAGSTER_API_SERVICE,
            Some("service \"DagsterApi\" is UNKNOWN"),
            "Unable to connect to gRPC server: UNKNOWN",
        ),
        (
            &["DagsterApi=SERVICE_UNKNOWN"],
            DAGSTER_API_SERVICE,
            Some("the server knows no service \"DagsterApi\""),
            "Unable to connect to gRPC server: SERVICE_UNKNOWN",
        ),
        // Not registered: the servicer answers NOT_FOUND; Dagster prints the RpcError
        // and the number of UNKNOWN.
        (
            &[],
            DAGSTER_API_SERVICE,
            Some("the server knows no service \"DagsterApi\""),
            "Unable to connect to gRPC server: 0",
        ),
        // The whole server, which Dagster's command does not ask about.
        (
            &["=NOT_SERVING", "DagsterApi=SERVING"],
            "",
            Some("the whole server is NOT_SERVING"),
            "gRPC connection successful",
        ),
    ];
    let servers: Vec<Server> = cases
        .iter()
        .map(|(statuses, ..)| Server::grpcio(&python, statuses))
        .collect();
    // And a port nothing listens on.
    let gone = free_port();
    let mut ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    ports.push(gone);
    let mut cli = dagster_cli_verdicts(&python, &dir, &ports);
    let (gone_ok, gone_printed) = cli.pop().unwrap();
    for ((server, (statuses, service, reason, printed)), (cli_ok, cli_printed)) in
        servers.iter().zip(cases).zip(cli)
    {
        let address = server.address();
        let vigie = grpc_health::check(&address, &check_of(service, "2s")).await;
        match reason {
            None => assert_eq!(vigie, Ok(()), "{statuses:?}"),
            Some(reason) => assert_eq!(
                vigie.unwrap_err().to_string(),
                format!("gRPC Health/Check on {address}: {reason}"),
                "{statuses:?}"
            ),
        }
        assert_eq!(cli_printed.lines().last(), Some(printed), "{statuses:?}");
        assert_eq!(cli_ok, printed == "gRPC connection successful");
        if service == DAGSTER_API_SERVICE {
            // The same question, the same verdict.
            assert_eq!(cli_ok, reason.is_none(), "{statuses:?}: {cli_printed}");
        }
    }
    let address = format!("127.0.0.1:{gone}");
    let e = grpc_health::check(&address, &check_of(DAGSTER_API_SERVICE, "1s"))
        .await
        .unwrap_err();
    assert!(matches!(e, HealthError::GrpcUnanswered { .. }), "{e}");
    assert!(!gone_ok);
    assert!(
        gone_printed.contains("StatusCode.UNAVAILABLE")
            && gone_printed.ends_with("Unable to connect to gRPC server: 0"),
        "{gone_printed}"
    );
}

//! Whoever reaches the webhook port cannot stop `vigie run`: connections that never
//! finish their request are closed, one peer cannot take every connection, and a
//! flood from many peers leaves the reconciler the descriptors it needs to record
//! the state. No Docker engine is needed: the environment's engine is unreachable.

mod docker;
mod skip;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use docker::{Vigie, http_get, wait_for};

const MANIFESTS: &str = r#"apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {name: preprod}
spec:
  backend: {docker: {host: "tcp://127.0.0.1:9"}}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {name: app}
spec:
  repo: {url: "https://git.example/app.git"}
  ci: {webhook: {}}
  artifact: {image: {template: "app:{sha}"}}
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {name: app-preprod}
spec:
  codeLocation: app
  environment: preprod
  revision: "1111111111111111111111111111111111111111"
"#;

/// A connection from `from` (an address of 127.0.0.0/8) that sends the start of a
/// request head and never the end.
fn lingering(port: u16, from: [u8; 4]) -> Option<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    socket.bind(&SocketAddr::from((from, 0)).into()).ok()?;
    socket
        .connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)).into(),
            Duration::from_secs(2),
        )
        .ok()?;
    let mut stream = TcpStream::from(socket);
    stream
        .write_all(b"POST /hooks/ci HTTP/1.1\r\nHost: vigie\r\nContent-Length: 10\r\n")
        .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    Some(stream)
}

/// Whether the server has closed `stream` (EOF or reset), waiting at most `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let start = Instant::now();
    let mut buf = [0; 256];
    while start.elapsed() < within {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

fn started(test: &str, nofile: u64) -> Vigie {
    let mut vigie = Vigie::new(test, &[]);
    vigie.write("app.yaml", MANIFESTS);
    vigie.nofile = Some(nofile);
    vigie.extra_args = vec!["--http-header-timeout".into(), "3".into()];
    vigie.start();
    vigie
}

#[test]
fn connections_that_never_finish_their_request_are_closed() {
    let mut vigie = started("hostile-http-linger", 4096);
    let mut held: Vec<TcpStream> = (0..20)
        .filter_map(|_| lingering(vigie.port, [127, 0, 0, 2]))
        .collect();
    assert_eq!(held.len(), 20);
    let start = Instant::now();
    for stream in &mut held {
        assert!(
            closed_within(stream, Duration::from_secs(8)),
            "a request head that never ends is still held after {:?}",
            start.elapsed()
        );
    }
    assert!(start.elapsed() < Duration::from_secs(8));
    vigie.terminate();
}

#[test]
fn one_peer_holding_connections_does_not_stop_health_checks_or_webhooks() {
    // 400 descriptors in all: without a bound per peer, one peer takes them all.
    let mut vigie = started("hostile-http-peer", 400);
    // 127.0.0.2 opens 360 connections: 32 are held, the rest closed at once.
    let held: Vec<TcpStream> = (0..360)
        .filter_map(|_| lingering(vigie.port, [127, 0, 0, 2]))
        .collect();
    assert!(!held.is_empty());
    let (status, _) = http_get(vigie.port, "/healthz").expect("/healthz answers");
    assert_eq!(status, 200);
    let status = vigie.verdict("app", &"1".repeat(40), "success");
    assert_eq!(status, 202, "{}", vigie.log());
    let (_, metrics) = http_get(vigie.port, "/metrics").unwrap();
    assert!(
        metrics.contains(r#"vigie_http_connections_refused_total{reason="max_per_peer"}"#),
        "{metrics}"
    );
    drop(held);
    vigie.terminate();
}

#[test]
fn a_flood_from_many_peers_leaves_the_reconciler_its_files() {
    // 400 descriptors in all: the listener keeps at most 144 connections.
    let mut vigie = started("hostile-http-flood", 400);
    let mut held = Vec::new();
    for host in 2..14 {
        held.extend((0..40).filter_map(|_| lingering(vigie.port, [127, 0, 0, host])));
    }
    // While the flood holds its connections, a manifest changes: the reconciler must
    // read it and record its problem in the state file.
    vigie.write(
        "broken.yaml",
        "apiVersion: vigie.dev/v1alpha1\nkind: Release\n",
    );
    let problems = wait_for(Duration::from_secs(3), "the problem to be recorded", || {
        let state = vigie.state();
        (!state.manifest_problems.is_empty()).then_some(state.manifest_problems)
    });
    assert!(
        problems.iter().any(|p| p.contains("broken.yaml")),
        "{problems:?}"
    );
    assert!(
        !vigie.log().contains("Too many open files"),
        "{}",
        vigie.log()
    );
    // Once the header timeout passes, the flood's connections are gone and the port
    // answers again.
    for stream in &mut held {
        assert!(closed_within(stream, Duration::from_secs(8)));
    }
    let (status, _) = http_get(vigie.port, "/healthz").expect("/healthz answers");
    assert_eq!(status, 200);
    assert_eq!(vigie.verdict("app", &"1".repeat(40), "success"), 202);
    vigie.terminate();
}

//! End to end: the Docker engine restarts in the middle of a verification. Alone in
//! its test binary, since it stops the engine every other test uses.

mod docker;
mod skip;

use std::{process::Command, time::Duration};

use docker::{
    Demo, IMAGE_ARTIFACT, Vigie, docker_available, free_port, http_get, release, root,
    vm_manifests, wait_for,
};
use vigie::{
    api::ConditionStatus,
    lifecycle::{DEGRADED, reason},
};

const T: Duration = Duration::from_secs(60);

fn engine(action: &str) {
    let out = Command::new(root().join("e2e/docker.sh"))
        .arg(action)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "e2e/docker.sh {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn degraded(v: &Vigie) -> Option<(ConditionStatus, String)> {
    let state = v.state();
    let c = state
        .releases
        .get("default/app-preprod")?
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == DEGRADED)?
        .clone();
    Some((c.status, c.reason))
}

#[test]
fn the_engine_restarting_mid_verification_is_reported_then_recovered() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (a, b) = (demo.sha("good"), demo.sha("bad"));
    let port = free_port();
    let mut v = Vigie::new("restart", &["restart-preprod", "restart-prod"]);
    v.write("base.yaml", &vm_manifests("restart", demo, IMAGE_ARTIFACT));
    v.write(
        "preprod.yaml",
        &release("restart", "preprod", Some(a), port, ""),
    );
    v.start();
    v.wait_phase("restart-preprod", "Verifying", T);
    assert_eq!(v.verdict("app", a, "success"), 202);
    v.wait_phase("restart-preprod", "Validated", T);
    v.write(
        "preprod.yaml",
        &release("restart", "preprod", Some(b), port, ""),
    );
    v.wait_phase("restart-preprod", "Verifying", T);

    engine("stop");
    let down = wait_for(T, "the backend to be reported down", || {
        degraded(&v)
            .filter(|(s, r)| *s == ConditionStatus::True && r == reason::BACKEND_UNAVAILABLE)
    });
    assert_eq!(down.1, reason::BACKEND_UNAVAILABLE);
    // Nothing moves while the engine is away, not even on a red verdict.
    assert_eq!(v.verdict("app", b, "error"), 202);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(v.row("restart-preprod").unwrap().phase, "Verifying");

    engine("start");
    wait_for(T, "the backend to recover", || {
        degraded(&v).filter(|(s, _)| *s == ConditionStatus::False)
    });
    // B comes back (restart policy), still under verification with A as rollback point.
    wait_for(T, "B to serve again", || {
        http_get(port, "/").filter(|(s, body)| *s == 200 && body.contains(b))
    });
    let status = v.state().releases["default/app-preprod"].status.clone();
    assert_eq!(status.rollout.unwrap().rollback_point.unwrap().as_str(), a);
    assert_eq!(v.verdict("app", b, "success"), 202);
    let row = v.wait_phase("restart-preprod", "Validated", T);
    assert_eq!(row.validated_sha.as_deref(), Some(b));
}

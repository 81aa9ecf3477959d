//! Dagster code locations deployed by `vigie run` on the real Docker engine, judged by a
//! real Dagster webserver (images built locally by `e2e/dagster.sh`, no registry):
//!
//! - two locations deploy at once: each is listed in the workspace file under its
//!   alias, next to an entry Vigie does not own, and the webserver serves all three;
//! - a SHA whose module raises at import passes gRPC health, fails to load, is rolled
//!   back, its Python error in the history, and the webserver lists the good SHA's
//!   definitions again;
//! - a SHA whose definitions load but whose CI is red rolls back as usual, and the
//!   webserver serves the validated SHA's definitions.

mod dagster;
mod docker;
mod skip;

use std::time::Duration;

use dagster::{
    BROKEN, HEADCOUNT, ORDERS, ORDERS_AND_TOTAL, Webserver, code_server, create_network, history,
    location_image, locations, manifests, names, release_in, release_status, served, wait_for_sha,
    wait_release, wait_rolled_back_from, work_dir, write_workspace,
};
use docker::Vigie;

const GOOD: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const BROKEN_SHA: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
const RED: &str = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";
const HR: &str = "d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4";

const ENV: &str = "dagster-dev";
/// The environment that validates definitions before the switch.
const CHECKED: &str = "dagster-checked";

fn release(location: &str, sha: &str) -> String {
    release_in(ENV, location, sha)
}

#[test]
fn a_code_location_that_fails_to_load_or_is_red_is_rolled_back_and_served_again() {
    if !docker::docker_available() {
        return;
    }
    let images = [
        ("sales", GOOD, ORDERS),
        ("sales", BROKEN_SHA, BROKEN),
        ("sales", RED, ORDERS_AND_TOTAL),
        ("hr", HR, HEADCOUNT),
        ("other", GOOD, HEADCOUNT),
    ]
    .map(|(name, sha, code)| location_image(name, sha, &[("defs.py", code)]));
    let network = create_network("vigie-dagster-e2e-rollback");
    let dir = work_dir("rollback");
    let workspace = dir.join("workspace").join("workspace.yaml");
    // An entry Vigie does not own: a code server started by hand.
    let _other = code_server(&network, "other", &images[4], "defs");
    write_workspace(&workspace, &[("other", "other")]);
    let web = Webserver::start(&network, &workspace);

    let mut vigie = Vigie::new("dagster-rollback", &[ENV]);
    vigie.write(
        "platform.yaml",
        &manifests(
            ENV,
            "",
            &web.url,
            &workspace.display().to_string(),
            &network.name,
        ),
    );
    vigie.write("sales.yaml", &release("sales", GOOD));
    vigie.write("hr.yaml", &release("hr", HR));
    vigie.start();

    // Both deploy at once; each is listed, the hand-made entry kept.
    let t = Duration::from_secs(120);
    for location in ["sales", "hr"] {
        wait_release(&vigie, location, "Verifying", t);
    }
    let listed = names(&workspace);
    for want in [
        "grpc_server other other:4000",
        "grpc_server sales sales:4000",
        "grpc_server hr hr:4000",
    ] {
        assert!(listed.iter().any(|l| l == want), "{want}: {listed:?}");
    }
    let orders: Result<Vec<String>, String> = Ok(vec!["order_count".into(), "raw_orders".into()]);
    served(&web.url, "sales", &orders, t);
    served(&web.url, "hr", &Ok(vec!["headcount".into()]), t);
    served(&web.url, "other", &Ok(vec!["headcount".into()]), t);
    assert_eq!(vigie.verdict("sales", GOOD, "success"), 202);
    assert_eq!(vigie.verdict("hr", HR, "success"), 202);
    wait_release(&vigie, "sales", "Validated", t);
    wait_release(&vigie, "hr", "Validated", t);

    // A SHA whose module raises at import: up, serving gRPC health, but its
    // definitions do not load. Rolled back without waiting for CI.
    vigie.write("sales.yaml", &release("sales", BROKEN_SHA));
    wait_rolled_back_from(&vigie, "sales", BROKEN_SHA, GOOD, t);
    let history = history(&vigie, "sales");
    let rolled = history
        .iter()
        .find(|h| h["event"] == "RolledBack" && h["sha"] == BROKEN_SHA)
        .unwrap_or_else(|| panic!("{history:#?}"));
    let reason = rolled["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("failed to load")
            && reason.contains("RuntimeError: sales: broken at import"),
        "{reason}"
    );
    served(&web.url, "sales", &orders, t);
    served(&web.url, "hr", &Ok(vec!["headcount".into()]), t);

    // A SHA that loads (and passes gRPC health) but whose CI is red.
    vigie.write("sales.yaml", &release("sales", RED));
    wait_for_sha(&vigie, "sales", RED, "Verifying", t);
    served(
        &web.url,
        "sales",
        &Ok(vec![
            "order_count".into(),
            "order_total".into(),
            "raw_orders".into(),
        ]),
        t,
    );
    assert_eq!(vigie.verdict("sales", RED, "failure"), 202);
    wait_rolled_back_from(&vigie, "sales", RED, GOOD, t);
    served(&web.url, "sales", &orders, t);
    let all = locations(&web.url);
    assert!(
        all.iter().all(|l| l.definitions.is_ok()),
        "every location loads: {all:#?}"
    );
    let mut listed: Vec<&str> = all.iter().map(|l| l.name.as_str()).collect();
    listed.sort_unstable();
    assert_eq!(listed, ["hr", "other", "sales"]);
}

#[test]
fn definitions_validated_before_the_switch_stop_a_broken_sha_and_keep_what_runs() {
    if !docker::docker_available() {
        return;
    }
    let good = location_image("sales", GOOD, &[("defs.py", ORDERS)]);
    location_image("sales", BROKEN_SHA, &[("defs.py", BROKEN)]);
    let network = create_network("vigie-dagster-e2e-validate");
    let dir = work_dir("validate");
    let workspace = dir.join("workspace").join("workspace.yaml");
    // The webserver starts on an entry of its own; Vigie adds sales next to it.
    let _other = code_server(&network, "other", &good, "defs");
    write_workspace(&workspace, &[("other", "other")]);
    let web = Webserver::start(&network, &workspace);
    let mut vigie = Vigie::new("dagster-validate", &[CHECKED]);
    vigie.write(
        "platform.yaml",
        &manifests(
            CHECKED,
            "\n    validateDefinitions: true",
            &web.url,
            &workspace.display().to_string(),
            &network.name,
        ),
    );
    vigie.write("sales.yaml", &release_in(CHECKED, "sales", GOOD));
    vigie.start();
    let t = Duration::from_secs(120);
    wait_release(&vigie, "sales", "Verifying", t);
    let orders: Result<Vec<String>, String> = Ok(vec!["order_count".into(), "raw_orders".into()]);
    served(&web.url, "sales", &orders, t);
    assert_eq!(vigie.verdict("sales", GOOD, "success"), 202);
    wait_release(&vigie, "sales", "Validated", t);
    let workloads = || -> Vec<(String, String)> {
        Vigie::containers(CHECKED)
            .into_iter()
            .filter(|(name, _)| !name.starts_with("vigie-hook-"))
            .collect()
    };
    let running = workloads();

    vigie.write("sales.yaml", &release_in(CHECKED, "sales", BROKEN_SHA));
    wait_release(&vigie, "sales", "Failed", t);
    let status = release_status(&vigie, "sales");
    let failure = status["rollout"]["failure"].as_str().unwrap_or_default();
    assert!(
        failure.contains("pre-deploy hook vigie-dagster-definitions failed")
            && failure.contains("what runs is kept"),
        "{status:#}"
    );
    assert!(
        failure.contains("Validation"),
        "the check's own words: {failure}"
    );
    assert_eq!(status["deployedSha"], GOOD, "{status:#}");
    // The good SHA's container never stopped; the broken one was never created.
    let after = workloads();
    assert_eq!(after, running, "{after:?}");
    assert!(
        after
            .iter()
            .all(|(name, _)| !name.contains(&BROKEN_SHA[..7])),
        "{after:?}"
    );
    served(&web.url, "sales", &orders, t);
}

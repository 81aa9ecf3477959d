//! `make bench-dagster`: a red verdict on a Dagster code location, until the real
//! webserver serves the validated SHA's definitions again, against baselines measured
//! in the same run on the same engine and webserver. Prints; asserts nothing.
//!
//! - raw reload: `reloadRepositoryLocation` on a location whose code server already
//!   serves (the webserver's own share of any rollback);
//! - by hand: stop the red code server, start the kept good one, reload the location
//!   until its definitions are the good ones (what a person does);
//! - Vigie: the red verdict posted to `vigie run`, until the webserver lists the good
//!   definitions (a client polling its GraphQL from the same instant).

#[path = "../tests/dagster/mod.rs"]
mod dagster;
#[path = "../tests/docker/mod.rs"]
mod docker;
#[path = "../tests/skip/mod.rs"]
mod skip;

use std::time::{Duration, Instant};

use dagster::{
    CODE_SERVER_PORT, ORDERS, ORDERS_AND_TOTAL, Webserver, create_network, location_image,
    locations, manifests, release_in, reload_location, wait_for_sha, wait_release, work_dir,
    write_workspace,
};
use docker::Vigie;

const GOOD: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const RED: &str = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";
const ENV: &str = "dagster-bench";
const T: Duration = Duration::from_secs(180);
const ROUNDS: usize = 5;

fn orders() -> Vec<String> {
    vec!["order_count".into(), "raw_orders".into()]
}

fn serves_orders(url: &str, name: &str) -> bool {
    locations(url)
        .iter()
        .any(|l| l.name == name && l.definitions.as_ref().is_ok_and(|d| *d == orders()))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn docker(args: &[&str]) {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The same rollback done by hand on two code servers under the alias `byhand` (the
/// good one kept stopped): `(raw reloads, rollbacks)`.
fn by_hand(
    network: &str,
    url: &str,
    good: &str,
    red: &str,
) -> (Vec<Duration>, Vec<Duration>, Vec<Duration>) {
    // By hand: two code servers under the alias `byhand`, the good one kept stopped.
    let start_server = |name: &str, image: &str| {
        docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            "--network-alias",
            "byhand",
            "--label",
            &format!("vigie.dev/e2e-dagster={network}"),
            image,
            "dagster",
            "code-server",
            "start",
            "-h",
            "0.0.0.0",
            "-p",
            &CODE_SERVER_PORT.to_string(),
            "-m",
            "defs",
        ]);
    };
    let (good_name, red_name) = (
        "vigie-dagster-bench-byhand-good",
        "vigie-dagster-bench-byhand-red",
    );
    for name in [good_name, red_name] {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", name])
            .output();
    }
    start_server(good_name, good);
    start_server(red_name, red);
    docker(&["stop", good_name]);
    let mut raw = Vec::new();
    let mut by_hand = Vec::new();
    let mut engine = Vec::new();
    for _ in 0..ROUNDS {
        // The red one serves.
        while !reload_location(url, "byhand")
            .is_ok_and(|l| l.definitions.is_ok_and(|d| d.len() == 3))
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        let start = Instant::now();
        docker(&["stop", red_name]);
        docker(&["start", good_name]);
        engine.push(start.elapsed());
        while !reload_location(url, "byhand")
            .is_ok_and(|l| l.definitions.is_ok_and(|d| d == orders()))
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        by_hand.push(start.elapsed());
        let start = Instant::now();
        let reloaded = reload_location(url, "byhand");
        raw.push(start.elapsed());
        assert!(reloaded.is_ok(), "{reloaded:?}");
        docker(&["stop", good_name]);
        docker(&["start", red_name]);
    }
    for name in [good_name, red_name] {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", name])
            .output();
    }

    (raw, by_hand, engine)
}

fn main() {
    if !docker::docker_available() {
        eprintln!("bench: no Docker engine: run `make docker` first");
        std::process::exit(1);
    }
    let good = location_image("sales", GOOD, &[("defs.py", ORDERS)]);
    let red = location_image("sales", RED, &[("defs.py", ORDERS_AND_TOTAL)]);
    let network = create_network("vigie-dagster-bench");
    let dir = work_dir("bench");
    let workspace = dir.join("workspace").join("workspace.yaml");
    write_workspace(&workspace, &[("byhand", "byhand")]);
    let web = Webserver::start(&network, &workspace);
    println!(
        "Dagster code location: red verdict → the webserver serves the validated definitions ({ROUNDS} rounds, medians)\n"
    );

    let (raw, by_hand, engine) = by_hand(&network.name, &web.url, &good, &red);

    // Vigie: the same location deployed by `vigie run`.
    let mut vigie = Vigie::new("dagster-bench", &[ENV]);
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
    vigie.write("sales.yaml", &release_in(ENV, "sales", GOOD));
    vigie.start();
    wait_release(&vigie, "sales", "Verifying", T);
    assert_eq!(vigie.verdict("sales", GOOD, "success"), 202);
    wait_release(&vigie, "sales", "Validated", T);
    let mut ours = Vec::new();
    for round in 0..ROUNDS {
        // Each round a new red SHA: the same image under another tag.
        let sha = format!("{:0>40}", format!("c3{round}"));
        docker(&["tag", &red, &format!("vigie-dagster-sales:{sha}")]);
        vigie.write("sales.yaml", &release_in(ENV, "sales", &sha));
        wait_for_sha(&vigie, "sales", &sha, "Verifying", T);
        while serves_orders(&web.url, "sales") {
            std::thread::sleep(Duration::from_millis(100));
        }
        let start = Instant::now();
        assert_eq!(vigie.verdict("sales", &sha, "failure"), 202);
        while !serves_orders(&web.url, "sales") {
            assert!(start.elapsed() < T, "never served again:\n{}", vigie.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        ours.push(start.elapsed());
        wait_release(&vigie, "sales", "RolledBack", T);
        // Back to the validated SHA for the next round.
        vigie.write("sales.yaml", &release_in(ENV, "sales", GOOD));
        wait_release(&vigie, "sales", "Validated", T);
    }
    let (raw, by_hand, engine, ours) = (median(raw), median(by_hand), median(engine), median(ours));
    println!(
        "    raw reloadRepositoryLocation (code server up)      : {}",
        secs(raw)
    );
    println!(
        "    by hand: stop red, start kept good, reload until good: {}",
        secs(by_hand)
    );
    println!(
        "      of which docker stop + docker start               : {}",
        secs(engine)
    );
    println!(
        "    vigie run: red verdict → good definitions served   : {}",
        secs(ours)
    );
    println!(
        "    ratio to by hand                                    : {:.2}×",
        ours.as_secs_f64() / by_hand.as_secs_f64()
    );
    println!(
        "    ratio to a raw reload                               : {:.2}×",
        ours.as_secs_f64() / raw.as_secs_f64()
    );
}

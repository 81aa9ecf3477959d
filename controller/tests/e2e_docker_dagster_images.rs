//! End to end on the real Docker engine, real Dagster from PyPI (images built locally by
//! `e2e/dagster.sh`): the harness in `dagster/` serves a code location, lists it through
//! the webserver's GraphQL, and sees a SHA whose module raises at import fail to load.

mod dagster;
mod docker;
mod skip;

use std::time::Duration;

use dagster::{
    Location, Webserver, code_server, create_network, location_image, locations,
    reload_until_reachable, work_dir, write_workspace,
};

const GOOD: &str = r#"import dagster as dg


@dg.asset
def raw_orders():
    return [1, 2, 3]


@dg.asset
def order_count(raw_orders):
    return len(raw_orders)


orders_job = dg.define_asset_job("orders_job", selection="*")

defs = dg.Definitions(assets=[raw_orders, order_count], jobs=[orders_job])
"#;

const BAD: &str = r#"import dagster as dg

raise RuntimeError("vigie-dagster smoke: the bad SHA breaks at import")
"#;

const GOOD_SHA: &str = "1111111111111111111111111111111111111111";
const BAD_SHA: &str = "2222222222222222222222222222222222222222";

#[test]
fn a_location_loads_then_a_sha_raising_at_import_is_a_python_error() {
    if !docker::docker_available() {
        return;
    }
    let good = location_image("smoke", GOOD_SHA, &[("shop/__init__.py", GOOD)]);
    let bad = location_image("smoke", BAD_SHA, &[("shop/__init__.py", BAD)]);
    let network = create_network("vigie-dagster-smoke");
    let workspace = work_dir("smoke").join("workspace.yaml");
    write_workspace(&workspace, &[("shop", "shop")]);

    let server = code_server(&network, "shop", &good, "shop");
    let web = Webserver::start(&network, &workspace);
    let loaded = reload_until_reachable(&web.url, "shop", Duration::from_secs(30));
    let expected = Location {
        name: "shop".into(),
        status: "LOADED".into(),
        definitions: Ok(vec![
            "order_count".into(),
            "raw_orders".into(),
            "orders_job".into(),
        ]),
    };
    assert_eq!(loaded, expected);
    assert_eq!(locations(&web.url), vec![expected]);

    // The bad SHA replaces the good one under the same alias.
    drop(server);
    let server = code_server(&network, "shop", &bad, "shop");
    let failed = reload_until_reachable(&web.url, "shop", Duration::from_secs(30));
    assert_eq!(failed.status, "LOADED", "a failed load is LOADED too");
    let error = failed.definitions.unwrap_err();
    assert!(
        error.contains("RuntimeError: vigie-dagster smoke: the bad SHA breaks at import"),
        "{error}"
    );
    assert!(
        server.running(),
        "the code server outlives the import error"
    );
    assert_eq!(locations(&web.url)[0].definitions, Err(error));
}

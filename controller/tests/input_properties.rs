//! Fuzzing by properties: what anyone can hand Vigie — manifest files and directory
//! trees, webhook deliveries signed or not — never makes it panic, never makes one
//! input allocate more than a bound, and always ends with an answer.
//!
//! Inputs are generated three ways: soups of YAML and JSON fragments chosen to reach
//! anchors, aliases, tags, documents and every field the loader knows; mutations of
//! the real examples and of provider payloads; random bytes. Every allocation of the
//! process is counted (a counting global allocator) while a case runs, so "bounded
//! memory" is measured, not assumed.
//!
//! `VIGIE_FUZZ_CASES` sets the cases of every property (by default a few hundred,
//! under a minute in all; `make fuzz` runs 5,000 each, optimised).

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use std::fmt::Write as _;

use proptest::prelude::*;
use vigie::{
    api::code_location::CiSpec,
    ci::webhook,
    http::server::{Shared, router},
    manifest,
};

// ----- memory: a counting global allocator -----

#[global_allocator]
static ALLOCATOR: peak_alloc::PeakAlloc = peak_alloc::PeakAlloc;

/// What one input may make Vigie hold at once, above what was held before.
const MEMORY_BOUND: usize = 64 << 20;

/// Runs `f` and returns its result with the most the process held at once during it,
/// above the start. Measured regions take turns, so that the tests of this binary,
/// which run on parallel threads, do not count each other's allocations.
fn peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = TURN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let start = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    let out = f();
    (out, ALLOCATOR.peak_usage().saturating_sub(start))
}

/// `default` cases, or `VIGIE_FUZZ_CASES` when set.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("VIGIE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ----- manifests -----

const EXAMPLES: [(&str, &str); 9] = [
    ("vm/app.yaml", include_str!("../../examples/vm/app.yaml")),
    (
        "vm/environments.yaml",
        include_str!("../../examples/vm/environments.yaml"),
    ),
    (
        "vm/releases.yaml",
        include_str!("../../examples/vm/releases.yaml"),
    ),
    (
        "data-platform/environments.yaml",
        include_str!("../../examples/data-platform/environments.yaml"),
    ),
    (
        "data-platform/location-agaj.yaml",
        include_str!("../../examples/data-platform/location-agaj.yaml"),
    ),
    (
        "data-platform/location-ags.yaml",
        include_str!("../../examples/data-platform/location-ags.yaml"),
    ),
    (
        "data-platform/location-data-platform.yaml",
        include_str!("../../examples/data-platform/location-data-platform.yaml"),
    ),
    (
        "demo/environments.yaml",
        include_str!("../../examples/demo/environments.yaml"),
    ),
    (
        "kubernetes/web.yaml",
        include_str!("../../examples/kubernetes/web.yaml"),
    ),
];

/// Pieces of YAML that reach the loader's corners.
const YAML_PIECES: &[&str] = &[
    "apiVersion: vigie.dev/v1alpha1\n",
    "apiVersion: v1\n",
    "kind: Environment\n",
    "kind: CodeLocation\n",
    "kind: Release\n",
    "kind: \"\"\n",
    "metadata: {name: app}\n",
    "metadata: {name: app, namespace: Ünïcode}\n",
    "metadata:\n  name: x\n  namespace: apps\n",
    "spec:\n",
    "  backend: {docker: {}}\n",
    "  backend: {docker: {host: \"tcp://127.0.0.1:9\", tls: {}}}\n",
    "  codeLocation: app\n  environment: preprod\n",
    "  revision: main\n",
    "  revision: \"1111111111111111111111111111111111111111\"\n",
    "  promotion: {from: preprod, approval: ValidatedOnly}\n",
    "  ci: {webhook: {}}\n",
    "  ci: {github: {repository: o/r}, requiredChecks: [\"t*\"]}\n",
    "  artifact: {image: {template: \"app:{sha}\"}}\n",
    "  windows: [{days: [Mon], from: \"09:00\", to: \"18:00\", timeZone: Europe/Paris}]\n",
    "  verification: {timeout: 10m}\n",
    "status: {}\n",
    "a: &a [x, y, z]\n",
    "b: &b {k: *a, l: *a, m: *a}\n",
    "c: [*b, *b, *b, *b, *b, *b, *b, *b]\n",
    "<<: *b\n",
    "d: *a\n",
    "e: !Tag {f: 1}\n",
    "g: !!binary aGVsbG8=\n",
    "h: !!int \"12\"\n",
    "? [complex, key]\n: value\n",
    "1: integer key\n",
    "null: ~\n",
    "~: tilde key\n",
    "f: 1e999\n",
    "f: -.inf\n",
    "f: 0x7FFFFFFFFFFFFFFFFFFF\n",
    "s: |\n  block\n  text\n",
    "s: >-\n  folded\n",
    "s: 'single ''quoted'''\n",
    "s: \"\\u0000\\uD800\"\n",
    "- item\n",
    "- [nested, [deeper, [deepest]]]\n",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "{{{{{{{{{{{{{{{{",
    "}}}}}}}}}}}}}}}}",
    "---\n",
    "...\n",
    "%YAML 1.2\n---\n",
    "%TAG ! tag:example.com,2000:\n---\n",
    "\u{feff}",
    "\t",
    "  ",
    "\n",
    "# comment\n",
    ": ",
    "- ",
    ",",
    "'",
    "\"",
    "&",
    "*",
    "!",
    "|",
    "@",
    "`",
    "é",
    "\u{0}",
    "\r\n",
];

fn yaml_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(YAML_PIECES), 0..120).prop_map(|v| v.concat())
}

#[derive(Clone, Debug)]
enum Edit {
    Insert(prop::sample::Index, &'static str),
    Delete(prop::sample::Index, usize),
    Byte(prop::sample::Index, u8),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (
            any::<prop::sample::Index>(),
            prop::sample::select(YAML_PIECES)
        )
            .prop_map(|(i, p)| Edit::Insert(i, p)),
        (any::<prop::sample::Index>(), 1usize..40).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Byte(i, b)),
    ];
    prop::collection::vec(edit, 1..8)
}

/// `text` with `edits` applied, byte-wise (the result may not be UTF-8).
fn mutate(text: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut bytes = text.to_vec();
    for edit in edits {
        let at = |i: &prop::sample::Index| i.index(bytes.len() + 1);
        match edit {
            Edit::Insert(i, piece) => {
                let at = at(i);
                bytes.splice(at..at, piece.bytes());
            }
            Edit::Delete(i, n) => {
                let at = at(i).min(bytes.len());
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Edit::Byte(i, b) => {
                if !bytes.is_empty() {
                    let at = i.index(bytes.len());
                    bytes[at] = *b;
                }
            }
        }
    }
    bytes
}

/// Loads `text` as one file and checks what every load must satisfy.
fn load_checked(text: &str) -> Result<(), TestCaseError> {
    let file = PathBuf::from("fuzz.yaml");
    let sources = [(file.clone(), text.to_owned())];
    let (report, held) = peak(|| manifest::load_sources(&sources));
    prop_assert!(
        held < MEMORY_BOUND,
        "{} MiB held for {} bytes of YAML",
        held >> 20,
        text.len()
    );
    for problem in &report.problems {
        prop_assert_eq!(&problem.file, &file);
        prop_assert!(!problem.to_string().is_empty());
    }
    // The same bytes give the same outcome.
    let again = manifest::load_sources(&sources);
    prop_assert_eq!(&report.fingerprint, &again.fingerprint);
    prop_assert_eq!(report.problems, again.problems);
    Ok(())
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn yaml_soups_load_without_panic_in_bounded_memory(text in yaml_soup()) {
        load_checked(&text)?;
    }

    #[test]
    fn mutated_examples_load_without_panic_in_bounded_memory(
        example in prop::sample::select(&EXAMPLES[..]),
        edits in edits(),
    ) {
        let bytes = mutate(example.1.as_bytes(), &edits);
        load_checked(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn random_bytes_load_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        load_checked(&String::from_utf8_lossy(&bytes))?;
    }
}

proptest! {
    // Each case walks up to the 2 MiB bound twice: fewer cases.
    #![proptest_config(config(60))]

    #[test]
    fn nested_aliases_load_in_bounded_memory(
        levels in 1usize..9,
        width in 2usize..12,
        kind in prop::sample::select(vec!["Environment", "Release", "CodeLocation"]),
    ) {
        // "Billion laughs": each level lists the one below `width` times.
        let mut text = format!(
            "apiVersion: vigie.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: laughs}}\nspec:\n  l0: &l0 [{}]\n",
            vec!["lol"; width].join(", ")
        );
        for level in 1..=levels {
            let below = vec![format!("*l{}", level - 1); width].join(", ");
            let _ = writeln!(text, "  l{level}: &l{level} [{below}]");
        }
        load_checked(&text)?;
    }
}

// ----- manifest directories -----

#[derive(Clone, Debug)]
enum Entry {
    Dir(&'static str),
    File(&'static str, usize),
    Link(&'static str, &'static str),
}

const NAMES: &[&str] = &[
    "a",
    "b",
    "a/c",
    "b/d",
    "a/c/e",
    "x.yaml",
    "a/y.yml",
    "b/d/z.yaml",
];
const TARGETS: &[&str] = &[".", "..", "../..", "a", "b", "../a", "x.yaml", "missing"];

fn trees() -> impl Strategy<Value = Vec<Entry>> {
    let entry = prop_oneof![
        prop::sample::select(NAMES).prop_map(Entry::Dir),
        (prop::sample::select(NAMES), 0..EXAMPLES.len()).prop_map(|(n, e)| Entry::File(n, e)),
        (prop::sample::select(NAMES), prop::sample::select(TARGETS))
            .prop_map(|(n, t)| Entry::Link(n, t)),
    ];
    prop::collection::vec(entry, 0..12)
}

proptest! {
    #![proptest_config(config(40))]

    #[test]
    fn directory_trees_with_links_are_walked_once_and_end(tree in trees()) {
        let root = tempdir();
        for entry in &tree {
            let _ = match entry {
                Entry::Dir(name) => std::fs::create_dir_all(root.join(name)),
                Entry::File(name, example) => {
                    let _ = std::fs::create_dir_all(root.join(name).parent().unwrap());
                    std::fs::write(root.join(name), EXAMPLES[*example].1)
                }
                Entry::Link(name, target) => {
                    let _ = std::fs::create_dir_all(root.join(name).parent().unwrap());
                    std::os::unix::fs::symlink(target, root.join(name))
                }
            };
        }
        let (report, held) = peak(|| manifest::load_paths(std::slice::from_ref(&root)));
        prop_assert!(held < MEMORY_BOUND);
        // A file is read once, whatever the links that lead to it.
        let mut seen = std::collections::BTreeSet::new();
        for file in &report.files {
            let canonical = std::fs::canonicalize(file).unwrap_or_else(|_| file.clone());
            prop_assert!(seen.insert(canonical), "{} read twice", file.display());
        }
        prop_assert!(report.files.len() <= manifest::MAX_FILES);
        let _ = std::fs::remove_dir_all(&root);
    }
}

fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vigie-fuzz-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ----- webhooks: the whole HTTP handler, in process -----

const SECRET: &[u8] = b"fuzz-secret";
const SHA: &str = "acb5820ced9479c074f688cc328bf03f341a511d";

/// Payloads as the providers send them (trimmed to what is read, plus noise).
fn payloads() -> Vec<(&'static str, &'static str, String)> {
    vec![
        (
            "/hooks/ci",
            "",
            format!(
                r#"{{"codeLocation": "app", "sha": "{SHA}", "state": "failure", "url": "https://ci.example/1", "failedChecks": ["test"], "description": "red", "sentAt": "2026-12-02T12:00:00Z"}}"#
            ),
        ),
        (
            "/hooks/github",
            "check_run",
            format!(
                r#"{{"action": "completed", "check_run": {{"id": 4, "name": "test", "head_sha": "{SHA}", "status": "completed", "conclusion": "failure", "html_url": "https://github.com/o/r/runs/4"}}, "repository": {{"full_name": "octo/app"}}}}"#
            ),
        ),
        (
            "/hooks/github",
            "check_suite",
            format!(
                r#"{{"action": "completed", "check_suite": {{"id": 1, "head_sha": "{SHA}", "status": "completed", "conclusion": "success"}}, "repository": {{"full_name": "octo/app"}}}}"#
            ),
        ),
        (
            "/hooks/github",
            "status",
            format!(
                r#"{{"sha": "{SHA}", "state": "success", "context": "ci/test", "target_url": "https://ci.example/2", "description": "ok", "repository": {{"full_name": "octo/app"}}}}"#
            ),
        ),
        (
            "/hooks/github",
            "workflow_run",
            format!(
                r#"{{"action": "completed", "workflow_run": {{"id": 9, "name": "CI", "head_sha": "{SHA}", "status": "completed", "conclusion": "success", "html_url": "https://github.com/o/r/actions/runs/9"}}, "workflow": {{"name": "CI"}}, "repository": {{"full_name": "octo/app"}}}}"#
            ),
        ),
        (
            "/hooks/github",
            "push",
            format!(
                r#"{{"ref": "refs/heads/main", "before": "0000000000000000000000000000000000000000", "after": "{SHA}", "repository": {{"full_name": "octo/app", "clone_url": "https://github.com/octo/app.git", "html_url": "https://github.com/octo/app"}}}}"#
            ),
        ),
        (
            "/hooks/github",
            "ping",
            r#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#.to_owned(),
        ),
        (
            "/hooks/gitlab",
            "Pipeline Hook",
            format!(
                r#"{{"object_kind": "pipeline", "object_attributes": {{"id": 31, "ref": "main", "sha": "{SHA}", "status": "failed", "url": "https://gitlab.example/g/app/-/pipelines/31"}}, "project": {{"id": 7, "path_with_namespace": "group/app", "web_url": "https://gitlab.example/group/app"}}}}"#
            ),
        ),
        (
            "/hooks/gitlab",
            "Push Hook",
            format!(
                r#"{{"object_kind": "push", "ref": "refs/heads/main", "before": "0000000000000000000000000000000000000000", "after": "{SHA}", "project": {{"path_with_namespace": "group/app", "git_http_url": "https://gitlab.example/group/app.git"}}}}"#
            ),
        ),
    ]
}

/// Pieces of JSON that reach the parsers' corners.
const JSON_PIECES: &[&str] = &[
    "null",
    "true",
    "0",
    "-1",
    "1e400",
    "18446744073709551616",
    "\"\"",
    "\"x\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "[]",
    "{}",
    "[[[[[[[[",
    "]]]]",
    "{\"a\":",
    "}",
    ",",
    ":",
    "\"sha\"",
    "\"state\"",
    "\"codeLocation\"",
    "\"app\"",
    "\"success\"",
    "\"failure\"",
    "\"error\"",
    "\"pending\"",
    "\"repository\"",
    "\"full_name\"",
    "\"object_kind\"",
    "\"pipeline\"",
    "\"check_run\"",
    "\"head_sha\"",
    "\"conclusion\"",
    "\"name\"",
    "\"acb5820ced9479c074f688cc328bf03f341a511d\"",
    "\"javascript:alert(1)\"",
    " ",
    "\n",
];

/// A delivery: the route, the event header, the body, and whether it is signed with
/// the right key (else with a wrong or malformed one, or none).
#[derive(Clone, Debug)]
struct Delivery {
    route: &'static str,
    event: String,
    body: Vec<u8>,
    signed: Signing,
}

#[derive(Clone, Copy, Debug)]
enum Signing {
    Right,
    Wrong,
    Malformed,
    None,
}

fn deliveries() -> impl Strategy<Value = Delivery> {
    let seeds = payloads();
    let n = seeds.len();
    let body = prop_oneof![
        4 => (0..n, edits()).prop_map({
            let seeds = seeds.clone();
            move |(i, e)| (seeds[i].0, seeds[i].1.to_owned(), mutate(seeds[i].2.as_bytes(), &e))
        }),
        2 => (0..n, prop::collection::vec(prop::sample::select(JSON_PIECES), 0..6), any::<prop::sample::Index>())
            .prop_map({
                let seeds = seeds.clone();
                move |(i, pieces, at)| {
                    let mut body = seeds[i].2.clone().into_bytes();
                    let at = at.index(body.len() + 1);
                    body.splice(at..at, pieces.concat().into_bytes());
                    (seeds[i].0, seeds[i].1.to_owned(), body)
                }
            }),
        2 => (0..n, prop::collection::vec(prop::sample::select(JSON_PIECES), 0..60))
            .prop_map(move |(i, pieces)| (seeds[i].0, seeds[i].1.to_owned(), pieces.concat().into_bytes())),
        1 => (prop::sample::select(vec!["/hooks/ci", "/hooks/github", "/hooks/gitlab"]), ".{0,20}", prop::collection::vec(any::<u8>(), 0..256))
            .prop_map(|(r, e, b)| (r, e, b)),
    ];
    let signing = prop_oneof![
        6 => Just(Signing::Right),
        1 => Just(Signing::Wrong),
        1 => Just(Signing::Malformed),
        1 => Just(Signing::None),
    ];
    (body, signing).prop_map(|((route, event, body), signed)| Delivery {
        route,
        event,
        body,
        signed,
    })
}

/// A shared state with three code locations (generic webhook, GitHub, GitLab) whose
/// webhook secrets are all [`SECRET`].
fn shared() -> Arc<Shared> {
    let mut shared = Shared::new_in_memory(Some(SECRET.to_vec()));
    shared.resolver = Arc::new(|_, _| Ok(SECRET.to_vec()));
    let spec = |json: serde_json::Value| -> CiSpec { serde_json::from_value(json).unwrap() };
    let ci = BTreeMap::from([
        ("app".to_owned(), spec(serde_json::json!({"webhook": {}}))),
        (
            "gh".to_owned(),
            spec(serde_json::json!({"github": {
                "repository": "octo/app",
                "webhookSecret": {"file": "/nonexistent"}
            }})),
        ),
        (
            "gl".to_owned(),
            spec(serde_json::json!({"gitlab": {
                "project": "group/app",
                "webhookToken": {"file": "/nonexistent"}
            }})),
        ),
    ]);
    *shared.ci.get_mut().unwrap() = ci;
    Arc::new(shared)
}

fn request(d: &Delivery) -> http::Request<axum::body::Body> {
    let mut r = http::Request::post(d.route)
        .header("content-type", "application/json")
        .header("x-github-delivery", "fuzz-1");
    let signature = match d.signed {
        Signing::Right => Some(webhook::sign(SECRET, &d.body)),
        Signing::Wrong => Some(webhook::sign(b"not the key", &d.body)),
        Signing::Malformed => Some("sha256=zz".to_owned()),
        Signing::None => None,
    };
    match d.route {
        "/hooks/ci" => {
            if let Some(s) = signature {
                r = r.header("x-vigie-signature", s);
            }
        }
        "/hooks/github" => {
            if let Ok(event) = http::HeaderValue::from_str(&d.event) {
                r = r.header("x-github-event", event);
            }
            if let Some(s) = signature {
                r = r.header("x-hub-signature-256", s);
            }
        }
        _ => {
            if let Ok(event) = http::HeaderValue::from_str(&d.event) {
                r = r.header("x-gitlab-event", event);
            }
            match d.signed {
                Signing::Right => r = r.header("x-gitlab-token", "fuzz-secret"),
                Signing::Wrong | Signing::Malformed => r = r.header("x-gitlab-token", "nope"),
                Signing::None => {}
            }
        }
    }
    r.body(axum::body::Body::from(d.body.clone())).unwrap()
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn webhook_deliveries_are_answered_without_panic_in_bounded_memory(d in deliveries()) {
        use tower::ServiceExt;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let shared = shared();
        let (response, held) = peak(|| {
            runtime.block_on(router(shared.clone()).oneshot(request(&d)))
        });
        let status = response.unwrap().status();
        prop_assert!(held < MEMORY_BOUND, "{} MiB held", held >> 20);
        prop_assert!(
            status.is_success() || status.is_client_error(),
            "{status} for {d:?}"
        );
        if !matches!(d.signed, Signing::Right) {
            prop_assert!(
                !status.is_success(),
                "an unsigned delivery was accepted: {status} for {d:?}"
            );
            let state = shared.state.lock().unwrap();
            for location in ["app", "gh", "gl"] {
                prop_assert!(
                    state.verdicts.stored(location).is_empty(),
                    "a verdict from an unsigned delivery"
                );
            }
        }
    }

    #[test]
    fn signature_headers_never_panic(header in ".{0,100}", body in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = webhook::verify(SECRET, &body, Some(&header));
        let _ = vigie::ci::gitlab::token_matches(SECRET, Some(&header));
    }
}

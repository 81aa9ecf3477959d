//! A test that cannot run for want of a part says so. Under `make test` (which sets
//! `VIGIE_E2E_DOCKER=1`, `VIGIE_E2E_K8S=1` and `VIGIE_E2E_BROWSER=1`) that is a failure
//! carrying the install hint; otherwise (`make unit`) the test returns early and leaves
//! a line in `$VIGIE_TEST_SKIPS` for the summary of `e2e/test.sh`.

#![allow(dead_code, reason = "each test binary uses a part")]

use std::io::Write as _;

/// Skips the running test for want of what `reason` names (with how to get it); fails
/// instead when `variable` (`VIGIE_E2E_DOCKER`, `VIGIE_E2E_K8S` or `VIGIE_E2E_BROWSER`)
/// is `1`, as `make test` sets it.
pub fn skip(reason: &str, variable: &str) {
    assert!(
        std::env::var(variable).as_deref() != Ok("1"),
        "{variable}=1 (make test) but this test cannot run without {reason}"
    );
    eprintln!("skipped: {reason}");
    let Ok(path) = std::env::var("VIGIE_TEST_SKIPS") else {
        return;
    };
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| s.rsplit_once('-').map_or(s.clone(), |(b, _)| b.to_owned()))
        .unwrap_or_default();
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    // One write of the whole line: tests skipping at once append whole lines (`writeln!`
    // writes piece by piece, and their pieces interleaved).
    let line = format!("{binary}\t{test}\t{}\n", reason.replace(['\t', '\n'], " "));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

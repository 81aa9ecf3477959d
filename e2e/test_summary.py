"""One summary of a `cargo test` run, per tier: what ran, passed, failed, was skipped.

    python3 e2e/test_summary.py LOG SKIPS SECONDS

LOG is cargo's output; SKIPS the tab-separated lines (binary, test, reason) that tests
skipping for a missing part wrote; SECONDS the run's wall time. Exits 1 when a test
binary ran no summary line of its own (it crashed) or a test failed.
"""

import re
import sys
from collections import OrderedDict

TIERS = OrderedDict(
    [
        ("unit", "pure rules and modules, in the library"),
        ("property", "generated cases: lifecycle rules, manifests, webhooks"),
        ("integration", "real processes: git remotes, sshd, SMTP, HTTP receivers, gRPC servers (Dagster), vigie run"),
        ("Docker", "a real Docker engine"),
        ("Kubernetes", "a real control plane built from Go modules"),
        ("browser", "the web view in Chromium"),
    ]
)

RUNNING = re.compile(r"^\s+Running (?:unittests )?(\S+) \(.*/deps/([A-Za-z0-9_]+)-[0-9a-f]+\)")
RESULT = re.compile(
    r"^test result: (\w+)\. (\d+) passed; (\d+) failed; (\d+) ignored; (\d+) measured; (\d+) filtered out"
)
FAILED_TEST = re.compile(r"^test (\S+) \.\.\. FAILED")


def tier(source: str) -> str:
    name = source.rsplit("/", 1)[-1]
    if source.startswith("src/"):
        return "unit"
    if name.endswith("_properties.rs"):
        return "property"
    if name.startswith("e2e_docker"):
        return "Docker"
    if name.startswith("e2e_k8s"):
        return "Kubernetes"
    if name.startswith("e2e_browser"):
        return "browser"
    return "integration"


def main() -> int:
    log_path, skips_path, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    counts = {t: {"binaries": 0, "passed": 0, "failed": 0, "skipped": 0, "ignored": 0} for t in TIERS}
    binary_tier = {}
    failures = []
    crashed = []
    current = None
    with open(log_path, encoding="utf-8", errors="replace") as log:
        for line in log:
            m = RUNNING.match(line)
            if m:
                if current is not None:
                    crashed.append(current[0])
                current = (m.group(1), m.group(2))
                binary_tier[m.group(2)] = tier(m.group(1))
                counts[tier(m.group(1))]["binaries"] += 1
                continue
            m = FAILED_TEST.match(line)
            if m and current is not None:
                failures.append(f"{current[1]}::{m.group(1)}")
                continue
            m = RESULT.match(line)
            if m and current is not None:
                c = counts[tier(current[0])]
                c["passed"] += int(m.group(2))
                c["failed"] += int(m.group(3))
                c["ignored"] += int(m.group(4))
                current = None
    if current is not None:
        crashed.append(current[0])

    skips = []
    try:
        with open(skips_path, encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 3:
                    skips.append(parts)
    except FileNotFoundError:
        pass
    for binary, _, _ in skips:
        c = counts[binary_tier.get(binary, "integration")]
        # A test that skipped returned early: libtest counted it as passed.
        c["passed"] -= 1
        c["skipped"] += 1

    print()
    print(f"Summary ({seconds // 60} min {seconds % 60} s)")
    print(f"{'tier':<12}{'binaries':>9}{'run':>7}{'passed':>8}{'failed':>8}{'skipped':>9}  what they use")
    total = {"passed": 0, "failed": 0, "skipped": 0}
    for name, what in TIERS.items():
        c = counts[name]
        skipped = c["skipped"] + c["ignored"]
        run = c["passed"] + c["failed"]
        if c["binaries"] == 0:
            what = f"{what}: no tests yet"
        print(f"{name:<12}{c['binaries']:>9}{run:>7}{c['passed']:>8}{c['failed']:>8}{skipped:>9}  {what}")
        total["passed"] += c["passed"]
        total["failed"] += c["failed"]
        total["skipped"] += skipped
    for binary, test, reason in skips:
        print(f"skipped: {binary}::{test}: {reason}")
    for f in failures:
        print(f"failed: {f}")
    for c in crashed:
        print(f"crashed: {c} (no result line; see the log above)")
    failed = total["failed"] + len(crashed)
    print(f"tests: {total['passed']} passed, {failed} failed, {total['skipped']} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

//! Glob patterns for check names: `*` matches any run of characters, `?` one.

/// Whether `name` matches `pattern` as a whole.
#[must_use]
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Classic two-pointer wildcard matching with backtracking on the last `*`.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs_match_whole_names() {
        for (pattern, name, expected) in [
            ("test", "test", true),
            ("test", "tests", false),
            ("test*", "test (3.13)", true),
            ("*lint*", "ruff lint", true),
            ("build / *", "build / linux", true),
            ("build / *", "build", false),
            ("t?st", "test", true),
            ("t?st", "tst", false),
            ("*", "", true),
            ("", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
        ] {
            assert_eq!(matches(pattern, name), expected, "{pattern:?} ~ {name:?}");
        }
    }
}

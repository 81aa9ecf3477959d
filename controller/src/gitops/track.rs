//! Tracking rules, pure: which commit a branch or tag pattern moves an environment's
//! Release to, given what the remote advertises and what the Release knows.

use crate::api::Sha;

/// What a tracking rule decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Move the Release's revision to `sha` (the ref that named it, for the record).
    Move {
        /// The new commit.
        sha: Sha,
        /// The branch or tag that points to it.
        reference: String,
    },
    /// Nothing to do.
    Stay,
    /// Not followed; a person must look (the reason is reported).
    Refuse {
        /// The commit not followed.
        sha: Sha,
        /// Why.
        reason: String,
    },
}

/// What the Release knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Current<'a> {
    /// The Release's revision now, when it is a SHA.
    pub revision: Option<&'a Sha>,
    /// SHAs rolled back in that environment.
    pub quarantined: &'a [Sha],
}

/// A branch: follow its tip when it moved forward; a tip that does not descend from
/// the current revision (a force-push or a reset) is refused, as is a quarantined one.
#[must_use]
pub fn branch(branch: &str, tip: &Sha, descends: bool, current: &Current<'_>) -> Step {
    if current.revision == Some(tip) {
        return Step::Stay;
    }
    if current.quarantined.contains(tip) {
        return Step::Refuse {
            sha: tip.clone(),
            reason: format!(
                "the tip of {branch} ({}) was rolled back here and is quarantined",
                tip.short()
            ),
        };
    }
    if current.revision.is_some() && !descends {
        return Step::Refuse {
            sha: tip.clone(),
            reason: format!(
                "{branch} moved to {}, which does not descend from {}: a force-push or reset is not followed; set the revision by hand",
                tip.short(),
                current.revision.map_or("-", Sha::short)
            ),
        };
    }
    Step::Move {
        sha: tip.clone(),
        reference: branch.to_owned(),
    }
}

/// How a tag pattern is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagPattern {
    /// A glob (`v*`, `release-202?-*`).
    Glob(String),
    /// A semver range (`>=1.2.0, <2`), matched against tags read as versions (an
    /// optional leading `v`).
    Range(semver::VersionReq),
}

/// Reads a `track[].tags` value: a semver range when it starts with a comparison
/// operator (`>`, `<`, `=`, `^`, `~`), else a glob.
///
/// # Errors
/// A range that does not parse.
pub fn tag_pattern(s: &str) -> Result<TagPattern, NotARange> {
    let t = s.trim();
    if t.starts_with(['>', '<', '=', '^', '~']) {
        semver::VersionReq::parse(t)
            .map(TagPattern::Range)
            .map_err(|source| NotARange {
                value: s.to_owned(),
                source,
            })
    } else {
        Ok(TagPattern::Glob(t.to_owned()))
    }
}

/// A `track[].tags` value that starts like a semver range and is not one.
#[derive(Debug, thiserror::Error)]
#[error("{value:?} is not a semver range: {source}")]
pub struct NotARange {
    /// The value.
    pub value: String,
    /// Why.
    #[source]
    pub source: semver::Error,
}

fn version(tag: &str) -> Option<semver::Version> {
    semver::Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

/// The newest tag matching: by semver when tags read as versions (pre-releases only
/// when the range names one), else by name. `tags` are `(name, peeled commit)`.
#[must_use]
pub fn newest_tag<'a>(
    pattern: &TagPattern,
    tags: &'a [(String, Sha)],
) -> Option<&'a (String, Sha)> {
    let matching = tags.iter().filter(|(name, _)| match pattern {
        TagPattern::Glob(g) => crate::ci::glob::matches(g, name),
        TagPattern::Range(r) => version(name).is_some_and(|v| r.matches(&v)),
    });
    matching.max_by(|(a, _), (b, _)| match (version(a), version(b)) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Some(_), None) => std::cmp::Ordering::Greater,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (None, None) => a.cmp(b),
    })
}

/// A tag pattern: move to the newest matching tag's commit, unless it is quarantined.
#[must_use]
pub fn tags(pattern: &TagPattern, tags: &[(String, Sha)], current: &Current<'_>) -> Step {
    let Some((name, sha)) = newest_tag(pattern, tags) else {
        return Step::Stay;
    };
    if current.revision == Some(sha) {
        return Step::Stay;
    }
    if current.quarantined.contains(sha) {
        return Step::Refuse {
            sha: sha.clone(),
            reason: format!(
                "tag {name} ({}) was rolled back here and is quarantined",
                sha.short()
            ),
        };
    }
    Step::Move {
        sha: sha.clone(),
        reference: name.clone(),
    }
}

/// Who may set a Release's revision when a tracking rule moves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// Vigie: the Release in the API, or the state's overlay of a manifest file.
    Vigie,
    /// Git only (the manifests repository is the source of truth): the move is
    /// committed there when write-back of tracked updates is on, else only reported.
    Git {
        /// Whether `--write-back` includes `tracking`.
        write_back: bool,
    },
}

/// Why a tracking step is reported instead of carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The rule refuses the commit (a force-push, a quarantined SHA).
    NotFollowed,
    /// The commit would be followed, but git holds the revision and write-back is off.
    NotApplied,
}

/// What to do with one Release's tracking step: the one plan of both modes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    Stay,
    /// Set the revision to `sha`.
    Move {
        /// The commit.
        sha: Sha,
        /// The branch or tag that names it.
        reference: String,
    },
    /// Commit the revision `sha` to the manifests repository.
    WriteBack {
        /// The commit.
        sha: Sha,
        /// The branch or tag that names it.
        reference: String,
    },
    /// Tell people why nothing moves (once per reason).
    Report {
        /// Which kind of refusal.
        refusal: Refusal,
        /// Why, for a person.
        reason: String,
    },
}

/// Plans a step for a Release whose revision `holder` holds.
#[must_use]
pub fn plan(step: Step, holder: Holder) -> Action {
    match (step, holder) {
        (Step::Stay, _) => Action::Stay,
        (Step::Refuse { reason, .. }, _) => Action::Report {
            refusal: Refusal::NotFollowed,
            reason,
        },
        (Step::Move { sha, reference }, Holder::Vigie) => Action::Move { sha, reference },
        (Step::Move { sha, reference }, Holder::Git { write_back: true }) => {
            Action::WriteBack { sha, reference }
        }
        (Step::Move { sha, reference }, Holder::Git { write_back: false }) => Action::Report {
            refusal: Refusal::NotApplied,
            reason: format!(
                "{reference} is at {}, but git holds this Release's revision: commit it to the manifests repository, or turn on --write-back=tracking",
                sha.short()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_is_planned_by_who_holds_the_revision() {
        let a = sha('a');
        let step = || Step::Move {
            sha: a.clone(),
            reference: "main".into(),
        };
        assert_eq!(
            plan(step(), Holder::Vigie),
            Action::Move {
                sha: a.clone(),
                reference: "main".into()
            }
        );
        assert_eq!(
            plan(step(), Holder::Git { write_back: true }),
            Action::WriteBack {
                sha: a.clone(),
                reference: "main".into()
            }
        );
        let Action::Report { refusal, reason } = plan(step(), Holder::Git { write_back: false })
        else {
            panic!("reported")
        };
        assert_eq!(refusal, Refusal::NotApplied);
        assert!(reason.contains("--write-back=tracking"), "{reason}");
        for holder in [
            Holder::Vigie,
            Holder::Git { write_back: true },
            Holder::Git { write_back: false },
        ] {
            assert_eq!(plan(Step::Stay, holder), Action::Stay);
            assert_eq!(
                plan(
                    Step::Refuse {
                        sha: a.clone(),
                        reason: "no".into()
                    },
                    holder
                ),
                Action::Report {
                    refusal: Refusal::NotFollowed,
                    reason: "no".into()
                }
            );
        }
    }

    fn sha(c: char) -> Sha {
        std::iter::repeat_n(c, 40)
            .collect::<String>()
            .parse()
            .unwrap()
    }

    #[test]
    fn a_branch_is_followed_forward_only() {
        let (a, b) = (sha('a'), sha('b'));
        let none = Current::default();
        assert_eq!(
            branch("main", &a, false, &none),
            Step::Move {
                sha: a.clone(),
                reference: "main".into()
            },
            "nothing yet: the tip, whatever its history"
        );
        let at_a = Current {
            revision: Some(&a),
            quarantined: &[],
        };
        assert_eq!(branch("main", &a, true, &at_a), Step::Stay);
        assert_eq!(
            branch("main", &b, true, &at_a),
            Step::Move {
                sha: b.clone(),
                reference: "main".into()
            }
        );
        let Step::Refuse { reason, .. } = branch("main", &b, false, &at_a) else {
            panic!("a force-push must be refused")
        };
        assert!(reason.contains("does not descend from aaaaaaa"), "{reason}");
        let q = [b.clone()];
        let quarantined = Current {
            revision: Some(&a),
            quarantined: &q,
        };
        let Step::Refuse { reason, .. } = branch("main", &b, true, &quarantined) else {
            panic!("a quarantined tip must be refused")
        };
        assert!(reason.contains("quarantined"), "{reason}");
    }

    fn t(name: &str, c: char) -> (String, Sha) {
        (name.into(), sha(c))
    }

    #[test]
    fn the_newest_matching_tag_wins() {
        let all = [
            t("v1.2.0", 'a'),
            t("v1.10.0", 'b'),
            t("v1.9.3", 'c'),
            t("v2.0.0-rc.1", 'd'),
            t("latest", 'e'),
            t("v2.0.0", 'f'),
        ];
        let glob = tag_pattern("v1.*").unwrap();
        assert_eq!(
            newest_tag(&glob, &all).unwrap().0,
            "v1.10.0",
            "semver order, not by name"
        );
        let range = tag_pattern(">=1.2, <2").unwrap();
        assert_eq!(newest_tag(&range, &all).unwrap().0, "v1.10.0");
        let any = tag_pattern("v*").unwrap();
        assert_eq!(newest_tag(&any, &all).unwrap().0, "v2.0.0");
        let pre = tag_pattern(">=2.0.0-rc.0, <2.0.0").unwrap();
        assert_eq!(newest_tag(&pre, &all).unwrap().0, "v2.0.0-rc.1");
        assert!(newest_tag(&tag_pattern("release-*").unwrap(), &all).is_none());
        assert!(tag_pattern(">= banana").is_err());
    }

    #[test]
    fn a_tag_rule_moves_to_the_newest_tag_unless_quarantined() {
        let all = [t("v1.0.0", 'a'), t("v1.1.0", 'b')];
        let p = tag_pattern("v*").unwrap();
        let a = sha('a');
        assert_eq!(
            tags(
                &p,
                &all,
                &Current {
                    revision: Some(&a),
                    quarantined: &[]
                }
            ),
            Step::Move {
                sha: sha('b'),
                reference: "v1.1.0".into()
            }
        );
        let b = sha('b');
        assert_eq!(
            tags(
                &p,
                &all,
                &Current {
                    revision: Some(&b),
                    quarantined: &[]
                }
            ),
            Step::Stay
        );
        let q = [sha('b')];
        assert!(matches!(
            tags(
                &p,
                &all,
                &Current {
                    revision: Some(&a),
                    quarantined: &q
                }
            ),
            Step::Refuse { .. }
        ));
        assert_eq!(
            tags(&tag_pattern("x*").unwrap(), &all, &Current::default()),
            Step::Stay
        );
    }
}

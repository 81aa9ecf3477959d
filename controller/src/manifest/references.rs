//! Checks only the whole set can tell: references between objects, promotion cycles,
//! one Release per location and environment, time zones and unique hook names.

use std::collections::{BTreeMap, BTreeSet};

use super::{Key, Loaded, Manifests, Problem};
use crate::{
    api::{code_location::Artifact, environment::Strategy},
    lifecycle::windows::Windows,
};

fn problem<T>(loaded: &Loaded<T>, object: String, path: &str, message: String) -> Problem {
    Problem {
        file: loaded.origin.file.clone(),
        document: loaded.origin.document,
        object: Some(object),
        path: path.to_owned(),
        message,
    }
}

/// Appends every cross-object problem of `m` to `out`.
pub(super) fn check(m: &Manifests, out: &mut Vec<Problem>) {
    check_releases(m, out);
    check_environments(m, out);
    check_code_locations(m, out);
}

fn check_releases(m: &Manifests, out: &mut Vec<Problem>) {
    let mut pairs: BTreeMap<(String, String, String), &str> = BTreeMap::new();
    for ((ns, name), loaded) in &m.releases {
        let spec = &loaded.object.spec;
        let label = format!("Release/{name}");
        let location_key = (ns.clone(), spec.code_location.clone());
        if !m.code_locations.contains_key(&location_key)
            && !m.is_invalid("CodeLocation", &location_key)
        {
            out.push(problem(
                loaded,
                label.clone(),
                "spec.codeLocation",
                format!(
                    "CodeLocation {:?} is not defined in namespace {ns}",
                    spec.code_location
                ),
            ));
        }
        let env_key = (ns.clone(), spec.environment.clone());
        match m.environments.get(&env_key) {
            None if m.is_invalid("Environment", &env_key) => {}
            None => out.push(problem(
                loaded,
                label.clone(),
                "spec.environment",
                format!(
                    "Environment {:?} is not defined in namespace {ns}",
                    spec.environment
                ),
            )),
            Some(env) => {
                if spec.deployment.is_some()
                    && !matches!(
                        env.object.spec.backend,
                        crate::api::environment::Backend::Kubernetes(_)
                    )
                {
                    out.push(problem(
                        loaded,
                        label.clone(),
                        "spec.deployment",
                        format!(
                            "an existing Deployment applies to Kubernetes backends only; Environment {:?} runs on Docker",
                            spec.environment
                        ),
                    ));
                }
                if let Some(from) = env.object.spec.promotion.as_ref().map(|p| &p.from) {
                    let upstream_has_release = m.releases.iter().any(|((rns, _), r)| {
                        rns == ns
                            && r.object.spec.environment == *from
                            && r.object.spec.code_location == spec.code_location
                    });
                    if env.object.spec.strategy == Strategy::ValidatedOnly && !upstream_has_release
                    {
                        out.push(problem(
                            loaded,
                            label.clone(),
                            "spec.environment",
                            format!(
                                "Environment {:?} accepts only SHAs validated in {from:?}, which has no Release of CodeLocation {:?}",
                                spec.environment, spec.code_location
                            ),
                        ));
                    }
                }
            }
        }
        let pair = (
            ns.clone(),
            spec.code_location.clone(),
            spec.environment.clone(),
        );
        if let Some(first) = pairs.get(&pair) {
            out.push(problem(
                loaded,
                label,
                "spec",
                format!(
                    "Release/{first} already binds CodeLocation {:?} to Environment {:?}",
                    spec.code_location, spec.environment
                ),
            ));
        } else {
            pairs.insert(pair, name);
        }
    }
}

fn check_environments(m: &Manifests, out: &mut Vec<Problem>) {
    for ((ns, name), loaded) in &m.environments {
        let spec = &loaded.object.spec;
        let label = format!("Environment/{name}");
        if let Some(promotion) = &spec.promotion {
            let from_key: Key = (ns.clone(), promotion.from.clone());
            if promotion.from == *name {
                out.push(problem(
                    loaded,
                    label.clone(),
                    "spec.promotion.from",
                    "an environment cannot promote from itself".into(),
                ));
            } else if !m.environments.contains_key(&from_key)
                && !m.is_invalid("Environment", &from_key)
            {
                out.push(problem(
                    loaded,
                    label.clone(),
                    "spec.promotion.from",
                    format!(
                        "Environment {:?} is not defined in namespace {ns}",
                        promotion.from
                    ),
                ));
            } else if let Some(cycle) = promotion_cycle(m, ns, name) {
                out.push(problem(
                    loaded,
                    label.clone(),
                    "spec.promotion.from",
                    format!("promotion cycle: {}", cycle.join(" <- ")),
                ));
            }
        }
        if let Some(windows) = &spec.windows
            && let Err(e) = Windows::new(windows)
        {
            out.push(problem(
                loaded,
                label.clone(),
                &format!("spec.windows.{}", e.field()),
                e.to_string(),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, hook) in spec
            .hooks
            .pre_deploy
            .iter()
            .chain(&spec.hooks.post_deploy)
            .enumerate()
        {
            if !seen.insert(&hook.name) {
                let list = if i < spec.hooks.pre_deploy.len() {
                    "preDeploy"
                } else {
                    "postDeploy"
                };
                let index = if i < spec.hooks.pre_deploy.len() {
                    i
                } else {
                    i - spec.hooks.pre_deploy.len()
                };
                out.push(problem(
                    loaded,
                    label.clone(),
                    &format!("spec.hooks.{list}[{index}].name"),
                    format!("hook name {:?} is used twice", hook.name),
                ));
            }
        }
    }
}

/// The chain `name <- from <- … <- name` when following `promotion.from` comes back to `name`.
fn promotion_cycle(m: &Manifests, ns: &str, start: &str) -> Option<Vec<String>> {
    let mut chain = vec![start.to_owned()];
    let mut current = start.to_owned();
    while let Some(env) = m.environments.get(&(ns.to_owned(), current.clone())) {
        let from = env.object.spec.promotion.as_ref()?.from.clone();
        chain.push(from.clone());
        if from == start {
            return Some(chain);
        }
        if chain[..chain.len() - 1].contains(&from) {
            // A cycle that does not include `start`: reported on its own members.
            return None;
        }
        current = from;
    }
    None
}

fn check_code_locations(m: &Manifests, out: &mut Vec<Problem>) {
    for ((ns, name), loaded) in &m.code_locations {
        let label = format!("CodeLocation/{name}");
        if let Artifact::GitCheckout(g) = &loaded.object.spec.artifact {
            let environments: BTreeSet<&String> = m
                .releases
                .iter()
                .filter(|((rns, _), r)| rns == ns && &r.object.spec.code_location == name)
                .map(|(_, r)| &r.object.spec.environment)
                .collect();
            if !g.path.contains("{environment}") && environments.len() > 1 {
                let listed: Vec<&str> = environments.iter().map(|e| e.as_str()).collect();
                out.push(problem(
                    loaded,
                    label.clone(),
                    "spec.artifact.gitCheckout.path",
                    format!(
                        "one working tree would be shared by environments {}: put {{environment}} in the path",
                        listed.join(", ")
                    ),
                ));
            }
        }
        for (i, rule) in loaded.object.spec.track.iter().enumerate() {
            let key = (ns.clone(), rule.environment.clone());
            if !m.environments.contains_key(&key) && !m.is_invalid("Environment", &key) {
                out.push(problem(
                    loaded,
                    label.clone(),
                    &format!("spec.track[{i}].environment"),
                    format!(
                        "Environment {:?} is not defined in namespace {ns}",
                        rule.environment
                    ),
                ));
            }
        }
    }
}

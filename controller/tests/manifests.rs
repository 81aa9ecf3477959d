//! Manifests outside Kubernetes: the examples validate, malformed manifests are
//! reported with file, document and field, every problem listed; the checked-in CRDs
//! equal what the code generates; the lifecycle core stays free of I/O crates.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use vigie::manifest::{self, Problem};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn vigie(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn problems(yaml: &str) -> Vec<String> {
    let report = manifest::load_sources(&[(PathBuf::from("test.yaml"), yaml.to_owned())]);
    report.problems.iter().map(Problem::to_string).collect()
}

const GOOD: &str = r"
apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {name: preprod}
spec:
  backend: {docker: {}}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {name: app}
spec:
  repo: {url: https://git.example/app.git}
  ci: {webhook: {}}
  artifact: {image: {template: 'registry.example/app:{sha}'}}
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {name: app-preprod}
spec: {codeLocation: app, environment: preprod, revision: main}
";

#[test]
fn both_example_folders_validate() {
    for dir in [
        "examples/vm",
        "examples/data-platform",
        "examples/dagster/docker",
        "examples/dagster/kubernetes",
    ] {
        let (code, out, err) = vigie(&["validate", dir]);
        assert_eq!(code, 0, "{dir}: {out}{err}");
        assert!(out.trim_end().ends_with("all valid"), "{out}");
        assert_eq!(out.lines().count(), 1, "one summary line: {out}");
    }
}

#[test]
fn a_valid_set_loads_into_the_typed_resources() {
    let report = manifest::load_sources(&[(PathBuf::from("set.yaml"), GOOD.to_owned())]);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let m = report.manifests;
    assert_eq!(
        (
            m.environments.len(),
            m.code_locations.len(),
            m.releases.len()
        ),
        (1, 1, 1)
    );
    let env = &m.environments[&("default".into(), "preprod".into())].object;
    // Defaults applied as the API server would.
    assert_eq!(env.spec.verification.timeout.get().as_secs(), 300);
    assert_eq!(env.spec.history_limit, 50);
    let rel = &m.releases[&("default".into(), "app-preprod".into())];
    assert_eq!(rel.origin.document, 3);
}

#[test]
fn every_problem_of_a_malformed_file_is_listed_with_file_document_and_field() {
    let yaml = r"
apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {name: prod}
spec:
  backend: {docker: {host: 'tcp://h:2376'}, kubernetes: {namespace: x}}
  strategy: ValidatedOnly
  verification: {timeout: 2s, onTimeout: Maybe}
  historyLimit: 0
  stratgey: DeployFirst
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {name: r1}
spec:
  codeLocation: app
  environment: staging
  revision: 'not a sha!'
  breakGlass: {sha: abc, by: me, reason: x}
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {name: r2}
spec: {codeLocation: missing, environment: prod, revision: main}
";
    let got = problems(yaml);
    let expected = [
        "test.yaml: document 1 (Environment/prod): spec.backend: set exactly one of: docker, kubernetes",
        "test.yaml: document 1 (Environment/prod): spec.historyLimit: 0 is less than the minimum 1",
        "test.yaml: document 1 (Environment/prod): spec.stratgey: unknown field (did you mean \"strategy\"?)",
        "test.yaml: document 1 (Environment/prod): spec.verification.onTimeout: \"Maybe\" is not one of: Rollback, Keep",
        "test.yaml: document 1 (Environment/prod): spec.promotion: strategy ValidatedOnly requires promotion.from: the environment whose validated SHAs are accepted",
        "test.yaml: document 1 (Environment/prod): spec.verification.timeout: must be between 10s and 24h",
        "test.yaml: document 2 (Release/r1): spec.breakGlass.reason: must have at least 3 characters",
        "test.yaml: document 2 (Release/r1): spec.breakGlass.sha: \"abc\" does not match the pattern ^[0-9a-f]{40}$",
        "test.yaml: document 2 (Release/r1): spec.revision: \"not a sha!\" does not match the pattern ^([0-9a-f]{40}|[A-Za-z0-9_][A-Za-z0-9._/+-]{0,254})$",
        "test.yaml: document 3 (Release/r2): spec.codeLocation: CodeLocation \"missing\" is not defined in namespace default",
    ];
    assert_eq!(got, expected);
}

#[test]
fn a_github_app_replaces_a_token_and_names_the_app_once() {
    let yaml = r"
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {name: both}
spec:
  repo:
    url: https://github.com/octo/app.git
    credentials:
      token: {env: GIT_TOKEN}
      githubApp: {appId: 1, installationId: 2, privateKey: {file: /etc/vigie/app.pem}}
  ci:
    github:
      repository: octo/app
      token: {env: GITHUB_TOKEN}
      app: {appId: 1, clientId: Iv23liExample, installationId: 0, privateKey: {file: /etc/vigie/app.pem}}
  artifact: {image: {template: 'registry.example/app:{sha}'}}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {name: app}
spec:
  repo:
    url: https://github.com/octo/app.git
    credentials:
      githubApp: {clientId: Iv23liExample, installationId: 2, privateKey: {secretKeyRef: {name: app, key: private-key.pem}}}
  ci:
    github:
      repository: octo/app
      app: {appId: 1, installationId: 2, privateKey: {file: /etc/vigie/app.pem}}
  artifact: {image: {template: 'registry.example/app:{sha}'}}
";
    let got = problems(yaml);
    let expected = [
        "test.yaml: document 1 (CodeLocation/both): spec.ci.github.app.installationId: 0 is less than the minimum 1",
        "test.yaml: document 1 (CodeLocation/both): spec.ci.github.app: set either appId or clientId",
        "test.yaml: document 1 (CodeLocation/both): spec.ci.github.app: set either token or app, not both",
        "test.yaml: document 1 (CodeLocation/both): spec.repo.credentials: set exactly one of token (HTTPS), githubApp (HTTPS) or sshKey (SSH)",
    ];
    let mut got = got;
    got.sort();
    assert_eq!(got, expected);
}

#[test]
fn wrong_types_kinds_and_yaml_errors_are_named() {
    let yaml = r"
apiVersion: vigie.dev/v1
kind: Environment
metadata: {name: Bad_Name}
spec:
  backend: {docker: {}}
  historyLimit: lots
  notifications: {name: x}
---
kind: Widget
metadata: {name: w}
---
just a string
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {name: r}
spec: [1, 2
";
    let got = problems(yaml);
    assert_eq!(
        got,
        [
            "test.yaml: document 1 (Environment/Bad_Name): apiVersion: \"vigie.dev/v1\" is not vigie.dev/v1alpha1",
            "test.yaml: document 1 (Environment/Bad_Name): metadata.name: \"Bad_Name\" is not a valid name (lowercase letters, digits, '-' and '.', at most 253)",
            "test.yaml: document 1 (Environment/Bad_Name): spec.historyLimit: expected integer, got string",
            "test.yaml: document 1 (Environment/Bad_Name): spec.notifications: expected array, got object",
            "test.yaml: document 2 (Widget/w): apiVersion: required field missing",
            "test.yaml: document 2 (Widget/w): kind: unknown kind \"Widget\"; expected Environment, CodeLocation or Release",
            "test.yaml: document 3: expected a mapping with apiVersion, kind, metadata and spec",
        ]
        .iter()
        .map(ToString::to_string)
        .chain(got.iter().filter(|p| p.contains("document 4")).cloned())
        .collect::<Vec<_>>()
    );
    let yaml_error = got
        .iter()
        .find(|p| p.contains("document 4"))
        .expect("the YAML syntax error is reported");
    assert!(
        yaml_error.starts_with("test.yaml: document 4: not valid YAML:"),
        "{yaml_error}"
    );
}

#[test]
fn references_cycles_duplicates_and_time_zones() {
    let yaml = r"
apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {name: a}
spec: {backend: {docker: {}}, promotion: {from: b}, strategy: ValidatedOnly}
---
apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {name: b}
spec:
  backend: {docker: {}}
  promotion: {from: a}
  windows: {timeZone: Mars/Olympus_Mons, deny: [{from: 'Fri 16:00', to: 'Mon 08:00'}]}
---
apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {name: a}
spec: {backend: {docker: {}}}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {name: app}
spec:
  repo: {url: https://git.example/app.git}
  track: [{environment: nowhere, branch: main}]
  ci: {webhook: {}}
  artifact: {image: {template: 'registry.example/app:{sha}'}}
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {name: app-a}
spec: {codeLocation: app, environment: a}
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {name: app-a-again}
spec: {codeLocation: app, environment: a}
";
    let got = problems(yaml);
    let expected = [
        "test.yaml: document 1 (Environment/a): spec.promotion.from: promotion cycle: a <- b <- a",
        "test.yaml: document 2 (Environment/b): spec.promotion.from: promotion cycle: b <- a <- b",
        "test.yaml: document 2 (Environment/b): spec.windows.timeZone: unknown time zone \"Mars/Olympus_Mons\"",
        "test.yaml: document 3 (Environment/a): metadata.name: duplicate: Environment/a is already defined in test.yaml document 1",
        "test.yaml: document 4 (CodeLocation/app): spec.track[0].environment: Environment \"nowhere\" is not defined in namespace default",
        "test.yaml: document 5 (Release/app-a): spec.environment: Environment \"a\" accepts only SHAs validated in \"b\", which has no Release of CodeLocation \"app\"",
        "test.yaml: document 6 (Release/app-a-again): spec.environment: Environment \"a\" accepts only SHAs validated in \"b\", which has no Release of CodeLocation \"app\"",
        "test.yaml: document 6 (Release/app-a-again): spec: Release/app-a already binds CodeLocation \"app\" to Environment \"a\"",
    ];
    assert_eq!(got, expected);
}

#[test]
fn the_cli_lists_every_problem_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("vigie-validate-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    std::fs::write(dir.join("good.yaml"), GOOD).unwrap();
    std::fs::write(
        dir.join("nested/bad.yml"),
        "apiVersion: vigie.dev/v1alpha1\nkind: Release\nmetadata: {name: r}\nspec: {codeLocation: app, environment: preprod, colour: red, revision: 'a b'}\n",
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not a manifest").unwrap();
    let (code, out, err) = vigie(&["validate", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let bad = dir.join("nested/bad.yml");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!(
                "{}: document 1 (Release/r): spec.colour: unknown field",
                bad.display()
            ),
            format!(
                "{}: document 1 (Release/r): spec.revision: \"a b\" does not match the pattern ^([0-9a-f]{{40}}|[A-Za-z0-9_][A-Za-z0-9._/+-]{{0,254}})$",
                bad.display()
            ),
        ]
    );
    assert!(err.contains("2 problems found"), "{err}");
    std::fs::remove_file(&bad).unwrap();
    let (code, out, _) = vigie(&["validate", dir.to_str().unwrap()]);
    assert_eq!(
        (code, out.trim()),
        (
            0,
            "1 file: 1 Environment, 1 CodeLocation, 1 Release, all valid"
        )
    );
    let (code, out, _) = vigie(&["validate", dir.join("missing").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("cannot read"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn checked_in_crds_equal_the_generated_ones() {
    let (code, printed, _) = vigie(&["crds"]);
    assert_eq!(code, 0);
    let mut from_files = String::new();
    for (name, yaml) in vigie::api::crd_files().unwrap() {
        let on_disk = std::fs::read_to_string(root().join("crds").join(&name))
            .unwrap_or_else(|e| panic!("crds/{name}: {e}; run `make generate`"));
        assert_eq!(
            on_disk, yaml,
            "crds/{name} drifted from the code: run `make generate`"
        );
        from_files.push_str(&on_disk);
    }
    assert_eq!(printed, from_files, "`vigie crds` prints the three CRDs");
    let dir = std::fs::read_dir(root().join("crds")).unwrap().count();
    assert_eq!(dir, 3, "crds/ holds exactly the three CRDs");
}

#[test]
fn the_crds_carry_what_kubectl_shows() {
    let crds = vigie::api::crds();
    let names: Vec<_> = crds
        .iter()
        .map(|c| {
            (
                c.spec.names.kind.clone(),
                c.spec.names.short_names.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("Environment".to_owned(), vec!["env".to_owned()]),
            ("CodeLocation".to_owned(), vec!["cl".to_owned()]),
            ("Release".to_owned(), vec!["rel".to_owned()]),
        ]
    );
    for crd in &crds {
        assert_eq!(crd.spec.group, "vigie.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version.subresources.as_ref().unwrap().status.is_some(),
            "status subresource"
        );
    }
    let release = &crds[2].spec.versions[0];
    let columns: Vec<_> = release
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Location",
            "Environment",
            "Desired",
            "Deployed",
            "Validated",
            "Phase",
            "Age"
        ]
    );
    // Every property of every schema has a description (from the doc comments).
    for crd in &crds {
        let schema = serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap()).unwrap();
        let mut missing = Vec::new();
        undocumented(
            &schema["openAPIV3Schema"]["properties"]["spec"],
            "spec",
            &mut missing,
        );
        undocumented(
            &schema["openAPIV3Schema"]["properties"]["status"],
            "status",
            &mut missing,
        );
        assert!(
            missing.is_empty(),
            "{}: fields without a description: {missing:?}",
            crd.spec.names.kind
        );
    }
}

fn undocumented(schema: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
        for (name, child) in props {
            let child_path = format!("{path}.{name}");
            if child.get("description").is_none() {
                out.push(child_path.clone());
            }
            undocumented(child, &child_path, out);
        }
    }
    if let Some(items) = schema.get("items") {
        undocumented(items, &format!("{path}[]"), out);
    }
}

#[test]
fn the_lifecycle_core_imports_no_io_crate() {
    let dir = root().join("controller/src/lifecycle");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for forbidden in [
            "kube::",
            "kube_client",
            "bollard::",
            "tokio::",
            "std::fs",
            "std::net",
            "git2::",
            "SystemTime",
            "Timestamp::now",
        ] {
            assert!(
                !text.contains(forbidden),
                "{} uses {forbidden}: the lifecycle must stay pure",
                path.display()
            );
        }
    }
}

#[test]
fn a_git_checkout_tree_cannot_be_shared_by_environments() {
    let yaml = r"
apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {name: preprod}
spec: {backend: {docker: {}}}
---
apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {name: prod}
spec: {backend: {docker: {}}}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {name: app}
spec:
  repo: {url: https://git.example/app.git}
  ci: {webhook: {}}
  artifact: {gitCheckout: {path: /srv/app, image: runtime:1}}
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {name: app-preprod}
spec: {codeLocation: app, environment: preprod}
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {name: app-prod}
spec: {codeLocation: app, environment: prod}
";
    assert_eq!(
        problems(yaml),
        [
            "test.yaml: document 3 (CodeLocation/app): spec.artifact.gitCheckout.path: one working tree would be shared by environments preprod, prod: put {environment} in the path"
        ]
    );
    assert!(
        problems(&yaml.replace("path: /srv/app,", "path: '/srv/app/{environment}',")).is_empty()
    );
}

#[test]
fn an_existing_deployment_is_refused_on_a_docker_environment() {
    let yaml = r"
apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {name: vm}
spec: {backend: {docker: {}}}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {name: app}
spec:
  repo: {url: 'https://git.example/app.git'}
  ci: {webhook: {}}
  artifact: {image: {template: 'app:{sha}'}}
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {name: app-vm}
spec: {codeLocation: app, environment: vm, revision: main, deployment: {name: legacy}}
";
    assert_eq!(
        problems(yaml),
        [
            "test.yaml: document 3 (Release/app-vm): spec.deployment: an existing Deployment applies to Kubernetes backends only; Environment \"vm\" runs on Docker"
        ]
    );
}

#[test]
fn a_namespace_that_is_not_a_dns_label_is_refused() {
    for (namespace, shown) in [
        ("Apps", "\"Apps\""),
        ("équipe", "\"équipe\""),
        ("apps.team", "\"apps.team\""),
        ("-apps", "\"-apps\""),
    ] {
        let yaml = GOOD.replace(
            "metadata: {name: preprod}",
            &format!("metadata: {{name: preprod, namespace: '{namespace}'}}"),
        );
        let found = problems(&yaml);
        assert!(
            found.iter().any(|p| p.contains("metadata.namespace")
                && p.contains(&format!("{shown} is not a valid namespace"))),
            "{namespace}: {found:#?}"
        );
    }
    let long = "a".repeat(64);
    let yaml = GOOD.replace(
        "metadata: {name: preprod}",
        &format!("metadata: {{name: preprod, namespace: {long}}}"),
    );
    assert!(
        problems(&yaml)
            .iter()
            .any(|p| p.contains("metadata.namespace")),
        "64 characters"
    );
    let yaml = GOOD.replace(
        "metadata: {name: preprod}",
        "metadata: {name: preprod, namespace: 42}",
    );
    assert!(
        problems(&yaml).iter().any(
            |p| p.contains("metadata.namespace") && p.contains("expected a string, got number")
        ),
        "{:#?}",
        problems(&yaml)
    );
    // A valid one is taken.
    let ok = GOOD.replace(
        "metadata: {name: app-preprod}",
        "metadata: {name: app-preprod, namespace: team-a1}",
    );
    assert!(
        problems(&ok)
            .iter()
            .all(|p| !p.contains("metadata.namespace")),
        "{:#?}",
        problems(&ok)
    );
}

#[test]
fn a_byte_order_mark_at_the_start_of_a_file_is_not_content() {
    let with_bom = format!("\u{feff}{}", GOOD.trim_start());
    assert_eq!(problems(&with_bom), Vec::<String>::new());
}

#[test]
fn the_polling_choice_is_checked() {
    let with = |ci: &str| GOOD.replace("ci: {webhook: {}}", ci);
    let found = problems(&with(
        "ci: {github: {repository: o/app, apiUrl: 'http://127.0.0.1:9'}, polling: never}",
    ));
    assert!(
        found
            .iter()
            .any(|p| p.contains("spec.ci.polling") && p.contains("no verdict can reach Vigie")),
        "{found:#?}"
    );
    for ok in [
        "ci: {github: {repository: o/app, webhookSecret: {env: S}}, polling: never}",
        "ci: {gitlab: {project: '42', webhookToken: {env: S}}, polling: never}",
        "ci: {github: {repository: o/app}, polling: always}",
        "ci: {github: {repository: o/app, webhookSecret: {env: S}}, polling: fallback, pollFallbackAfter: 30s}",
    ] {
        assert_eq!(problems(&with(ok)), Vec::<String>::new(), "{ok}");
    }
    let found = problems(&with(
        "ci: {github: {repository: o/app}, polling: fallback, pollFallbackAfter: 2s}",
    ));
    assert!(
        found
            .iter()
            .any(|p| p.contains("pollFallbackAfter") && p.contains("between 10s and 1h")),
        "{found:#?}"
    );
    let found = problems(&with(
        "ci: {github: {repository: o/app}, polling: sometimes}",
    ));
    assert!(
        found
            .iter()
            .any(|p| p.contains("polling") && p.contains("sometimes")),
        "{found:#?}"
    );
}

#[test]
fn forge_reporting_settings_are_checked_with_the_field_named() {
    let with = |ci: &str, env: &str| {
        GOOD.replace("  ci: {webhook: {}}", &format!("  ci: {ci}"))
            .replace(
                "  backend: {docker: {}}\n",
                &format!("  backend: {{docker: {{}}}}\n{env}"),
            )
    };
    let reported =
        "{github: {repository: octo/app, report: {commitStatus: true}}, requiredChecks: [test]}";
    assert_eq!(
        problems(&with(reported, "  url: https://preprod.example.com\n")),
        Vec::<String>::new()
    );
    assert!(problems(&with("{gitlab: {project: data/app, report: {}}}", "")).is_empty());
    for ci in [
        "{github: {repository: octo/app, report: {commitStatus: true}}}",
        "{github: {repository: octo/app, report: {commitStatus: true}}, requiredChecks: ['*']}",
        "{github: {repository: octo/app, report: {commitStatus: true}}, requiredChecks: [vigie/preprod]}",
    ] {
        let found = problems(&with(ci, ""));
        assert_eq!(found.len(), 1, "{ci}: {found:?}");
        assert!(
            found[0].contains("spec.ci.requiredChecks")
                && found[0].contains("github.report.commitStatus needs requiredChecks"),
            "{found:?}"
        );
    }
    let found = problems(&with(
        "{github: {repository: octo/app, report: {deployment: true}}}",
        "  url: ftp://preprod\n",
    ));
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|p| p.contains("spec.url")), "{found:?}");
    assert!(
        found
            .iter()
            .any(|p| p.contains("spec.ci.github.report") && p.contains("deployment")),
        "{found:?}"
    );
}

#[test]
fn a_grpc_health_check_refuses_the_http_only_fields() {
    let artifact = "  artifact: {image: {template: 'registry.example/app:{sha}'}}\n";
    let with = |hc: &str| GOOD.replace(artifact, &format!("{artifact}  healthCheck: {hc}\n"));
    for ok in [
        "{grpc: {}}",
        "{grpc: {service: DagsterApi}, port: 4000, timeout: 2s, retries: 5, interval: 1s}",
        "{grpc: {service: ''}, path: /, expectedStatus: 200}",
        "{path: /health, expectedBody: ok}",
    ] {
        assert_eq!(problems(&with(ok)), Vec::<String>::new(), "{ok}");
    }
    let found = problems(&with("{grpc: {service: DagsterApi}, expectedBody: ok}"));
    assert_eq!(
        found,
        [
            "test.yaml: document 2 (CodeLocation/app): spec.healthCheck.expectedBody: expectedBody applies to HTTP checks only: a grpc check passes when the server answers SERVING"
        ]
    );
    for http_only in ["path: /health", "expectedStatus: 204"] {
        let found = problems(&with(&format!("{{grpc: {{}}, {http_only}}}")));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains(
                "spec.healthCheck.grpc: path and expectedStatus apply to HTTP checks only"
            ),
            "{found:?}"
        );
    }
    let found = problems(&with("{grpc: {service: DagsterApi, tls: true}}"));
    assert!(
        found
            .iter()
            .any(|p| p.contains("spec.healthCheck.grpc") && p.contains("tls")),
        "{found:?}"
    );
}

#[test]
fn what_the_forge_shows_is_decided_without_io() {
    let text = std::fs::read_to_string(root().join("controller/src/forge/rules.rs")).unwrap();
    for forbidden in [
        "reqwest",
        "tokio::",
        "kube::",
        "std::fs",
        "std::net",
        "Timestamp::now",
    ] {
        assert!(!text.contains(forbidden), "forge/rules.rs uses {forbidden}");
    }
}

#[test]
fn dagster_settings_are_checked_with_the_field_named() {
    let location = |dagster: &str| {
        GOOD.replace(
            "  artifact: {image: {template: 'registry.example/app:{sha}'}}",
            &format!(
                "  artifact: {{image: {{template: 'registry.example/app:{{sha}}'}}}}\n  {dagster}"
            ),
        )
    };
    let environment = |dagster: &str| {
        GOOD.replace(
            "  backend: {docker: {}}",
            &format!("  backend: {{docker: {{}}}}\n  {dagster}"),
        )
    };
    let ok = [
        location("dagster: {module: sales.definitions}"),
        location("dagster: {pythonFile: defs.py, server: Grpc, port: 4010, locationName: sales}"),
        environment(
            "dagster: {graphqlUrl: 'http://127.0.0.1:3000/graphql', workspace: {file: /srv/dagster/workspace.yaml}, network: dagster, validateDefinitions: true}",
        ),
    ];
    for yaml in &ok {
        assert_eq!(problems(yaml), Vec::<String>::new(), "{yaml}");
    }
    let refused = [
        (
            location("dagster: {module: a, pythonFile: b.py}"),
            "spec.dagster",
            "exactly one of module",
        ),
        (
            location("dagster: {}"),
            "spec.dagster",
            "exactly one of module",
        ),
        (
            location("dagster: {module: a}\n  container: {command: [python]}"),
            "spec.dagster",
            "remove container.command",
        ),
        (
            location("dagster: {module: a, server: Thrift}"),
            "spec.dagster.server",
            "Thrift",
        ),
        (
            environment(
                "dagster: {graphqlUrl: 'http://127.0.0.1:3000/graphql', workspace: {configMap: {name: ws}}}",
            ),
            "spec.dagster.workspace.configMap",
            "needs a kubernetes backend",
        ),
        (
            environment(
                "dagster: {graphqlUrl: 'http://127.0.0.1:3000/graphql', workspace: {file: /a, configMap: {name: ws}}}",
            ),
            "spec.dagster.workspace",
            "exactly one of file",
        ),
        (
            environment("dagster: {graphqlUrl: 'ftp://x', workspace: {file: /a}}"),
            "spec.dagster.graphqlUrl",
            "",
        ),
        (
            environment(
                "dagster: {graphqlUrl: 'http://h/graphql', workspace: {file: /a}, timeout: 10m}",
            ),
            "spec.dagster.timeout",
            "between 1s and 5m",
        ),
    ];
    for (yaml, field, text) in &refused {
        let found = problems(yaml);
        assert!(
            found.iter().any(|p| p.contains(field) && p.contains(text)),
            "{field} / {text}: {found:#?}"
        );
    }
}

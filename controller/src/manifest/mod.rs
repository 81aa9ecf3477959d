//! Manifests outside Kubernetes: the same YAML as `kubectl apply`, several documents
//! per file, in a directory tree, loaded into the same types and checked the way the
//! API server would (schema, CEL rules) plus what only the whole set can tell
//! (references, promotion cycles, duplicates).

mod references;
pub mod schema;
pub mod yaml;

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use kube::{CustomResourceExt, core::cel::CompiledSchema};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::{API_VERSION, CodeLocation, Environment, Release};

/// Namespace given to objects whose manifest names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// One problem in one document, printed as `FILE: document N (Kind/name): field.path: what is wrong`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub file: PathBuf,
    /// 1-based index of the YAML document in the file; 0 for a problem with the file itself.
    pub document: usize,
    /// `Kind/name` when known.
    pub object: Option<String>,
    /// Dotted path of the field; empty for a problem with the whole document.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file.display())?;
        if self.document > 0 {
            write!(f, " document {}", self.document)?;
            if let Some(object) = &self.object {
                write!(f, " ({object})")?;
            }
            f.write_str(":")?;
        }
        if !self.path.is_empty() {
            write!(f, " {}:", self.path)?;
        }
        write!(f, " {}", self.message)
    }
}

/// Where an object was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file.
    pub file: PathBuf,
    /// 1-based document index.
    pub document: usize,
}

/// An object and where it came from.
#[derive(Clone, Debug)]
pub struct Loaded<T> {
    /// The object.
    pub object: T,
    /// Its file and document.
    pub origin: Origin,
}

/// `(namespace, name)` of an object.
pub type Key = (String, String);

/// A complete, valid set of manifests.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    /// Environments by namespace and name.
    pub environments: BTreeMap<Key, Loaded<Environment>>,
    /// Code locations by namespace and name.
    pub code_locations: BTreeMap<Key, Loaded<CodeLocation>>,
    /// Releases by namespace and name.
    pub releases: BTreeMap<Key, Loaded<Release>>,
    /// `(kind, namespace, name)` of documents that failed their own checks: references
    /// to them are not reported again as references to missing objects.
    pub invalid: std::collections::BTreeSet<(String, String, String)>,
}

impl Manifests {
    /// Number of objects of all kinds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.environments.len() + self.code_locations.len() + self.releases.len()
    }

    /// Whether a document of `kind` named `key` was present but invalid.
    #[must_use]
    pub fn is_invalid(&self, kind: &str, key: &Key) -> bool {
        self.invalid
            .contains(&(kind.to_owned(), key.0.clone(), key.1.clone()))
    }

    /// Whether there is no object at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One line such as `3 files: 2 Environments, 1 CodeLocation, 2 Releases, all valid`.
    #[must_use]
    pub fn summary(&self, files: usize) -> String {
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        format!(
            "{}: {}, {}, {}, all valid",
            plural(files, "file"),
            plural(self.environments.len(), "Environment"),
            plural(self.code_locations.len(), "CodeLocation"),
            plural(self.releases.len(), "Release"),
        )
    }
}

/// Outcome of loading: the valid set, or every problem found.
#[derive(Debug)]
pub struct LoadReport {
    /// Files read.
    pub files: Vec<PathBuf>,
    /// The objects that passed every check (complete only when `problems` is empty).
    pub manifests: Manifests,
    /// Every problem, in file and document order.
    pub problems: Vec<Problem>,
    /// SHA-256 over the names and exact bytes that were parsed: equal fingerprints mean
    /// the same manifests, with no window between reading and fingerprinting.
    pub fingerprint: String,
}

impl LoadReport {
    /// The manifests when there was no problem at all, else every problem.
    pub fn into_result(self) -> Result<Manifests, Vec<Problem>> {
        if self.problems.is_empty() {
            Ok(self.manifests)
        } else {
            Err(self.problems)
        }
    }
}

/// Loads every `.yaml`/`.yml` file under `paths` (files or directories, walked in name
/// order, symbolic links followed once). A file that cannot be read (not UTF-8, too
/// large, a dangling link), a link loop or a walk past its bounds is a problem of the
/// set, and changes the fingerprint like any edit.
#[must_use]
pub fn load_paths(paths: &[PathBuf]) -> LoadReport {
    let mut walk = Walk::default();
    for path in paths {
        walk.start(path);
    }
    let Walk {
        files,
        mut problems,
        ..
    } = walk;
    let mut sources = Vec::new();
    for file in &files {
        match read_manifest(file) {
            Ok(text) => sources.push((file.clone(), text)),
            Err(e) => problems.push(file_problem(file, e.to_string())),
        }
    }
    let mut report = load_sources(&sources);
    if !problems.is_empty() {
        // What could not be read is part of what was looked at: a file that turns
        // unreadable, or a loop that appears, is a change.
        let mut digest = Sha256::new();
        digest.update(report.fingerprint.as_bytes());
        for problem in &problems {
            digest.update(problem.to_string().as_bytes());
            digest.update([0]);
        }
        report.fingerprint = hex::encode(digest.finalize());
    }
    problems.append(&mut report.problems);
    report.problems = problems;
    report.files = files;
    report
}

/// Why a manifest file was not read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "larger than {} MiB; not read (a file of manifests is a few kilobytes)",
        yaml::MAX_FILE_BYTES >> 20
    )]
    TooLarge,
    #[error("cannot read: not UTF-8 (invalid byte at offset {0}); manifests are UTF-8 text")]
    NotUtf8(usize),
}

/// The text of one manifest file, read only up to [`yaml::MAX_FILE_BYTES`].
fn read_manifest(file: &Path) -> Result<String, ReadError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(file)?
        .take(yaml::MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > yaml::MAX_FILE_BYTES {
        return Err(ReadError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|e| ReadError::NotUtf8(e.utf8_error().valid_up_to()))
}

/// Loads manifests from in-memory `(file name, YAML text)` pairs.
#[must_use]
pub fn load_sources(sources: &[(PathBuf, String)]) -> LoadReport {
    let mut manifests = Manifests::default();
    let mut problems = Vec::new();
    for (file, text) in sources {
        load_file(file, text, &mut manifests, &mut problems);
    }
    references::check(&manifests, &mut problems);
    problems.sort_by(|a, b| (&a.file, a.document).cmp(&(&b.file, b.document)));
    let mut digest = Sha256::new();
    for (file, text) in sources {
        digest.update(file.display().to_string().as_bytes());
        digest.update([0]);
        digest.update(text.as_bytes());
        digest.update([0]);
    }
    LoadReport {
        files: sources.iter().map(|(f, _)| f.clone()).collect(),
        manifests,
        problems,
        fingerprint: hex::encode(digest.finalize()),
    }
}

fn file_problem(file: &Path, message: String) -> Problem {
    Problem {
        file: file.to_owned(),
        document: 0,
        object: None,
        path: String::new(),
        message,
    }
}

/// How many directories deep a walk goes, links included.
pub const MAX_DEPTH: usize = 32;

/// How many files a walk takes at most.
pub const MAX_FILES: usize = 10_000;

/// How many directory entries a walk looks at, at most (a link to `/` stops there).
pub const MAX_ENTRIES: usize = 100_000;

/// A walk of manifest directories: each directory entered and each file taken once
/// (a link to one already seen is skipped; a link to a directory being walked is a
/// loop), bounded in depth, in files and in entries looked at.
struct Walk {
    files: Vec<PathBuf>,
    problems: Vec<Problem>,
    /// Directories entered and files taken, by device and inode.
    entered: std::collections::HashSet<(u64, u64)>,
    /// The directories from the top of the walk to the current one.
    stack: Vec<((u64, u64), PathBuf)>,
    /// Whether [`MAX_FILES`] or [`MAX_ENTRIES`] was reached (reported once).
    full: bool,
    /// Directory entries looked at.
    looked_at: usize,
    /// [`MAX_ENTRIES`], lowered by tests.
    max_entries: usize,
}

impl Default for Walk {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            problems: Vec::new(),
            entered: std::collections::HashSet::new(),
            stack: Vec::new(),
            full: false,
            looked_at: 0,
            max_entries: MAX_ENTRIES,
        }
    }
}

impl Walk {
    fn start(&mut self, path: &Path) {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => self.directory(path, &meta),
            Ok(_) => self.file(path),
            Err(e) => self
                .problems
                .push(file_problem(path, format!("cannot read: {e}"))),
        }
    }

    fn file(&mut self, path: &Path) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::metadata(path)
            && !self.entered.insert((meta.dev(), meta.ino()))
        {
            // The same file through another name (a link): read once.
            return;
        }
        if self.files.len() < MAX_FILES {
            self.files.push(path.to_owned());
        } else if !self.full {
            self.full = true;
            self.problems.push(file_problem(
                path,
                format!("more than {MAX_FILES} manifest files; the rest are not read"),
            ));
        }
    }

    fn directory(&mut self, path: &Path, meta: &std::fs::Metadata) {
        use std::os::unix::fs::MetadataExt;
        let id = (meta.dev(), meta.ino());
        if let Some((_, ancestor)) = self.stack.iter().find(|(a, _)| *a == id) {
            let message = format!(
                "symbolic link loop: leads back to {}; not followed (remove the link)",
                ancestor.display()
            );
            return self.problems.push(file_problem(path, message));
        }
        if !self.entered.insert(id) {
            // Reached before through another link: its files are read once.
            return;
        }
        if self.stack.len() >= MAX_DEPTH {
            let message = format!("more than {MAX_DEPTH} directories deep; not walked");
            return self.problems.push(file_problem(path, message));
        }
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) => {
                return self
                    .problems
                    .push(file_problem(path, format!("cannot list: {e}")));
            }
        };
        let mut children = Vec::new();
        for entry in entries {
            if self.full {
                break;
            }
            self.looked_at += 1;
            if self.looked_at > self.max_entries {
                self.full = true;
                let message = format!(
                    "more than {} directory entries looked at; the walk stops here (is there \
                     a link to a large directory?)",
                    self.max_entries
                );
                self.problems.push(file_problem(path, message));
                break;
            }
            if let Ok(entry) = entry {
                children.push(entry.path());
            }
        }
        children.sort();
        self.stack.push((id, path.to_owned()));
        for child in children {
            let hidden = child
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden || self.full {
                continue;
            }
            match std::fs::metadata(&child) {
                Ok(meta) if meta.is_dir() => self.directory(&child, &meta),
                // A dangling link named like a manifest is reported when read.
                _ if child.extension().is_some_and(|e| e == "yaml" || e == "yml") => {
                    self.file(&child);
                }
                _ => {}
            }
        }
        self.stack.pop();
    }
}

fn load_file(file: &Path, text: &str, manifests: &mut Manifests, problems: &mut Vec<Problem>) {
    // A UTF-8 byte-order mark (some Windows editors write one) is not content.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Each document is first walked with a bound on what its aliases expand to.
    let sizes = serde_norway::Deserializer::from_str(text).map(yaml::check);
    for (index, (document, size)) in serde_norway::Deserializer::from_str(text)
        .zip(sizes)
        .enumerate()
    {
        let origin = Origin {
            file: file.to_owned(),
            document: index + 1,
        };
        let problem = |object: Option<String>, path: String, message: String| Problem {
            file: origin.file.clone(),
            document: origin.document,
            object,
            path,
            message,
        };
        if let Err(e @ yaml::YamlError::TooLarge) = size {
            problems.push(problem(None, String::new(), e.to_string()));
            continue;
        }
        let value = match <serde_norway::Value as serde::Deserialize>::deserialize(document) {
            Ok(value) => value,
            Err(e) => {
                problems.push(problem(None, String::new(), format!("not valid YAML: {e}")));
                // A syntax error ends the stream: later documents cannot be located.
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        let json = match serde_json::to_value(&value) {
            Ok(json) => json,
            Err(e) => {
                problems.push(problem(
                    None,
                    String::new(),
                    format!("cannot be read as JSON: {e}"),
                ));
                continue;
            }
        };
        match check_document(&json) {
            Ok(object) => insert(object, origin, manifests, problems),
            Err(found) => {
                if let (Some(kind), Some(name)) = (
                    json.get("kind").and_then(Value::as_str),
                    json.pointer("/metadata/name").and_then(Value::as_str),
                ) {
                    let namespace = json
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or(DEFAULT_NAMESPACE);
                    manifests.invalid.insert((
                        kind.to_owned(),
                        namespace.to_owned(),
                        name.to_owned(),
                    ));
                }
                let label = object_label(&json);
                problems.extend(found.into_iter().map(|(p, m)| problem(label.clone(), p, m)));
            }
        }
    }
}

/// `Kind/name` of a document, as far as it can be told.
fn object_label(json: &Value) -> Option<String> {
    let kind = json.get("kind").and_then(Value::as_str)?;
    let name = json
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    Some(format!("{kind}/{name}"))
}

/// A document that passed every per-document check.
enum Object {
    Environment(Box<Environment>),
    CodeLocation(Box<CodeLocation>),
    Release(Box<Release>),
}

type FieldProblems = Vec<(String, String)>;

fn check_document(json: &Value) -> Result<Object, FieldProblems> {
    let Some(map) = json.as_object() else {
        return Err(vec![(
            String::new(),
            "expected a mapping with apiVersion, kind, metadata and spec".into(),
        )]);
    };
    let mut problems = FieldProblems::new();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(API_VERSION) => {}
        Some(other) => problems.push((
            "apiVersion".into(),
            format!("{other:?} is not {API_VERSION}"),
        )),
        None => problems.push(("apiVersion".into(), "required field missing".into())),
    }
    let kind = map.get("kind").and_then(Value::as_str);
    match json.pointer("/metadata/name").and_then(Value::as_str) {
        Some(name) if is_dns_subdomain(name) => {}
        Some(name) => problems.push((
            "metadata.name".into(),
            format!(
                "{name:?} is not a valid name (lowercase letters, digits, '-' and '.', at most 253)"
            ),
        )),
        None => problems.push(("metadata.name".into(), "required field missing".into())),
    }
    match json.pointer("/metadata/namespace") {
        None => {}
        Some(Value::String(ns)) if is_dns_label(ns) => {}
        Some(Value::String(ns)) => problems.push((
            "metadata.namespace".into(),
            format!(
                "{ns:?} is not a valid namespace (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63)"
            ),
        )),
        Some(other) => problems.push((
            "metadata.namespace".into(),
            format!("expected a string, got {}", json_type(other)),
        )),
    }
    let checked = match kind {
        Some("Environment") => {
            check_kind::<Environment>(json).map(|o| Object::Environment(Box::new(o)))
        }
        Some("CodeLocation") => {
            check_kind::<CodeLocation>(json).map(|o| Object::CodeLocation(Box::new(o)))
        }
        Some("Release") => check_kind::<Release>(json).map(|o| Object::Release(Box::new(o))),
        Some(other) => Err(vec![(
            "kind".into(),
            format!("unknown kind {other:?}; expected Environment, CodeLocation or Release"),
        )]),
        None => Err(vec![("kind".into(), "required field missing".into())]),
    };
    match checked {
        Ok(object) if problems.is_empty() => Ok(object),
        Ok(_) => Err(problems),
        Err(mut more) => {
            problems.append(&mut more);
            Err(problems)
        }
    }
}

/// A namespace's name: an RFC 1123 label, as the API server requires.
fn is_dns_label(name: &str) -> bool {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("valid regex")
    });
    name.len() <= 63 && re.is_match(name)
}

/// The JSON type of a value, for messages.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
            .expect("valid regex")
    });
    name.len() <= 253 && re.is_match(name)
}

/// The CRD schema of a kind, as JSON, with `metadata` left to the name check.
fn kind_schema<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("derived CRDs have a schema");
    let mut schema = serde_json::to_value(schema).expect("schemas serialize");
    // The API server adds `apiVersion`, `kind` and `metadata` (an ObjectMeta it validates
    // itself, checked here by `check_document`) to every CRD schema; do the same.
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        properties.insert("apiVersion".into(), serde_json::json!({"type": "string"}));
        properties.insert("kind".into(), serde_json::json!({"type": "string"}));
        properties.insert(
            "metadata".into(),
            serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
    }
    schema
}

fn check_kind<K>(json: &Value) -> Result<K, FieldProblems>
where
    K: CustomResourceExt + DeserializeOwned + KindSchemas,
{
    let (schema, compiled) = K::schemas();
    let mut problems: FieldProblems = schema::check(schema, json)
        .into_iter()
        .map(|p| (p.path, p.message))
        .collect();
    // `status` is written by Vigie, never by a manifest.
    if json.get("status").is_some() {
        problems.push((
            "status".into(),
            "must not be set in a manifest: Vigie writes it".into(),
        ));
    }
    // CEL rules run even when the structure is wrong, so that every problem is listed;
    // a rule that cannot be evaluated because a field has the wrong type is then left out
    // (the type error already names the field).
    let structurally_valid = problems.is_empty();
    if let Err(errors) = kube::core::cel::validate_compiled(compiled, json, None) {
        problems.extend(
            errors
                .into_vec()
                .into_iter()
                .filter(|e| {
                    structurally_valid || e.kind == kube::core::cel::ErrorKind::ValidationFailure
                })
                .map(|e| (e.field_path.trim_start_matches('.').to_owned(), e.message)),
        );
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    serde_json::from_value(json.clone()).map_err(|e| vec![(String::new(), e.to_string())])
}

/// The JSON schema and compiled CEL rules of a kind, built once.
trait KindSchemas {
    fn schemas() -> &'static (Value, CompiledSchema);
}

macro_rules! kind_schemas {
    ($kind:ty) => {
        impl KindSchemas for $kind {
            fn schemas() -> &'static (Value, CompiledSchema) {
                static CELL: OnceLock<(Value, CompiledSchema)> = OnceLock::new();
                CELL.get_or_init(|| {
                    let schema = kind_schema::<$kind>();
                    let compiled = kube::core::cel::compile_schema(&schema);
                    (schema, compiled)
                })
            }
        }
    };
}

kind_schemas!(Environment);
kind_schemas!(CodeLocation);
kind_schemas!(Release);

fn insert(object: Object, origin: Origin, manifests: &mut Manifests, problems: &mut Vec<Problem>) {
    fn put<T: kube::ResourceExt>(
        map: &mut BTreeMap<Key, Loaded<T>>,
        kind: &str,
        object: T,
        origin: Origin,
        problems: &mut Vec<Problem>,
    ) {
        let namespace = object
            .namespace()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let name = object.name_any();
        if let Some(first) = map.get(&(namespace.clone(), name.clone())) {
            problems.push(Problem {
                file: origin.file,
                document: origin.document,
                object: Some(format!("{kind}/{name}")),
                path: "metadata.name".into(),
                message: format!(
                    "duplicate: {kind}/{name} is already defined in {} document {}",
                    first.origin.file.display(),
                    first.origin.document
                ),
            });
            return;
        }
        map.insert((namespace, name), Loaded { object, origin });
    }
    match object {
        Object::Environment(o) => put(
            &mut manifests.environments,
            "Environment",
            *o,
            origin,
            problems,
        ),
        Object::CodeLocation(o) => put(
            &mut manifests.code_locations,
            "CodeLocation",
            *o,
            origin,
            problems,
        ),
        Object::Release(o) => put(&mut manifests.releases, "Release", *o, origin, problems),
    }
}

#[cfg(test)]
mod walk_tests {
    use super::*;

    #[test]
    fn the_walk_stops_after_its_entries_and_says_so() {
        let dir = std::env::temp_dir().join(format!("vigie-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for i in 0..20 {
            std::fs::write(dir.join(format!("sub/{i:02}.yaml")), "").unwrap();
        }
        let mut walk = Walk {
            max_entries: 10,
            ..Walk::default()
        };
        walk.start(&dir);
        assert!(walk.files.len() < 10, "{:?}", walk.files);
        assert_eq!(walk.problems.len(), 1);
        assert!(
            walk.problems[0]
                .message
                .starts_with("more than 10 directory entries looked at; the walk stops here"),
            "{:?}",
            walk.problems
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

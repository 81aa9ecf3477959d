//! The textual edit of a Release's `spec.revision` in a file of YAML documents.
//!
//! The edit is textual, so comments, order and quoting stay as people wrote them, and
//! it is checked: the edited document must parse to the original one with only
//! `spec.revision` changed, or it is refused. Pure: no git here.

use std::sync::LazyLock;

use regex::Regex;
use serde_norway::Value;

/// What a write-back did to one file's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// The Release is not in this text.
    NotHere,
    /// The Release already has this revision: nothing to commit.
    AlreadySet,
    /// The new text.
    Edited(String),
}

static SEPARATOR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^---[ \t]*(?:#.*)?$").expect("valid regex"));
static REVISION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\brevision:[ \t]*("[^"\n]*"|'[^'\n]*'|[^\s,}#]+)?"#).expect("valid regex")
});
static SPEC_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^spec:[ \t]*(?:#.*)?$").expect("valid regex"));

/// Sets `spec.revision` of the Release `namespace/name` in a file of YAML documents
/// (a document naming no namespace is in `default_namespace`).
///
/// # Errors
/// The Release is there but its revision cannot be edited safely (no `spec`, an
/// unusual layout), or it is there twice.
pub fn set_revision(
    text: &str,
    default_namespace: &str,
    namespace: &str,
    name: &str,
    revision: &str,
) -> Result<Edit, EditError> {
    let mut found = None;
    for (index, (start, end)) in documents(text).into_iter().enumerate() {
        let Ok(value) = crate::manifest::yaml::from_str::<Value>(&text[start..end]) else {
            continue;
        };
        let is_it = value.get("kind").and_then(Value::as_str) == Some("Release")
            && value
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                == Some(name)
            && value
                .get("metadata")
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .unwrap_or(default_namespace)
                == namespace;
        if !is_it {
            continue;
        }
        if found.is_some() {
            return Err(EditError::Twice {
                release: format!("{namespace}/{name}"),
            });
        }
        found = Some((index + 1, start, end, value));
    }
    let Some((document, start, end, value)) = found else {
        return Ok(Edit::NotHere);
    };
    if value
        .get("spec")
        .and_then(|s| s.get("revision"))
        .and_then(Value::as_str)
        == Some(revision)
    {
        return Ok(Edit::AlreadySet);
    }
    let chunk = &text[start..end];
    let edited = edit_document(chunk, &value, revision).ok_or_else(|| EditError::Layout {
        document,
        name: name.to_owned(),
    })?;
    Ok(Edit::Edited(format!(
        "{}{edited}{}",
        &text[..start],
        &text[end..]
    )))
}

/// Why a Release's revision is not edited in a file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The Release is in the file twice.
    #[error("Release {release} is defined twice in the same file")]
    Twice {
        /// `namespace/name`.
        release: String,
    },
    /// Its revision is not written in a way that can be edited without guessing.
    #[error(
        "document {document} (Release/{name}): cannot edit spec.revision safely; write it as \
         `revision: <sha>` under `spec:`"
    )]
    Layout {
        /// 1-based document index.
        document: usize,
        /// The Release.
        name: String,
    },
}

/// Byte ranges of the documents of a YAML stream (separator lines excluded).
fn documents(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for m in SEPARATOR.find_iter(text) {
        out.push((start, m.start()));
        start = (m.end() + 1).min(text.len());
    }
    out.push((start, text.len()));
    out
}

/// The document with `spec.revision` set, checked by parsing it back; `None` when no
/// candidate edit gives exactly the expected document.
fn edit_document(chunk: &str, original: &Value, revision: &str) -> Option<String> {
    let mut expected = original.clone();
    let spec = expected.get_mut("spec")?.as_mapping_mut()?;
    spec.insert(Value::from("revision"), Value::from(revision));
    let checks = |candidate: &str| {
        crate::manifest::yaml::from_str::<Value>(candidate).is_ok_and(|v| v == expected)
    };
    let plain = [revision.to_owned(), format!("\"{revision}\"")];
    // An existing `revision:` key, block or flow style: replace its value, in its quotes.
    for c in REVISION.captures_iter(chunk) {
        let forms = match c.get(1).map(|v| v.as_str().chars().next()) {
            Some(Some('"')) => [format!("\"{revision}\""), revision.to_owned()],
            Some(Some('\'')) => [format!("'{revision}'"), format!("\"{revision}\"")],
            _ => plain.clone(),
        };
        let key = c.get(0)?;
        let (at, to) = c
            .get(1)
            .map_or((key.end(), key.end()), |v| (v.start(), v.end()));
        let separator = if c.get(1).is_none() && !chunk[..at].ends_with([' ', '\t']) {
            " "
        } else {
            ""
        };
        for form in &forms {
            let candidate = format!("{}{separator}{form}{}", &chunk[..at], &chunk[to..]);
            if checks(&candidate) {
                return Some(candidate);
            }
        }
    }
    // No key yet: add one as the first line under a block-style `spec:`.
    let line = SPEC_LINE.find(chunk)?;
    let after = (line.end() + 1).min(chunk.len());
    let indent: String = chunk[after..]
        .lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| l.chars().take_while(|c| *c == ' ').collect())
        .filter(|i: &String| !i.is_empty())
        .unwrap_or_else(|| "  ".into());
    for form in &plain {
        let candidate = format!(
            "{}{indent}revision: {form}\n{}",
            &chunk[..after],
            &chunk[after..]
        );
        if checks(&candidate) {
            return Some(candidate);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn edited(text: &str) -> String {
        match set_revision(text, "default", "default", "app-dev", SHA).unwrap() {
            Edit::Edited(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_revision_is_replaced_in_place_keeping_comments_and_order() {
        let text = "# the dev environment\napiVersion: vigie.dev/v1alpha1\nkind: Release\nmetadata:\n  name: app-dev\nspec:\n  environment: dev   # follows main\n  codeLocation: app\n  revision: 1111111111111111111111111111111111111111  # tracked\n";
        assert_eq!(
            edited(text),
            text.replace("1111111111111111111111111111111111111111", SHA)
        );
    }

    #[test]
    fn quoting_and_flow_style_are_kept() {
        let text = "kind: Release\nmetadata: {name: app-dev}\nspec:\n  environment: dev\n  revision: \"main\"\n";
        assert_eq!(edited(text), text.replace("main", SHA));
        let text = "kind: Release\nmetadata: {name: app-dev}\nspec: {environment: dev, codeLocation: app, revision: v1.2.0}\n";
        assert_eq!(edited(text), text.replace("v1.2.0", SHA));
    }

    #[test]
    fn a_revision_that_would_not_read_as_a_string_is_quoted() {
        // A tag such as 1.10 reads as a number unquoted.
        let text = "kind: Release\nmetadata: {name: app-dev}\nspec:\n  revision: main\n";
        let Edit::Edited(t) = set_revision(text, "default", "default", "app-dev", "1.10").unwrap()
        else {
            panic!()
        };
        assert_eq!(t, text.replace("main", "\"1.10\""));
    }

    #[test]
    fn a_missing_revision_is_added_under_spec() {
        let text = "kind: Release\nmetadata:\n    name: app-dev\nspec:\n    environment: dev\n    codeLocation: app\n";
        assert_eq!(
            edited(text),
            format!(
                "kind: Release\nmetadata:\n    name: app-dev\nspec:\n    revision: {SHA}\n    environment: dev\n    codeLocation: app\n"
            )
        );
    }

    #[test]
    fn only_the_named_release_in_its_namespace_is_edited() {
        let text = "kind: Release\nmetadata: {name: app-prod}\nspec:\n  revision: aaa\n---\nkind: Release\nmetadata: {name: app-dev, namespace: other}\nspec:\n  revision: bbb\n--- # dev\nkind: Release\nmetadata:\n  name: app-dev\nspec:\n  revision: ccc\n";
        let out = edited(text);
        assert_eq!(out, text.replace("ccc", SHA));
        let other = set_revision(text, "default", "other", "app-dev", SHA).unwrap();
        assert_eq!(other, Edit::Edited(text.replace("bbb", SHA)));
        assert_eq!(
            set_revision(text, "default", "default", "nope", SHA).unwrap(),
            Edit::NotHere
        );
        // Another default namespace: the documents without one are there.
        assert_eq!(
            set_revision(text, "ops", "default", "app-dev", SHA).unwrap(),
            Edit::NotHere
        );
    }

    #[test]
    fn a_revision_key_elsewhere_in_the_document_is_left_alone() {
        // `revision:` inside an annotation and in a comment: only spec.revision moves.
        let text = "kind: Release\nmetadata:\n  name: app-dev\n  annotations:\n    note: \"revision: main\"\nspec:\n  # revision: old\n  revision: main\n";
        let out = edited(text);
        assert_eq!(
            out,
            text.replace("  revision: main", &format!("  revision: {SHA}"))
        );
    }

    #[test]
    fn already_set_and_twice_defined() {
        let text =
            format!("kind: Release\nmetadata: {{name: app-dev}}\nspec:\n  revision: {SHA}\n");
        assert_eq!(
            set_revision(&text, "default", "default", "app-dev", SHA).unwrap(),
            Edit::AlreadySet
        );
        let twice = format!("{text}---\n{text}");
        assert!(
            set_revision(&twice, "default", "default", "app-dev", "x")
                .unwrap_err()
                .to_string()
                .contains("defined twice")
        );
    }

    #[test]
    fn an_uneditable_layout_is_refused_not_guessed() {
        // A spec given as an alias: editing the anchor would change another field too.
        let text = "kind: Environment\n---\nkind: Release\nmetadata: {name: app-dev}\nx-base: &spec {environment: dev, revision: main}\nspec: *spec\n";
        let err = set_revision(text, "default", "default", "app-dev", SHA).unwrap_err();
        assert_eq!(
            err,
            EditError::Layout {
                document: 2,
                name: "app-dev".into()
            }
        );
        assert!(
            err.to_string().contains("document 2 (Release/app-dev)"),
            "{err}"
        );
    }
}

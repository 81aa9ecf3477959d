//! `workspace.yaml`, as data: Vigie's entries (one `grpc_server` per code location
//! running in the environment) laid into whatever the file already holds. Pure: the
//! file or ConfigMap is read and written by the caller.
//!
//! ```yaml
//! load_from:
//!   - grpc_server:
//!       host: sales          # the location's alias on the environment's network
//!       port: 4000
//!       location_name: sales
//!   - python_file: local.py  # not Vigie's: kept as it is
//! ```

use serde_norway::{Mapping, Value};

/// One code server the webserver loads a location from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `location_name`.
    pub location: String,
    /// `host`.
    pub host: String,
    /// `port`.
    pub port: u16,
}

impl Entry {
    fn to_value(&self) -> Value {
        let mut server = Mapping::new();
        server.insert("host".into(), self.host.clone().into());
        server.insert("port".into(), u64::from(self.port).into());
        server.insert("location_name".into(), self.location.clone().into());
        let mut entry = Mapping::new();
        entry.insert("grpc_server".into(), Value::Mapping(server));
        Value::Mapping(entry)
    }
}

/// Why a workspace cannot be changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkspaceError {
    /// The text is not YAML, or not a workspace.
    #[error("not a Dagster workspace: {0}")]
    Malformed(String),
    /// An entry Vigie does not own uses the location's name.
    #[error(
        "the workspace already loads location {location} from a {kind} entry that Vigie does not own; \
         remove that entry (Vigie lists the location as a grpc_server)"
    )]
    Taken {
        /// The location's name.
        location: String,
        /// The other entry's kind (`python_file`, `python_module`, ...).
        kind: String,
    },
}

/// What a change did to the workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The text is already as wanted: nothing to write.
    Unchanged,
    /// The new text; `listed` changed when a location was added or removed (the
    /// webserver reloads the whole workspace), not when an entry only moved.
    Changed {
        /// The whole new text.
        text: String,
        /// Whether the set of locations changed.
        listed: bool,
    },
}

/// The workspace with `location` served by `entry` (`Some`), or not listed at all
/// (`None`). Every other entry is kept, in its place.
///
/// # Errors
/// The text is not a workspace, or an entry Vigie does not own uses the name.
pub fn set(text: &str, location: &str, entry: Option<&Entry>) -> Result<Change, WorkspaceError> {
    let mut doc: Value = if text.trim().is_empty() {
        Value::Mapping(Mapping::new())
    } else {
        crate::manifest::yaml::from_str(text)
            .map_err(|e| WorkspaceError::Malformed(e.to_string()))?
    };
    if doc.is_null() {
        doc = Value::Mapping(Mapping::new());
    }
    let Value::Mapping(root) = &mut doc else {
        return Err(WorkspaceError::Malformed(
            "the document is not a mapping with load_from".into(),
        ));
    };
    let load_from = root
        .entry("load_from".into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if load_from.is_null() {
        *load_from = Value::Sequence(Vec::new());
    }
    let Value::Sequence(entries) = load_from else {
        return Err(WorkspaceError::Malformed("load_from is not a list".into()));
    };
    let mut ours = None;
    for (i, e) in entries.iter().enumerate() {
        match owner(e) {
            Some((kind, name)) if name == location && kind == "grpc_server" && ours.is_none() => {
                ours = Some(i);
            }
            Some((kind, name)) if name == location && kind == "grpc_server" => {}
            Some((kind, name)) if name == location => {
                return Err(WorkspaceError::Taken {
                    location: location.to_owned(),
                    kind,
                });
            }
            _ => {}
        }
    }
    let before = entries.clone();
    let listed = match (ours, entry) {
        (Some(i), Some(entry)) => {
            entries[i] = entry.to_value();
            false
        }
        (None, Some(entry)) => {
            entries.push(entry.to_value());
            true
        }
        (Some(_), None) => {
            entries.retain(|e| {
                !matches!(owner(e), Some((kind, name)) if kind == "grpc_server" && name == location)
            });
            true
        }
        (None, None) => false,
    };
    // Duplicates of our entry (a hand edit) go too.
    let mut seen = false;
    entries.retain(|e| match owner(e) {
        Some((kind, name)) if kind == "grpc_server" && name == location => {
            !std::mem::replace(&mut seen, true)
        }
        _ => true,
    });
    if *entries == before && !text.trim().is_empty() {
        return Ok(Change::Unchanged);
    }
    let text =
        serde_norway::to_string(&doc).map_err(|e| WorkspaceError::Malformed(e.to_string()))?;
    Ok(Change::Changed { text, listed })
}

/// The locations a workspace lists, with the kind of entry each comes from.
///
/// # Errors
/// The text is not a workspace.
pub fn locations(text: &str) -> Result<Vec<(String, String)>, WorkspaceError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let doc: Value = crate::manifest::yaml::from_str(text)
        .map_err(|e| WorkspaceError::Malformed(e.to_string()))?;
    Ok(doc
        .get("load_from")
        .and_then(Value::as_sequence)
        .map(|entries| {
            entries
                .iter()
                .filter_map(owner)
                .map(|(kind, name)| (name, kind))
                .collect()
        })
        .unwrap_or_default())
}

/// `(kind, location_name)` of an entry that names its location.
fn owner(entry: &Value) -> Option<(String, String)> {
    let Value::Mapping(m) = entry else {
        return None;
    };
    let (kind, body) = m.iter().next()?;
    let kind = kind.as_str()?.to_owned();
    let name = body.get("location_name")?.as_str()?.to_owned();
    Some((kind, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(location: &str, port: u16) -> Entry {
        Entry {
            location: location.into(),
            host: location.into(),
            port,
        }
    }

    fn text(change: Change) -> String {
        match change {
            Change::Changed { text, .. } => text,
            Change::Unchanged => panic!("expected a change"),
        }
    }

    #[test]
    fn an_empty_or_missing_workspace_gets_the_entry() {
        for start in [
            "",
            "\n",
            "# nothing yet\n",
            "load_from:\n",
            "load_from: []\n",
        ] {
            let change = set(start, "sales", Some(&entry("sales", 4000))).unwrap();
            assert!(
                matches!(&change, Change::Changed { listed: true, .. }),
                "{start:?}"
            );
            assert_eq!(
                text(change),
                "load_from:\n- grpc_server:\n    host: sales\n    port: 4000\n    location_name: sales\n",
                "{start:?}"
            );
        }
    }

    #[test]
    fn entries_vigie_does_not_own_are_kept_in_place() {
        let start = "load_from:\n- python_file:\n    relative_path: local.py\n    location_name: local\n- grpc_server:\n    host: other\n    port: 4001\n    location_name: finance\n";
        let added = text(set(start, "sales", Some(&entry("sales", 4000))).unwrap());
        assert_eq!(
            locations(&added).unwrap(),
            vec![
                ("local".into(), "python_file".into()),
                ("finance".into(), "grpc_server".into()),
                ("sales".into(), "grpc_server".into()),
            ]
        );
        let removed = text(set(&added, "sales", None).unwrap());
        assert_eq!(
            locations(&removed).unwrap(),
            locations(start).unwrap(),
            "removing ours leaves the others"
        );
    }

    #[test]
    fn writing_the_same_entry_again_changes_nothing() {
        let once = text(set("", "sales", Some(&entry("sales", 4000))).unwrap());
        assert_eq!(
            set(&once, "sales", Some(&entry("sales", 4000))).unwrap(),
            Change::Unchanged
        );
        assert_eq!(set(&once, "hr", None).unwrap(), Change::Unchanged);
        // A moved port rewrites the entry but lists the same locations.
        assert!(matches!(
            set(&once, "sales", Some(&entry("sales", 4010))).unwrap(),
            Change::Changed { listed: false, .. }
        ));
    }

    #[test]
    fn two_locations_written_in_turn_keep_each_other() {
        let a = text(set("", "sales", Some(&entry("sales", 4000))).unwrap());
        let b = text(set(&a, "hr", Some(&entry("hr", 4000))).unwrap());
        let names: Vec<String> = locations(&b).unwrap().into_iter().map(|l| l.0).collect();
        assert_eq!(names, ["sales", "hr"]);
    }

    #[test]
    fn a_name_taken_by_another_kind_of_entry_is_refused() {
        let start =
            "load_from:\n- python_module:\n    module_name: sales.defs\n    location_name: sales\n";
        let e = set(start, "sales", Some(&entry("sales", 4000))).unwrap_err();
        assert!(e.to_string().contains("python_module"), "{e}");
    }

    #[test]
    fn malformed_workspaces_are_refused_by_cause() {
        for bad in ["- a\n- b\n", "load_from: 3\n", "load_from: [\n"] {
            assert!(
                matches!(
                    set(bad, "sales", Some(&entry("sales", 4000))),
                    Err(WorkspaceError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }
}

//! Secret values at the edge: from an environment variable or a file (standalone),
//! or a Kubernetes Secret (operator). Values are never logged nor put in errors.

use crate::api::SecretSource;

/// Reads a secret. The error names where it was looked for, never the value.
pub fn resolve(source: &SecretSource) -> Result<Vec<u8>, String> {
    match source {
        SecretSource::Env(name) => std::env::var(name)
            .map(std::string::String::into_bytes)
            .map_err(|_| format!("environment variable {name} is not set")),
        SecretSource::File(path) => std::fs::read(path)
            .map(|mut v| {
                while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    v.pop();
                }
                v
            })
            .map_err(|e| format!("cannot read secret file {path}: {}", e.kind())),
        SecretSource::SecretKeyRef(r) => Err(format!(
            "Secret {}/{} is read by the operator only; standalone, use env or file",
            r.name, r.key
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_files_and_variables_and_errors_hide_them() {
        let path = std::env::temp_dir().join(format!("vigie-secret-{}", std::process::id()));
        std::fs::write(&path, "t0ken\n").unwrap();
        assert_eq!(
            resolve(&SecretSource::File(path.display().to_string())).unwrap(),
            b"t0ken"
        );
        std::fs::remove_file(&path).unwrap();
        let e = resolve(&SecretSource::File(path.display().to_string())).unwrap_err();
        assert!(e.starts_with("cannot read secret file"), "{e}");
        assert_eq!(
            resolve(&SecretSource::Env("VIGIE_TEST_UNSET_VARIABLE".into())).unwrap_err(),
            "environment variable VIGIE_TEST_UNSET_VARIABLE is not set"
        );
    }
}

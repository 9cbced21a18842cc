//! Secrets a provider delivered in a file rather than in the worker's environment (the Docker
//! provider does, since a container's environment shows in `docker inspect`): the file named
//! by [`tea_contract::SECRETS_FILE_ENV`] holds a JSON object of variable names to values. The
//! worker moves them into its own environment (from where the job inherits the job's secrets
//! and the connection takes the Temporal credentials) and deletes the file and its directory
//! before it does anything else, so no job ever finds it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

/// The secrets in the file named by [`tea_contract::SECRETS_FILE_ENV`] (none when it is
/// unset), the file and its directory deleted. Fails, naming the file, when it cannot be read
/// or is not a JSON object of strings; then the file is deleted all the same.
pub fn take() -> Result<Vec<(String, String)>, String> {
    match std::env::var_os(tea_contract::SECRETS_FILE_ENV) {
        Some(path) if !path.is_empty() => take_from(Path::new(&path)),
        _ => Ok(Vec::new()),
    }
}

/// [`take`] from the file `path`.
pub fn take_from(path: &Path) -> Result<Vec<(String, String)>, String> {
    let read = std::fs::read(path);
    let removed = remove(path);
    let bytes = read.map_err(|e| {
        format!(
            "{}={}: the secrets file cannot be read ({e}); it is delivered once, when the \
             compute is created, and deleted at start: a restarted worker has no secrets",
            tea_contract::SECRETS_FILE_ENV,
            path.display()
        )
    })?;
    removed?;
    // The parser's message may quote the content: only its position is told.
    let map: BTreeMap<String, String> = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{}={}: not a JSON object of variable names to strings (line {}, column {})",
            tea_contract::SECRETS_FILE_ENV,
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    if let Some(key) = map.keys().find(|k| !tea_contract::is_env_var_name(k)) {
        return Err(format!(
            "{}={}: {key:?} is not a variable name",
            tea_contract::SECRETS_FILE_ENV,
            path.display()
        ));
    }
    Ok(map.into_iter().collect())
}

/// Deletes the file and, when empty, its directory (made for it alone).
fn remove(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(format!(
                "the secrets file {} cannot be deleted: {e}",
                path.display()
            ));
        }
    }
    if let Some(dir) = path.parent().map(PathBuf::from) {
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tea-secrets-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("env.json");
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn the_secrets_are_read_and_the_file_and_its_directory_deleted() {
        let path = file(r#"{"DB_PASSWORD":"hunter22","TEMPORAL_API_KEY":"k\ney"}"#);
        let secrets = take_from(&path).unwrap();
        assert_eq!(
            secrets,
            [
                ("DB_PASSWORD".to_owned(), "hunter22".to_owned()),
                ("TEMPORAL_API_KEY".to_owned(), "k\ney".to_owned())
            ]
        );
        assert!(!path.exists());
        assert!(!path.parent().unwrap().exists());
    }

    #[test]
    fn a_bad_or_missing_file_is_named_and_still_deleted() {
        for (content, says) in [
            ("[1]", "not a JSON object"),
            (r#"{"A":1,"B":"s3cr3t"}"#, "not a JSON object"),
            (r#"{"A B":"x"}"#, "not a variable name"),
        ] {
            let path = file(content);
            let err = take_from(&path).unwrap_err();
            assert!(
                err.contains(says) && err.contains("TEA_SECRETS_FILE"),
                "{err}"
            );
            assert!(!err.contains("s3cr3t"), "{err}");
            assert!(!path.exists());
        }
        let err = take_from(Path::new("/nonexistent/tea/env.json")).unwrap_err();
        assert!(err.contains("restarted worker"), "{err}");
    }
}

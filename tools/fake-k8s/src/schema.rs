//! The official schemas every create body is checked against: those of the PyPI package
//! `kubernetes-validate` ([`SCHEMA_PACKAGE`]) for Kubernetes [`SCHEMA_VERSION`], the oldest
//! version the provider supports, in their strict variant (an unknown field is an error, as
//! `kubernetes-validate --strict` says). There is no fallback: a fake without the schemas does
//! not start.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use anyhow::Context;
use serde_json::Value;

/// The package that carries the schemas, and the version CI installs.
pub const SCHEMA_PACKAGE: &str = "kubernetes-validate==1.37.0";
/// The Kubernetes version whose schemas are used.
pub const SCHEMA_VERSION: &str = "1.33.0";
/// Where the schemas' `$ref`s point (`/api/_definitions.json` relative to their `$id`).
const DEFINITIONS_URI: &str = "https://kubernetes.io/api/_definitions.json";
/// Variable naming the schema directory (`.../kubernetes-json-schema/v1.33.0-local-strict`).
pub const SCHEMA_DIR_ENV: &str = "FAKE_K8S_SCHEMA_DIR";

/// The kinds the fake accepts, with their schema files.
const KINDS: [(&str, &str); 3] = [
    ("Job", "job-batch-v1.json"),
    ("Pod", "pod-v1.json"),
    ("Secret", "secret-v1.json"),
];

/// A validator per kind.
pub struct Schemas {
    validators: HashMap<&'static str, jsonschema::Validator>,
    dir: PathBuf,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemas").field("dir", &self.dir).finish()
    }
}

impl Schemas {
    /// Loads the schemas from `dir`, or from where [`locate`] finds them.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Schemas> {
        let dir = match dir {
            Some(dir) => dir.to_path_buf(),
            None => locate()?,
        };
        let read = |file: &str| -> anyhow::Result<Value> {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "reading the schema {} (install them with `pip install {SCHEMA_PACKAGE}`)",
                    path.display()
                )
            })?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
        };
        let registry = jsonschema::Registry::new()
            .add(DEFINITIONS_URI, read("_definitions.json")?)?
            .prepare()?;
        let mut validators = HashMap::new();
        for (kind, file) in KINDS {
            let schema = read(file)?;
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .with_registry(&registry)
                .build(&schema)
                .map_err(|e| anyhow::anyhow!("building the validator of {file}: {e}"))?;
            validators.insert(kind, validator);
        }
        Ok(Schemas { validators, dir })
    }

    /// The directory the schemas were read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks `object` against its kind's schema: every violation, as `path: message`.
    pub fn check(&self, kind: &str, object: &Value) -> Result<(), Vec<String>> {
        let Some(validator) = self.validators.get(kind) else {
            return Err(vec![format!("kind {kind:?} is not served here")]);
        };
        let errors: Vec<String> = validator
            .iter_errors(object)
            .map(|e| {
                let path = e.instance_path().to_string();
                let field = path.trim_start_matches('/').replace('/', ".");
                format!("{}: {e}", if field.is_empty() { "<root>" } else { &field })
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// The strict schema directory of [`SCHEMA_VERSION`]: [`SCHEMA_DIR_ENV`] when set, else the one
/// of the `kubernetes_validate` package Python imports.
pub fn locate() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(SCHEMA_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "import kubernetes_validate, os; print(os.path.dirname(kubernetes_validate.__file__))",
        ])
        .output()
        .with_context(|| format!("running {python} to find the kubernetes-validate schemas"))?;
    if !out.status.success() {
        anyhow::bail!(
            "the official Kubernetes schemas are missing: `{python} -c 'import \
             kubernetes_validate'` failed ({}); install them with `pip install {SCHEMA_PACKAGE}` \
             or set {SCHEMA_DIR_ENV}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let package = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let dir = package
        .join("kubernetes-json-schema")
        .join(format!("v{SCHEMA_VERSION}-local-strict"));
    anyhow::ensure!(
        dir.join("_definitions.json").is_file(),
        "kubernetes-validate at {} has no schemas for {SCHEMA_VERSION}: install `{SCHEMA_PACKAGE}`",
        package.display()
    );
    Ok(dir)
}

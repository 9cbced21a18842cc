//! Validation of create/propose request bodies against the App Platform spec (AppSpec,
//! component bases, AppVariableDefinition, ImageSourceSpec), strict where the real API's
//! behaviour is undocumented (e.g. `registry` set for `DOCR` is rejected).
//!
//! Works on raw `serde_json::Value`s so that the stored spec is returned as sent and so that
//! every problem gets a message naming the offending field.

use serde_json::{Map, Value};

/// Current `instance_size_slug` values (spec section "Size slug").
pub const CURRENT_SLUGS: &[&str] = &[
    "apps-s-1vcpu-0.5gb",
    "apps-s-1vcpu-1gb-fixed",
    "apps-s-1vcpu-1gb",
    "apps-s-1vcpu-2gb",
    "apps-s-2vcpu-4gb",
    "apps-d-1vcpu-0.5gb",
    "apps-d-1vcpu-1gb",
    "apps-d-1vcpu-2gb",
    "apps-d-1vcpu-4gb",
    "apps-d-2vcpu-4gb",
    "apps-d-2vcpu-8gb",
    "apps-d-4vcpu-8gb",
    "apps-d-4vcpu-16gb",
    "apps-d-8vcpu-32gb",
];

/// Deprecated legacy slugs. The spec still lists them as a valid (`deprecated: true`)
/// alternative of the `oneOf`, so the fake accepts them and records their use
/// (see `AppSnapshot::deprecated_slugs`).
pub const DEPRECATED_SLUGS: &[&str] = &[
    "basic-xxs",
    "basic-xs",
    "basic-s",
    "basic-m",
    "professional-xs",
    "professional-s",
    "professional-m",
    "professional-1l",
    "professional-l",
    "professional-xl",
];

/// `spec.region` enum.
pub const REGIONS: &[&str] = &[
    "atl", "nyc", "sfo", "tor", "ams", "fra", "lon", "blr", "sgp", "syd",
];

/// Component arrays of an AppSpec whose entries carry a `name`.
const COMPONENT_KINDS: &[&str] = &["services", "workers", "jobs", "static_sites", "functions"];
/// Component kinds that have the instance base (count, size) and need a source.
const INSTANCE_KINDS: &[&str] = &["services", "workers", "jobs"];
const SOURCES: &[&str] = &["image", "git", "github", "gitlab", "bitbucket"];

/// What the rest of the fake needs from a valid spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSpec {
    pub name: String,
    pub region: Option<String>,
    /// Name of the first worker component, the one the fake runs as a process.
    pub first_worker: Option<String>,
    /// Deprecated `instance_size_slug`s used by any component.
    pub deprecated_slugs: Vec<String>,
}

/// A valid create body: `{spec, project_id?}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidCreate {
    pub spec: ValidSpec,
    pub project_id: Option<String>,
}

fn field_err(field: &str, msg: impl std::fmt::Display) -> String {
    format!("error validating app spec field \"{field}\": {msg}")
}

/// `^[a-z][a-z0-9-]{0,30}[a-z0-9]$` (which implies 2-32 chars).
pub fn is_valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    (2..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

/// `^[_A-Za-z][_A-Za-z0-9]*$`.
pub fn is_valid_env_key(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0] == b'_' || b[0].is_ascii_alphabetic())
        && b.iter().all(|c| *c == b'_' || c.is_ascii_alphanumeric())
}

fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(field_err(&join(path, key), "must be a string")),
    }
}

fn opt_obj<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(field_err(&join(path, key), "must be an object")),
    }
}

fn opt_arr<'a>(obj: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a [Value], String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(field_err(&join(path, key), "must be an array")),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Validates a create request body (`apps_create_app_request`).
pub fn validate_create(body: &Value) -> Result<ValidCreate, String> {
    let obj = body
        .as_object()
        .ok_or_else(|| "request body must be a JSON object".to_string())?;
    let spec = match obj.get("spec") {
        None | Some(Value::Null) => return Err("missing required field \"spec\"".into()),
        Some(s) => s,
    };
    let project_id = opt_str(obj, "project_id", "")
        .map_err(|_| "field \"project_id\" must be a string".to_string())?
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Ok(ValidCreate {
        spec: validate_spec(spec)?,
        project_id,
    })
}

/// Validates an AppSpec.
pub fn validate_spec(spec: &Value) -> Result<ValidSpec, String> {
    let spec = spec
        .as_object()
        .ok_or_else(|| "field \"spec\" must be an object".to_string())?;
    let name = opt_str(spec, "name", "")?.ok_or_else(|| field_err("name", "is required"))?;
    if !is_valid_name(name) {
        return Err(field_err(
            "name",
            format!("{name:?} must be 2-32 characters matching ^[a-z][a-z0-9-]{{0,30}}[a-z0-9]$"),
        ));
    }
    let region = opt_str(spec, "region", "")?;
    if let Some(r) = region
        && !REGIONS.contains(&r)
    {
        return Err(field_err(
            "region",
            format!(
                "unknown region {r:?}; expected one of {}",
                REGIONS.join(", ")
            ),
        ));
    }
    validate_envs(opt_arr(spec, "envs", "")?, "envs")?;

    let mut seen_names: Vec<String> = Vec::new();
    let mut deprecated = Vec::new();
    let mut first_worker = None;
    for kind in COMPONENT_KINDS {
        for (i, comp) in opt_arr(spec, kind, "")?.iter().enumerate() {
            let path = format!("{kind}[{i}]");
            let comp = comp
                .as_object()
                .ok_or_else(|| field_err(&path, "must be an object"))?;
            let cname = opt_str(comp, "name", &path)?
                .ok_or_else(|| field_err(&join(&path, "name"), "is required"))?;
            if !is_valid_name(cname) {
                return Err(field_err(
                    &join(&path, "name"),
                    format!(
                        "{cname:?} must be 2-32 characters matching ^[a-z][a-z0-9-]{{0,30}}[a-z0-9]$"
                    ),
                ));
            }
            if seen_names.iter().any(|n| n == cname) {
                return Err(field_err(
                    &join(&path, "name"),
                    format!("component name {cname:?} is not unique within the app"),
                ));
            }
            seen_names.push(cname.to_string());
            validate_envs(opt_arr(comp, "envs", &path)?, &join(&path, "envs"))?;
            if INSTANCE_KINDS.contains(kind) {
                if let Some(slug) = validate_instance(comp, &path)? {
                    deprecated.push(slug);
                }
                validate_source(comp, &path)?;
            }
            if *kind == "workers" && first_worker.is_none() {
                first_worker = Some(cname.to_string());
            }
        }
    }
    Ok(ValidSpec {
        name: name.to_string(),
        region: region.map(str::to_string),
        first_worker,
        deprecated_slugs: deprecated,
    })
}

/// Checks count/size/autoscaling/termination; returns a deprecated slug if one is used.
fn validate_instance(comp: &Map<String, Value>, path: &str) -> Result<Option<String>, String> {
    let autoscaling = comp.get("autoscaling").is_some_and(|v| !v.is_null());
    match comp.get("instance_count") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let n = v
                .as_i64()
                .ok_or_else(|| field_err(&join(path, "instance_count"), "must be an integer"))?;
            if n < 1 {
                return Err(field_err(
                    &join(path, "instance_count"),
                    format!("must be >= 1, got {n}"),
                ));
            }
            if autoscaling {
                return Err(field_err(
                    &join(path, "instance_count"),
                    "must not be set when autoscaling is used",
                ));
            }
        }
    }
    if let Some(term) = opt_obj(comp, "termination", path)?
        && let Some(g) = term.get("grace_period_seconds").filter(|v| !v.is_null())
    {
        let field = join(path, "termination.grace_period_seconds");
        let g = g
            .as_i64()
            .ok_or_else(|| field_err(&field, "must be an integer"))?;
        if !(1..=600).contains(&g) {
            return Err(field_err(&field, format!("must be 1-600, got {g}")));
        }
    }
    let Some(slug) = opt_str(comp, "instance_size_slug", path)? else {
        return Ok(None);
    };
    if CURRENT_SLUGS.contains(&slug) {
        Ok(None)
    } else if DEPRECATED_SLUGS.contains(&slug) {
        Ok(Some(slug.to_string()))
    } else {
        Err(field_err(
            &join(path, "instance_size_slug"),
            format!("unknown instance size slug {slug:?}"),
        ))
    }
}

/// Exactly one source per component; image source rules.
fn validate_source(comp: &Map<String, Value>, path: &str) -> Result<(), String> {
    let given: Vec<&str> = SOURCES
        .iter()
        .copied()
        .filter(|s| comp.get(*s).is_some_and(|v| !v.is_null()))
        .collect();
    match given.len() {
        0 => {
            return Err(field_err(
                path,
                "a component needs exactly one source (image, git, github, gitlab or bitbucket)",
            ));
        }
        1 => {}
        _ => {
            return Err(field_err(
                path,
                format!("only one source may be set, got {}", given.join(", ")),
            ));
        }
    }
    let Some(image) = opt_obj(comp, "image", path)? else {
        return Ok(());
    };
    let ipath = join(path, "image");
    let rtype = opt_str(image, "registry_type", &ipath)?
        .ok_or_else(|| field_err(&join(&ipath, "registry_type"), "is required"))?;
    if !["DOCKER_HUB", "DOCR", "GHCR"].contains(&rtype) {
        return Err(field_err(
            &join(&ipath, "registry_type"),
            format!("unknown registry type {rtype:?}; expected DOCKER_HUB, DOCR or GHCR"),
        ));
    }
    let registry = opt_str(image, "registry", &ipath)?.unwrap_or("");
    match rtype {
        // The spec says the registry "must be left empty for the DOCR registry type"; what the
        // real API does if it is not is undocumented. The fake rejects it on purpose.
        "DOCR" if !registry.is_empty() => {
            return Err(field_err(
                &join(&ipath, "registry"),
                format!(
                    "must be left empty for registry_type DOCR (got {registry:?}); give only the repository name"
                ),
            ));
        }
        "DOCKER_HUB" if registry.is_empty() => {
            return Err(field_err(
                &join(&ipath, "registry"),
                "is required for registry_type DOCKER_HUB",
            ));
        }
        _ => {}
    }
    let repo = opt_str(image, "repository", &ipath)?.unwrap_or("");
    if repo.is_empty() {
        return Err(field_err(&join(&ipath, "repository"), "is required"));
    }
    let tag = opt_str(image, "tag", &ipath)?.filter(|s| !s.is_empty());
    let digest = opt_str(image, "digest", &ipath)?.filter(|s| !s.is_empty());
    if tag.is_some() && digest.is_some() {
        return Err(field_err(&ipath, "tag and digest cannot both be specified"));
    }
    if let Some(d) = digest
        && !d.starts_with("sha256:")
    {
        return Err(field_err(
            &join(&ipath, "digest"),
            format!("must look like sha256:<hex>, got {d:?}"),
        ));
    }
    if opt_str(image, "registry_credentials", &ipath)?.is_some_and(|c| !c.is_empty())
        && rtype == "DOCR"
    {
        return Err(field_err(
            &join(&ipath, "registry_credentials"),
            "only supported for DOCKER_HUB and GHCR",
        ));
    }
    if let Some(dop) = opt_obj(image, "deploy_on_push", &ipath)?
        && dop.get("enabled").and_then(Value::as_bool) == Some(true)
        && (rtype != "DOCR" || digest.is_some())
    {
        return Err(field_err(
            &join(&ipath, "deploy_on_push.enabled"),
            "only supported for DOCR images referenced by tag",
        ));
    }
    Ok(())
}

fn validate_envs(envs: &[Value], path: &str) -> Result<(), String> {
    let mut keys: Vec<&str> = Vec::new();
    for (i, env) in envs.iter().enumerate() {
        let epath = format!("{path}[{i}]");
        let env = env
            .as_object()
            .ok_or_else(|| field_err(&epath, "must be an object"))?;
        let key = opt_str(env, "key", &epath)?
            .ok_or_else(|| field_err(&join(&epath, "key"), "is required"))?;
        if !is_valid_env_key(key) {
            return Err(field_err(
                &join(&epath, "key"),
                format!("{key:?} must match ^[_A-Za-z][_A-Za-z0-9]*$"),
            ));
        }
        if keys.contains(&key) {
            return Err(field_err(
                &join(&epath, "key"),
                format!("duplicate environment variable {key:?}"),
            ));
        }
        keys.push(key);
        if let Some(scope) = opt_str(env, "scope", &epath)?
            && !["UNSET", "RUN_TIME", "BUILD_TIME", "RUN_AND_BUILD_TIME"].contains(&scope)
        {
            return Err(field_err(
                &join(&epath, "scope"),
                format!(
                    "unknown scope {scope:?}; expected UNSET, RUN_TIME, BUILD_TIME or RUN_AND_BUILD_TIME"
                ),
            ));
        }
        if let Some(ty) = opt_str(env, "type", &epath)?
            && !["GENERAL", "SECRET"].contains(&ty)
        {
            return Err(field_err(
                &join(&epath, "type"),
                format!("unknown type {ty:?}; expected GENERAL or SECRET"),
            ));
        }
        opt_str(env, "value", &epath)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn worker(extra: Value) -> Value {
        let mut w = json!({
            "name": "external-worker",
            "instance_count": 1,
            "instance_size_slug": "apps-s-1vcpu-0.5gb",
            "image": {"registry_type": "DOCR", "repository": "external", "tag": "latest"},
        });
        if let (Some(w), Some(extra)) = (w.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                w.insert(k.clone(), v.clone());
            }
        }
        json!({"spec": {"name": "external-app-1", "workers": [w]}})
    }

    #[test]
    fn names() {
        assert!(is_valid_name("ab"));
        assert!(is_valid_name("external-app-123456"));
        assert!(!is_valid_name("a"));
        assert!(!is_valid_name("Ab"));
        assert!(!is_valid_name("1ab"));
        assert!(!is_valid_name("ab-"));
        assert!(!is_valid_name(&"a".repeat(33)));
        assert!(is_valid_name(&"a".repeat(32)));
        assert!(is_valid_env_key("_X1"));
        assert!(!is_valid_env_key("1X"));
        assert!(!is_valid_env_key("A-B"));
    }

    #[test]
    fn accepts_the_reference_example() {
        let v = validate_create(&worker(json!({}))).unwrap();
        assert_eq!(v.spec.first_worker.as_deref(), Some("external-worker"));
        assert!(v.spec.deprecated_slugs.is_empty());
    }

    #[test]
    fn rejections() {
        let bad = [
            json!({"image": {"registry_type": "DOCR", "registry": "myreg", "repository": "x"}}),
            json!({"image": {"registry_type": "DOCR", "repository": "x", "tag": "a", "digest": "sha256:ab"}}),
            json!({"image": {"registry_type": "QUAY", "repository": "x"}}),
            json!({"instance_count": 0}),
            json!({"instance_size_slug": "huge"}),
            json!({"envs": [{"key": "1BAD", "value": "x"}]}),
            json!({"envs": [{"key": "A", "scope": "SOMETIMES"}]}),
            json!({"envs": [{"key": "A", "type": "PLAIN"}]}),
            json!({"name": "Bad_Name"}),
        ];
        for b in bad {
            assert!(validate_create(&worker(b.clone())).is_err(), "{b}");
        }
        assert!(validate_create(&json!({})).is_err());
        assert!(validate_create(&json!({"spec": {}})).is_err());
        assert!(validate_create(&json!({"spec": {"name": "ok-name", "region": "mars"}})).is_err());
    }

    #[test]
    fn deprecated_slug_is_accepted_and_recorded() {
        let v = validate_create(&worker(json!({"instance_size_slug": "basic-xxs"}))).unwrap();
        assert_eq!(v.spec.deprecated_slugs, vec!["basic-xxs".to_string()]);
    }
}

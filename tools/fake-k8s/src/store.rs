//! The fake's state: every object as the JSON the API server would return (`metadata.uid`,
//! `resourceVersion`, `creationTimestamp` filled in), the armed faults, and the helpers that
//! read objects, build the API server's `Status` bodies and match label selectors.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{FakeK8sConfig, faults::Fault, schema::Schemas};

/// The kinds of object the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    Job,
    Pod,
    Secret,
}

impl Kind {
    /// `jobs.batch`, `pods`, `secrets`: how messages name the resource.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Job => "jobs.batch",
            Kind::Pod => "pods",
            Kind::Secret => "secrets",
        }
    }
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Job => "batch/v1",
            _ => "v1",
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::Job => "Job",
            Kind::Pod => "Pod",
            Kind::Secret => "Secret",
        }
    }
    /// The `group` and `kind` of a `Status`'s details.
    pub fn details(self) -> (&'static str, &'static str) {
        match self {
            Kind::Job => ("batch", "jobs"),
            Kind::Pod => ("", "pods"),
            Kind::Secret => ("", "secrets"),
        }
    }
}

/// An object's key: kind, namespace, name.
pub type Key = (Kind, String, String);

/// Everything the fake holds.
#[derive(Default)]
pub struct State {
    pub objects: BTreeMap<Key, Value>,
    resource_version: u64,
    pub faults: Vec<Fault>,
    /// Create bodies as received (secrets included: in-process only).
    pub create_bodies: Vec<(Kind, Value)>,
    /// Pods that ran a process, by name, ever (for tests that check a unit ran).
    pub pods_started: Vec<String>,
    /// Jobs (UIDs) the Job controller made a pod for: one pod per Job, never replaced.
    pub jobs_with_pod: std::collections::HashSet<String>,
    /// Pods whose image cannot be pulled (a fault), by name.
    pub pull_failures: std::collections::HashSet<String>,
}

impl State {
    /// The next resource version (one counter for every object, as etcd's revision).
    pub fn next_resource_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    /// Stores `object` under `key`, with a new resource version.
    pub fn put(&mut self, key: Key, mut object: Value) {
        let rv = self.next_resource_version();
        object["metadata"]["resourceVersion"] = json!(rv);
        self.objects.insert(key, object);
    }

    /// The objects of `kind` in `namespace`.
    pub fn of_kind(&self, kind: Kind, namespace: &str) -> Vec<(Key, Value)> {
        self.objects
            .iter()
            .filter(|((k, ns, _), _)| *k == kind && ns == namespace)
            .map(|(key, v)| (key.clone(), v.clone()))
            .collect()
    }

    /// Whether any object has the UID `uid`.
    pub fn uid_exists(&self, uid: &str) -> bool {
        self.objects.values().any(|o| self::uid(o) == Some(uid))
    }

    pub fn list_resource_version(&self) -> String {
        self.resource_version.to_string()
    }
}

/// State shared by the server, the controllers and the handle.
pub struct Shared {
    pub cfg: FakeK8sConfig,
    pub schemas: Schemas,
    pub base_url: String,
    state: Mutex<State>,
    /// The kubelet's running containers, by pod UID (locked after `state`, never before).
    pub procs: Mutex<std::collections::HashMap<String, crate::kubelet::Running>>,
}

impl Shared {
    pub fn new(cfg: FakeK8sConfig, schemas: Schemas, base_url: String) -> Arc<Shared> {
        Arc::new(Shared {
            cfg,
            schemas,
            base_url,
            state: Mutex::new(State::default()),
            procs: Mutex::default(),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn procs(
        &self,
    ) -> MutexGuard<'_, std::collections::HashMap<String, crate::kubelet::Running>> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn now() -> String {
    rfc3339(Utc::now())
}

/// A time the fake wrote (RFC 3339).
pub fn parse_time(value: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub fn name(object: &Value) -> Option<&str> {
    object["metadata"]["name"].as_str()
}

pub fn uid(object: &Value) -> Option<&str> {
    object["metadata"]["uid"].as_str()
}

/// The UIDs of `object`'s owners (with whether each blocks its owner's foreground deletion).
pub fn owners(object: &Value) -> Vec<(String, bool)> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some((
                r["uid"].as_str()?.to_owned(),
                r["blockOwnerDeletion"].as_bool() == Some(true),
            ))
        })
        .collect()
}

pub fn is_deleting(object: &Value) -> bool {
    object["metadata"]["deletionTimestamp"].is_string()
}

/// The API server's `Status` body for a failure.
pub fn status_body(code: u16, reason: &str, message: &str, details: Value) -> Value {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if !details.is_null() {
        body["details"] = details;
    }
    body
}

/// `Status` for `kind` named `name`: 404 NotFound, 409 AlreadyExists, as the API server says.
pub fn not_found(kind: Kind, name: &str) -> Value {
    let (group, kinds) = kind.details();
    status_body(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", kind.resource()),
        json!({"name": name, "group": group, "kind": kinds}),
    )
}

pub fn already_exists(kind: Kind, name: &str) -> Value {
    let (group, kinds) = kind.details();
    status_body(
        409,
        "AlreadyExists",
        &format!("{} \"{name}\" already exists", kind.resource()),
        json!({"name": name, "group": group, "kind": kinds}),
    )
}

/// 422 Invalid, one cause per `(field, message)`.
pub fn invalid(kind: Kind, name: &str, causes: &[(String, String)]) -> Value {
    let (group, _) = kind.details();
    let listed: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
    let kind_name = if group.is_empty() {
        kind.name().to_owned()
    } else {
        format!("{}.{group}", kind.name())
    };
    status_body(
        422,
        "Invalid",
        &format!("{kind_name} \"{name}\" is invalid: {}", listed.join(", ")),
        json!({
            "name": name,
            "group": group,
            "kind": kind.name(),
            "causes": causes.iter().map(|(f, m)| json!({
                "reason": "FieldValueInvalid", "message": m, "field": f
            })).collect::<Vec<_>>(),
        }),
    )
}

/// One requirement of a label selector.
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector` (`a=b`, `a==b`, `a!=b`, `a`, `!a`, comma-separated).
pub struct Selector(Vec<Requirement>);

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut requirements = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let requirement = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else if part.contains(char::is_whitespace) || part.contains('(') {
                return Err(format!(
                    "unable to parse requirement: {part:?} (set-based selectors are not served)"
                ));
            } else {
                Requirement::Exists(part.into())
            };
            requirements.push(requirement);
        }
        Ok(Selector(requirements))
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |k: &str| labels[k].as_str();
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        })
    }
}

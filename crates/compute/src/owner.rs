//! The ownership mark: which deployment a unit of compute belongs to.
//!
//! Every provider instance is built with one [`ComputeOwner`] and stamps it on every unit of
//! compute it creates, where its module says (DigitalOcean: the app-level variable
//! [`crate::digitalocean::OWNER_ENV`]; Docker: the label [`crate::docker::OWNER_LABEL`];
//! Kubernetes: the annotation [`crate::kubernetes::OWNER_ANNOTATION`]; local: the `owner` field
//! of `meta.json`). Listing, sweeping and delete-by-name only ever consider compute that carries
//! exactly this mark, so two deployments sharing one account (or one state directory) never
//! touch each other's compute, and compute nobody marked is left alone.
//!
//! The owner is configured with `COMPUTE_OWNER`; by default it is derived from the Temporal
//! namespace and the workflow task queue as `<namespace>/<task_queue>` (see
//! [`ComputeOwner::derive`]). It is stored in plain text: never put a secret in it.

use std::fmt;

use crate::naming::is_generated_name;

/// Name of the variable that configures the owner (providers store the mark under names of
/// their own, so a worker's own environment cannot be mistaken for it).
pub const ENV_COMPUTE_OWNER: &str = "COMPUTE_OWNER";

/// Longest owner accepted.
pub const MAX_OWNER_LEN: usize = 100;

/// A deployment identity: 1-100 characters from `A-Z a-z 0-9 . _ - / :`, starting with a
/// letter or digit. Not a secret (it is stored in plain text with the compute).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ComputeOwner(String);

impl ComputeOwner {
    /// Validates an owner given explicitly (`COMPUTE_OWNER`).
    pub fn new(owner: impl Into<String>) -> Result<Self, String> {
        let owner = owner.into();
        if owner.is_empty() || owner.len() > MAX_OWNER_LEN {
            return Err(format!(
                "{ENV_COMPUTE_OWNER} must be 1-{MAX_OWNER_LEN} characters, got {}",
                owner.len()
            ));
        }
        if !owner.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(format!(
                "{ENV_COMPUTE_OWNER}={owner:?} must start with a letter or digit"
            ));
        }
        if let Some(bad) = owner.chars().find(|c| !is_owner_char(*c)) {
            return Err(format!(
                "{ENV_COMPUTE_OWNER}={owner:?}: character {bad:?} is not allowed (use \
                 A-Z a-z 0-9 . _ - / :)"
            ));
        }
        Ok(Self(owner))
    }

    /// The default owner of a workflow-worker: `<namespace>/<task_queue>`. Characters outside
    /// the allowed set become `_`; when anything had to change (or the result is longer than
    /// [`MAX_OWNER_LEN`]) the first 91 characters are kept and `-` plus 8 hex digits of the
    /// SHA-256 of the unchanged `<namespace>/<task_queue>` are appended, so distinct inputs
    /// keep distinct owners.
    pub fn derive(namespace: &str, task_queue: &str) -> Self {
        let raw = format!("{namespace}/{task_queue}");
        let mut clean: String = raw
            .chars()
            .map(|c| if is_owner_char(c) { c } else { '_' })
            .collect();
        if !clean
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric)
        {
            clean.insert(0, 'o');
        }
        if clean == raw && clean.len() <= MAX_OWNER_LEN {
            return Self(clean);
        }
        clean.truncate(MAX_OWNER_LEN - 9);
        Self(format!("{clean}-{}", short_hash(&raw)))
    }

    /// The owner as a component of an identifier that allows only `A-Z a-z 0-9 . _ -` (a
    /// schedule ID): `/` and `:` become `-` and, when anything changed, `-` plus 8 hex digits
    /// of the owner's SHA-256 are appended so distinct owners keep distinct identifiers.
    pub fn id_component(&self) -> String {
        let clean: String = self
            .0
            .chars()
            .map(|c| if matches!(c, '/' | ':') { '-' } else { c })
            .collect();
        if clean == self.0 {
            clean
        } else {
            format!("{clean}-{}", short_hash(&self.0))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a stored mark names this owner (`None`: the compute carries no mark).
    pub fn marks(&self, mark: Option<&str>) -> bool {
        mark == Some(self.0.as_str())
    }

    /// Whether the unit of compute `name`, carrying `mark`, is this owner's to list, sweep or
    /// delete: a generated name ([`is_generated_name`]) with exactly this owner's mark. The
    /// one ownership check: every provider's `list_ours` (so the sweeper) and the operator's
    /// `compute delete` decide with it; a unit it refuses is never touched.
    pub fn claim(&self, name: &str, mark: Option<&str>) -> Result<(), NotOurs> {
        if !is_generated_name(name) {
            return Err(NotOurs::NotGenerated);
        }
        match mark {
            _ if self.marks(mark) => Ok(()),
            None => Err(NotOurs::Unmarked),
            Some(other) => Err(NotOurs::MarkedBy(other.to_owned())),
        }
    }
}

/// Why a unit of compute is not this owner's (see [`ComputeOwner::claim`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotOurs {
    /// Its name is not one this project generates (`ext-api`): none of ours is named so.
    NotGenerated,
    /// It carries no owner mark: no deployment of this project created it.
    Unmarked,
    /// It carries another deployment's mark (the value of the mark).
    MarkedBy(String),
}

impl fmt::Display for NotOurs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotGenerated => f.write_str("its name is not one this project generates"),
            Self::Unmarked => f.write_str("it carries no owner mark"),
            Self::MarkedBy(other) => write!(f, "it carries the owner mark {other:?}"),
        }
    }
}

/// 8 hex digits of the SHA-256 of `raw`.
fn short_hash(raw: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(raw.as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn is_owner_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':')
}

impl fmt::Display for ComputeOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ComputeOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ComputeOwner({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_owners_are_validated() {
        for ok in ["prod", "default/taskQueueName", "team-a:staging.eu_1"] {
            assert_eq!(ComputeOwner::new(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "-x", "a b", "a\"b", &"a".repeat(101), "é"] {
            assert!(ComputeOwner::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn derived_owners_are_valid_and_distinct() {
        let plain = ComputeOwner::derive("default", "taskQueueName");
        assert_eq!(plain.as_str(), "default/taskQueueName");
        let a = ComputeOwner::derive("ns", "queue one");
        let b = ComputeOwner::derive("ns", "queue_one");
        assert_ne!(a, b);
        let long = ComputeOwner::derive("ns", &"q".repeat(300));
        for owner in [&a, &b, &long, &ComputeOwner::derive("", "")] {
            assert!(ComputeOwner::new(owner.as_str()).is_ok(), "{owner:?}");
        }
        assert!(plain.marks(Some("default/taskQueueName")));
        assert!(!plain.marks(None));
        assert!(!plain.marks(Some("default/other")));
    }

    #[test]
    fn a_unit_is_claimed_only_with_a_generated_name_and_exactly_our_mark() {
        let owner = ComputeOwner::new("prod").unwrap();
        let name = crate::naming::compute_name("run-1", 1);
        assert_eq!(owner.claim(&name, Some("prod")), Ok(()));
        assert_eq!(owner.claim(&name, None), Err(NotOurs::Unmarked));
        assert_eq!(
            owner.claim(&name, Some("staging")),
            Err(NotOurs::MarkedBy("staging".into()))
        );
        assert_eq!(
            owner.claim("ext-api", Some("prod")),
            Err(NotOurs::NotGenerated)
        );
        assert_eq!(
            NotOurs::MarkedBy("staging".into()).to_string(),
            "it carries the owner mark \"staging\""
        );
    }
}

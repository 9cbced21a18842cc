//! Worker Deployment Versioning for the workflow-worker: which deployment version it is
//! (`TEMPORAL_DEPLOYMENT_NAME` + `TEMPORAL_WORKER_BUILD_ID`, the names the Temporal Worker
//! Controller sets), how its workflows move between versions (`TEMPORAL_VERSIONING_BEHAVIOR`),
//! and the SDK deployment options that follow. Unset: the worker is unversioned, as before.

use std::fmt;

use temporalio_common::worker::{
    VersioningBehavior, WorkerDeploymentOptions, WorkerDeploymentVersion,
};

/// The deployment name's variable.
pub const DEPLOYMENT_NAME_ENV: &str = "TEMPORAL_DEPLOYMENT_NAME";
/// The build ID's variable.
pub const BUILD_ID_ENV: &str = "TEMPORAL_WORKER_BUILD_ID";
/// The default versioning behaviour's variable.
pub const BEHAVIOR_ENV: &str = "TEMPORAL_VERSIONING_BEHAVIOR";

/// How this worker's workflows move between deployment versions (worker-wide: the SDK has no
/// per-workflow-type setting).
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub enum Behavior {
    /// A run stays on the version it started on, to its end: workflow changes need no patch.
    #[default]
    Pinned,
    /// A run moves to the deployment's current version at its next workflow task: changes
    /// still need patches.
    AutoUpgrade,
}

impl fmt::Display for Behavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Behavior::Pinned => "pinned",
            Behavior::AutoUpgrade => "auto-upgrade",
        })
    }
}

impl std::str::FromStr for Behavior {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "pinned" => Ok(Behavior::Pinned),
            "auto-upgrade" | "autoupgrade" => Ok(Behavior::AutoUpgrade),
            _ => Err(format!(
                "{BEHAVIOR_ENV}={s:?} is not a versioning behaviour: use `pinned` (the default) \
                 or `auto-upgrade`"
            )),
        }
    }
}

/// A versioned worker: always both a deployment name and a build ID, neither blank.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Versioning {
    pub deployment_name: String,
    pub build_id: String,
    pub behavior: Behavior,
}

impl Versioning {
    /// The versioning the three settings ask for: `Ok(None)` when none is set (unversioned);
    /// an actionable error for one of name and build ID without the other, or a behaviour
    /// without both. Blank values count as unset.
    pub fn from_settings(
        deployment_name: Option<&str>,
        build_id: Option<&str>,
        behavior: Option<&str>,
    ) -> Result<Option<Versioning>, String> {
        let (name, build_id, behavior) = (given(deployment_name), given(build_id), given(behavior));
        match (name, build_id) {
            (Some(name), Some(build_id)) => Ok(Some(Versioning {
                deployment_name: name.to_owned(),
                build_id: build_id.to_owned(),
                behavior: behavior.map(str::parse).transpose()?.unwrap_or_default(),
            })),
            (Some(_), None) => Err(format!(
                "{DEPLOYMENT_NAME_ENV} is set but {BUILD_ID_ENV} is not: Worker Deployment \
                 Versioning needs both (set {BUILD_ID_ENV} to this build's ID, e.g. the image \
                 tag or git SHA), or unset {DEPLOYMENT_NAME_ENV} for an unversioned worker"
            )),
            (None, Some(_)) => Err(format!(
                "{BUILD_ID_ENV} is set but {DEPLOYMENT_NAME_ENV} is not: Worker Deployment \
                 Versioning needs both (set {DEPLOYMENT_NAME_ENV} to the deployment's name, the \
                 same for every build), or unset {BUILD_ID_ENV} for an unversioned worker"
            )),
            (None, None) => match behavior {
                Some(_) => Err(format!(
                    "{BEHAVIOR_ENV} is set but versioning is off: set {DEPLOYMENT_NAME_ENV} and \
                     {BUILD_ID_ENV} to version this worker, or unset {BEHAVIOR_ENV}"
                )),
                None => Ok(None),
            },
        }
    }
}

/// A setting's value, trimmed; `None` when unset or blank.
fn given(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// The SDK's deployment options: versioned per `versioning`, else unversioned under
/// `unversioned_build_id` (which only identifies the worker).
pub fn deployment_options(
    versioning: Option<&Versioning>,
    unversioned_build_id: String,
) -> WorkerDeploymentOptions {
    let Some(versioning) = versioning else {
        return WorkerDeploymentOptions::from_build_id(unversioned_build_id);
    };
    let version = WorkerDeploymentVersion::builder()
        .deployment_name(versioning.deployment_name.clone())
        .build_id(versioning.build_id.clone())
        .build();
    WorkerDeploymentOptions::new(version)
        .use_worker_versioning(true)
        .default_versioning_behavior(match versioning.behavior {
            Behavior::Pinned => VersioningBehavior::Pinned,
            Behavior::AutoUpgrade => VersioningBehavior::AutoUpgrade,
        })
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_set_is_unversioned() {
        assert_eq!(Versioning::from_settings(None, None, None), Ok(None));
        assert_eq!(
            Versioning::from_settings(Some(" "), Some(""), None),
            Ok(None)
        );
        let options = deployment_options(None, "workflow-worker@1".into());
        assert!(!options.use_worker_versioning);
        assert_eq!(options.default_versioning_behavior, None);
        assert_eq!(options.version.build_id, "workflow-worker@1");
    }

    #[test]
    fn name_and_build_id_are_versioned_and_pinned_by_default() {
        let versioning = Versioning::from_settings(Some("tea"), Some("a1"), None)
            .expect("valid")
            .expect("versioned");
        assert_eq!(versioning.behavior, Behavior::Pinned);
        let options = deployment_options(Some(&versioning), "ignored".into());
        assert!(options.use_worker_versioning);
        assert_eq!(options.version.deployment_name, "tea");
        assert_eq!(options.version.build_id, "a1");
        assert_eq!(
            options.default_versioning_behavior,
            Some(VersioningBehavior::Pinned)
        );
    }

    #[test]
    fn auto_upgrade_is_chosen_by_name() {
        for spelling in ["auto-upgrade", "AUTO_UPGRADE", "AutoUpgrade"] {
            let versioning = Versioning::from_settings(Some("tea"), Some("a1"), Some(spelling))
                .expect("valid")
                .expect("versioned");
            assert_eq!(versioning.behavior, Behavior::AutoUpgrade, "{spelling}");
        }
    }

    #[test]
    fn half_configured_versioning_names_the_missing_variable() {
        let only_name = Versioning::from_settings(Some("tea"), None, None).unwrap_err();
        assert!(only_name.starts_with(DEPLOYMENT_NAME_ENV), "{only_name}");
        assert!(only_name.contains(BUILD_ID_ENV), "{only_name}");
        let only_build = Versioning::from_settings(None, Some("a1"), None).unwrap_err();
        assert!(only_build.starts_with(BUILD_ID_ENV), "{only_build}");
        let only_behavior = Versioning::from_settings(None, None, Some("pinned")).unwrap_err();
        assert!(only_behavior.starts_with(BEHAVIOR_ENV), "{only_behavior}");
        let bad = Versioning::from_settings(Some("tea"), Some("a1"), Some("sticky")).unwrap_err();
        assert!(
            bad.contains("sticky") && bad.contains("auto-upgrade"),
            "{bad}"
        );
    }
}

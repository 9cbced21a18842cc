//! The manifests of deploy/kubernetes pass `kubernetes-validate --strict` against the oldest
//! Kubernetes version the provider supports (the fake's schema version), offline. The tool is
//! required (`pip install kubernetes-validate==1.37.0`): without it this test fails.

use std::path::PathBuf;
use std::process::Command;

use tea_fake_k8s::{SCHEMA_PACKAGE, SCHEMA_VERSION};

#[test]
fn the_deploy_manifests_are_valid_for_the_oldest_supported_version() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "the manifests: {files:?}");
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", SCHEMA_VERSION])
        .args(&files)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubernetes-validate cannot run ({e}): install it with `pip install {SCHEMA_PACKAGE}`")
        });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "invalid manifests:\n{said}");
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy();
        assert!(
            said.contains(&format!("{name} passed")),
            "{name} not validated:\n{said}"
        );
    }
}

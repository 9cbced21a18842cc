//! For tests on a real Docker Engine (feature `testing`): finding the engine (or saying why a
//! test is skipped), a tiny image made from this machine's own `sleep` (and the root
//! filesystem of any of its programs), and removing what a test left.
//!
//! Docker tests run whenever an engine is reachable. Where none is, they print that they were
//! skipped and why, except under `REQUIRE_DOCKER=1` (set by CI), where a missing engine fails.

use bollard::{
    Docker,
    query_parameters::{CreateImageOptionsBuilder, RemoveContainerOptionsBuilder},
};
use futures::TryStreamExt;

use super::OWNER_LABEL;

/// Label every container a test makes carries besides the owner (foreign ones included), so
/// cleanup and the end-of-suite check find them all.
pub const TEST_LABEL: &str = "io.github.temporal-external-activity.test";

/// The image [`sleeper_image`] makes: `CMD ["/bin/sleep", "infinity"]`.
pub const SLEEPER_IMAGE: &str = "tea-test/sleeper:stay";
/// The same files, `CMD ["/bin/sleep", "0.2"]`: a container that exits 0 at once.
pub const EXITING_IMAGE: &str = "tea-test/sleeper:exit";

/// Whether `REQUIRE_DOCKER=1` asks for a failure instead of a skip.
pub fn docker_required() -> bool {
    std::env::var("REQUIRE_DOCKER").is_ok_and(|v| v == "1")
}

/// The local engine, its API version negotiated; `None` (after printing why `test` is
/// skipped) when none answers. Panics instead under `REQUIRE_DOCKER=1`.
pub async fn engine_or_skip(test: &str) -> Option<Docker> {
    let reason = match connect().await {
        Ok(docker) => return Some(docker),
        Err(reason) => reason,
    };
    if docker_required() {
        panic!("{test}: REQUIRE_DOCKER=1 but no Docker engine is reachable: {reason}");
    }
    eprintln!(
        "SKIPPED {test}: no Docker engine is reachable ({reason}); set REQUIRE_DOCKER=1 to fail instead"
    );
    None
}

async fn connect() -> Result<Docker, String> {
    let docker = Docker::connect_with_defaults().map_err(|e| e.to_string())?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| e.to_string())?;
    docker.ping().await.map_err(|e| e.to_string())?;
    Ok(docker)
}

/// Makes [`SLEEPER_IMAGE`] and [`EXITING_IMAGE`] (once; cheap when they exist) from this
/// machine's `sleep` and the libraries it loads, imported as a one-layer image.
pub async fn sleeper_images(docker: &Docker) -> Result<(), String> {
    // Tests of one binary ask at once: one import, not one per test (each would leave the
    // previous one's image untagged).
    static MADE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    MADE.get_or_try_init(|| import_sleeper_images(docker))
        .await
        .map(|_| ())
}

async fn import_sleeper_images(docker: &Docker) -> Result<(), String> {
    if docker.inspect_image(SLEEPER_IMAGE).await.is_ok()
        && docker.inspect_image(EXITING_IMAGE).await.is_ok()
    {
        return Ok(());
    }
    let tar = rootfs_of(&["/bin/sleep"])?;
    for (image, cmd) in [
        (SLEEPER_IMAGE, r#"CMD ["/bin/sleep", "infinity"]"#),
        (EXITING_IMAGE, r#"CMD ["/bin/sleep", "0.2"]"#),
    ] {
        let (repo, tag) = super::split_reference(image);
        let options = CreateImageOptionsBuilder::new()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .changes(vec![cmd.to_owned(), "USER 65532:65532".to_owned()])
            .build();
        docker
            .create_image(
                Some(options),
                Some(bollard::body_full(tar.clone().into())),
                None,
            )
            .try_for_each(|_| async { Ok(()) })
            .await
            .map_err(|e| format!("importing {image}: {e}"))?;
    }
    Ok(())
}

/// A tar of this machine's `programs` (absolute paths) and what `ldd` says they load, at the
/// same paths (symlinks followed): enough to run them in an image of their own, or added to
/// one of the same glibc.
pub fn rootfs_of(programs: &[&str]) -> Result<Vec<u8>, String> {
    let mut files: Vec<String> = Vec::new();
    for program in programs {
        let ldd = std::process::Command::new("ldd")
            .arg(program)
            .output()
            .map_err(|e| format!("ldd {program}: {e}"))?;
        files.push(program.trim_start_matches('/').to_owned());
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(path) = path.filter(|p| p.starts_with('/')) {
                files.push(path.trim_start_matches('/').to_owned());
            }
        }
    }
    files.sort();
    files.dedup();
    let out = std::process::Command::new("tar")
        .args(["-c", "-h", "-C", "/"])
        .args(&files)
        .output()
        .map_err(|e| format!("tar: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "tar {files:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

/// Removes (forcibly) every container carrying `label=value` (or just `label` when `value` is
/// `None`); returns their names.
pub async fn remove_labelled(docker: &Docker, label: &str, value: Option<&str>) -> Vec<String> {
    let filter = match value {
        Some(value) => format!("{label}={value}"),
        None => label.to_owned(),
    };
    let containers = super::list_labelled(docker, &filter)
        .await
        .unwrap_or_default();
    let mut removed = Vec::new();
    for c in containers {
        let Some(id) = c.id else { continue };
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        if docker.remove_container(&id, Some(options)).await.is_ok() {
            removed.extend(c.names.unwrap_or_default());
        }
    }
    removed
}

/// Removes every container of `owner` (the provider's label), for a test's cleanup.
pub async fn remove_owned(docker: &Docker, owner: &str) -> Vec<String> {
    remove_labelled(docker, OWNER_LABEL, Some(owner)).await
}

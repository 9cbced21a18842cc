//! Tests of the Docker provider: pure helpers, and the provider on the real engine (skipped,
//! saying why, where none is reachable; a failure under `REQUIRE_DOCKER=1`).

use std::{
    collections::HashMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bollard::{models::ContainerCreateBody, query_parameters::CreateContainerOptionsBuilder};
use futures::{StreamExt, TryStreamExt};

use super::{container::is_loopback_address, testing::*, *};
use crate::{
    EnvVar, ErrorKind, ImageRef, conformance::Subject, kept_log::write_kept_log,
    naming::compute_name,
};

#[test]
fn image_references_follow_docker_rules() {
    let image = |registry: &str, repository: &str, tag: &str| ImageRef {
        registry: registry.into(),
        repository: repository.into(),
        tag: tag.into(),
    };
    assert_eq!(
        image_reference(&image("", "external", "latest")).expect("local"),
        "external:latest"
    );
    assert_eq!(
        image_reference(&image("127.0.0.1:5000", "tea/external", "v1.2")).expect("registry"),
        "127.0.0.1:5000/tea/external:v1.2"
    );
    assert_eq!(
        image_reference(&image("registry.digitalocean.com/acme/", "external", "x")).expect("DOCR"),
        "registry.digitalocean.com/acme/external:x"
    );
    for (bad, says) in [
        (image("", "External", "latest"), "repository"),
        (image("", "external", "a:b"), "tag"),
        (image("", "external", ""), "tag"),
        (image("bad registry", "external", "1"), "registry"),
    ] {
        let err = image_reference(&bad).expect_err("invalid");
        assert_eq!(err.kind, ErrorKind::Permanent);
        assert!(err.message.contains(says), "{err}");
    }
    assert_eq!(
        split_reference("127.0.0.1:5000/a/b:t"),
        ("127.0.0.1:5000/a/b", "t")
    );
    assert_eq!(
        split_reference("127.0.0.1:5000/a"),
        ("127.0.0.1:5000/a", "latest")
    );
    assert_eq!(split_reference("a:t"), ("a", "t"));
}

#[test]
fn loopback_addresses_are_recognised() {
    for address in [
        "localhost:7233",
        "127.0.0.1:7233",
        "127.1.2.3:1",
        "[::1]:7233",
    ] {
        assert!(is_loopback_address(address), "{address}");
    }
    for address in [
        "host.docker.internal:7233",
        "10.0.0.1:7233",
        "temporal:7233",
    ] {
        assert!(!is_loopback_address(address), "{address}");
    }
}

/// A log of `chunks` chunks tagged `tag`, yielding to the other tasks before each one (so two
/// copies written at once interleave chunk by chunk), ending in `error` when given.
fn slow_log(
    tag: &'static str,
    chunks: usize,
    error: Option<&'static str>,
) -> impl futures::Stream<Item = Result<String, &'static str>> {
    let chunks = (0..chunks).map(move |i| Ok(format!("{tag} line {i}\n")));
    futures::stream::iter(chunks.chain(error.map(Err))).then(|chunk| async move {
        tokio::task::yield_now().await;
        chunk
    })
}

/// A fresh, empty directory for a test of kept logs.
fn log_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tea-kept-log-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("log directory");
    dir
}

/// The files in `dir`, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read the log directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn two_deletes_keeping_one_log_at_once_leave_one_whole_copy() {
    let dir = log_dir("concurrent");
    let path = dir.join("ext-unit-1.log");
    let (a, b) = tokio::join!(
        write_kept_log(&path, "=== copy a", slow_log("a", 200, None), "by a"),
        write_kept_log(&path, "=== copy b", slow_log("b", 200, None), "by b"),
    );
    a.expect("copy a");
    b.expect("copy b");
    let kept = std::fs::read_to_string(&path).expect("kept log");
    let tag = if kept.starts_with("=== copy a") {
        "a"
    } else {
        "b"
    };
    let lines: Vec<&str> = kept.lines().collect();
    assert_eq!(lines.len(), 202, "{kept}");
    for (i, line) in lines[1..201].iter().enumerate() {
        assert_eq!(*line, format!("{tag} line {i}"), "a mixed copy: {kept}");
    }
    assert!(
        lines[201].ends_with(&format!("deleted: by {tag}")),
        "{kept}"
    );
    assert_eq!(files_in(&dir), ["ext-unit-1.log"], "temporary files left");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_log_read_only_in_part_does_not_replace_a_whole_one() {
    let dir = log_dir("partial");
    let path = dir.join("ext-unit-1.log");
    let cut = Some("the container is gone");
    write_kept_log(&path, "=== first", slow_log("p", 2, cut), "x")
        .await
        .expect("partial copy");
    let partial = std::fs::read_to_string(&path).expect("kept log");
    assert!(
        partial
            .contains("p line 1\n=== the log could not be read to its end: the container is gone"),
        "a partial copy is kept when there is none: {partial}"
    );
    write_kept_log(&path, "=== whole", slow_log("w", 3, None), "y")
        .await
        .expect("whole copy");
    write_kept_log(&path, "=== second partial", slow_log("q", 1, cut), "z")
        .await
        .expect("second partial copy");
    let kept = std::fs::read_to_string(&path).expect("kept log");
    assert!(kept.starts_with("=== whole\nw line 0\n"), "{kept}");
    assert_eq!(files_in(&dir), ["ext-unit-1.log"], "temporary files left");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A provider of a fresh owner, with its logs in a fresh directory.
fn provider(
    label: &str,
    cfg: impl FnOnce(&mut DockerConfig),
) -> (Arc<DockerProvider>, ComputeOwner, PathBuf) {
    let owner =
        ComputeOwner::new(format!("tea-test/{label}-{}", std::process::id())).expect("owner");
    let dir = std::env::temp_dir().join(format!("tea-docker-{label}-{}", std::process::id()));
    provider_with_owner(&owner, &dir, cfg)
}

fn spec(name: &str, image: &str) -> ComputeSpec {
    let (repository, tag) = split_reference(image);
    ComputeSpec {
        name: name.to_owned(),
        image: ImageRef {
            registry: String::new(),
            repository: repository.to_owned(),
            tag: tag.to_owned(),
        },
        env: vec![
            EnvVar {
                key: "EXTERNAL_TASK_QUEUE".into(),
                value: name.to_owned(),
                secret: false,
            },
            EnvVar {
                key: "TEMPORAL_ADDRESS".into(),
                value: "127.0.0.1:7233".into(),
                secret: false,
            },
        ],
        resources: Default::default(),
    }
}

fn fresh_name(label: &str) -> String {
    compute_name(
        &format!(
            "{label}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ),
        1,
    )
}

/// The test label of the foreign containers a test made, whose provider has `owner`: each test
/// removes only its own (tests run at once, and one must not remove another's mid-check).
fn foreign_of(owner: &ComputeOwner) -> String {
    format!("foreign/{owner}")
}

/// Creates a container the provider did not make, for the test whose provider has `made_by`:
/// `owner` labels it as another deployment's (`None`: no owner label at all).
async fn add_container(docker: &Docker, name: &str, owner: Option<&str>, made_by: &ComputeOwner) {
    let mut labels = HashMap::from([(TEST_LABEL.to_owned(), foreign_of(made_by))]);
    if let Some(owner) = owner {
        labels.insert(OWNER_LABEL.to_owned(), owner.to_owned());
    }
    let body = ContainerCreateBody {
        image: Some(SLEEPER_IMAGE.to_owned()),
        labels: Some(labels),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::new().name(name).build();
    match docker.create_container(Some(options), body).await {
        Ok(_) => {}
        Err(e) if status_of(&e) == Some(409) => {}
        Err(e) => panic!("creating foreign container {name}: {e}"),
    }
}

struct DockerSubject {
    docker: Docker,
    provider: Arc<DockerProvider>,
}

#[async_trait]
impl Subject for DockerSubject {
    fn provider(&self) -> Arc<dyn ComputeProvider> {
        self.provider.clone()
    }

    fn spec(&self, name: &str) -> ComputeSpec {
        spec(name, SLEEPER_IMAGE)
    }

    async fn failing_spec(&self, name: &str) -> ComputeSpec {
        spec(name, EXITING_IMAGE)
    }

    async fn kill(&self, handle: &ComputeHandle) {
        self.docker
            .kill_container(&handle.id, None)
            .await
            .expect("docker kill");
    }

    async fn add_foreign(&self, name: &str) {
        let made_by = self.provider.owner();
        if name.starts_with("ext-api") {
            add_container(&self.docker, name, None, made_by).await;
        } else {
            add_container(
                &self.docker,
                name,
                Some("someone-else/their-queue"),
                made_by,
            )
            .await;
        }
    }
}

#[tokio::test]
async fn conformance() {
    let Some(docker) = engine_or_skip("docker conformance").await else {
        return;
    };
    sleeper_images(&docker).await.expect("test images");
    let (provider, owner, dir) = provider("conformance", |_| {});
    let subject = DockerSubject {
        docker: docker.clone(),
        provider,
    };
    let result = crate::conformance::run(&subject).await;
    let left = remove_owned(&docker, owner.as_str()).await;
    remove_labelled(&docker, TEST_LABEL, Some(&foreign_of(&owner))).await;
    let _ = std::fs::remove_dir_all(dir);
    result.expect("the docker provider honours the provider contract");
    assert!(
        left.is_empty(),
        "the suite left containers of ours: {left:?}"
    );
}

#[tokio::test]
async fn delete_keeps_the_log_and_a_container_we_did_not_mark_is_left_alone() {
    let Some(docker) = engine_or_skip("docker delete and marks").await else {
        return;
    };
    sleeper_images(&docker).await.expect("test images");
    let (provider, owner, dir) = provider("marks", |_| {});

    // Our name, but no mark of ours: neither adopted nor deleted.
    let foreign = fresh_name("foreign");
    add_container(&docker, &foreign, Some("someone-else/q"), &owner).await;
    let err = provider
        .create_or_adopt(&spec(&foreign, SLEEPER_IMAGE))
        .await
        .expect_err("a foreign container is not adopted");
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert!(err.message.contains("not ours"), "{err}");
    let err = provider.delete(&foreign).await.expect_err("not deleted");
    assert!(err.message.contains("not ours"), "{err}");
    assert!(
        docker.inspect_container(&foreign, None).await.is_ok(),
        "the foreign container is still there"
    );

    // A worker that printed and exited: Failed with its words; its log kept after delete.
    let name = fresh_name("exits");
    let handle = provider
        .create_or_adopt(&spec(&name, EXITING_IMAGE))
        .await
        .expect("create");
    let deadline = Instant::now() + Duration::from_secs(30);
    let failed = loop {
        match provider.readiness(&handle).await.expect("readiness") {
            Readiness::Failed { reason, .. } => break reason,
            other if Instant::now() > deadline => panic!("not failed in time: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert!(failed.contains("exited with code 0"), "{failed}");
    assert_eq!(
        provider.delete(&name).await.expect("delete"),
        Deleted::Removed
    );
    let log = std::fs::read_to_string(provider.kept_log_path(&name)).expect("kept log");
    assert!(
        log.contains(&name) && log.contains("deleted: was not running"),
        "{log}"
    );
    assert!(
        docker.inspect_container(&name, None).await.is_err(),
        "the container is removed"
    );

    clean_up(&docker, &owner, &dir).await;
}

#[tokio::test]
async fn a_missing_image_fails_at_once_naming_it() {
    let Some(docker) = engine_or_skip("docker missing image").await else {
        return;
    };
    let (provider, owner, dir) = provider("missing-image", |_| {});
    let name = fresh_name("missing");
    let mut spec = spec(&name, "tea-test/never-built:nope");
    spec.image.registry = "127.0.0.1:9".into(); // nothing listens on the discard port
    let started = Instant::now();
    let err = provider
        .create_or_adopt(&spec)
        .await
        .expect_err("no such image");
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert!(
        err.message
            .contains("127.0.0.1:9/tea-test/never-built:nope"),
        "the message names the image: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "failed at once"
    );
    assert!(
        provider.list_ours("").await.expect("list").is_empty(),
        "nothing was created"
    );
    clean_up(&docker, &owner, &dir).await;
}

#[tokio::test]
async fn a_loopback_temporal_address_off_the_host_network_is_refused_clearly() {
    let Some(docker) = engine_or_skip("docker loopback address").await else {
        return;
    };
    sleeper_images(&docker).await.expect("test images");
    let (provider, owner, dir) = provider("loopback", |c| c.network = "bridge".into());
    let name = fresh_name("loopback");
    let err = provider
        .create_or_adopt(&spec(&name, SLEEPER_IMAGE))
        .await
        .expect_err("unreachable address");
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert!(err.message.contains("DOCKER_TEMPORAL_ADDRESS"), "{err}");

    // With the address containers can use, the same spec runs, and sees the override.
    let (provider, _, _) = provider_with_owner(&owner, &dir, |c| {
        c.network = "bridge".into();
        c.temporal_address = Some(format!("{HOST_ALIAS}:7233"));
    });
    let handle = provider
        .create_or_adopt(&spec(&name, SLEEPER_IMAGE))
        .await
        .expect("create on bridge");
    let inspected = docker
        .inspect_container(&name, None)
        .await
        .expect("inspect");
    let env = inspected.config.and_then(|c| c.env).unwrap_or_default();
    assert!(
        env.contains(&format!("TEMPORAL_ADDRESS={HOST_ALIAS}:7233")),
        "{env:?}"
    );
    let hosts = inspected
        .host_config
        .and_then(|h| h.extra_hosts)
        .unwrap_or_default();
    assert!(
        hosts.contains(&format!("{HOST_ALIAS}:host-gateway")),
        "{hosts:?}"
    );
    provider.delete(&handle.id).await.expect("delete");
    clean_up(&docker, &owner, &dir).await;
}

#[tokio::test]
async fn secrets_reach_the_container_in_a_file_of_its_user_not_in_its_configuration() {
    let Some(docker) = engine_or_skip("docker secrets file").await else {
        return;
    };
    sleeper_images(&docker).await.expect("test images");
    let (provider, owner, dir) = provider("secrets", |_| {});
    let name = fresh_name("secrets");
    let mut with_secret = spec(&name, SLEEPER_IMAGE);
    with_secret.env.push(EnvVar {
        key: "DB_PASSWORD".into(),
        value: "hunter22-in-a-file".into(),
        secret: true,
    });
    let handle = provider
        .create_or_adopt(&with_secret)
        .await
        .expect("create");

    // `docker inspect` shows no secret value, only where the file is and which names are secret.
    let inspected = docker
        .inspect_container(&name, None)
        .await
        .expect("inspect");
    let shown = format!("{inspected:?}");
    assert!(
        !shown.contains("hunter22"),
        "the secret is in the container's configuration"
    );
    let env = inspected.config.and_then(|c| c.env).unwrap_or_default();
    assert!(env.contains(&format!(
        "{}={}",
        tea_contract::SECRETS_FILE_ENV,
        secrets::SECRETS_PATH
    )));
    assert!(env.contains(&format!("{}=DB_PASSWORD", tea_contract::SECRET_NAMES_ENV)));

    // The file (still there: this image has no worker to take it) is the container user's
    // (65532), readable by it alone.
    let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::new()
        .path(secrets::SECRETS_PATH)
        .build();
    let tar: Vec<u8> = docker
        .download_from_container(&name, Some(options))
        .try_fold(Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
        .expect("download the secrets file");
    let field = |at: usize, len: usize| {
        let text = String::from_utf8_lossy(&tar[at..at + len]).into_owned();
        u64::from_str_radix(text.trim_matches(|c: char| c == '\0' || c == ' '), 8).expect("octal")
    };
    assert_eq!(&tar[0..9], b"env.json\0");
    assert_eq!(field(100, 8) & 0o777, 0o400, "mode");
    assert_eq!((field(108, 8), field(116, 8)), (65532, 65532), "owner");
    let size = usize::try_from(field(124, 12)).unwrap();
    let content: serde_json::Value = serde_json::from_slice(&tar[512..512 + size]).expect("json");
    assert_eq!(
        content,
        serde_json::json!({"DB_PASSWORD": "hunter22-in-a-file"})
    );

    provider.delete(&handle.id).await.expect("delete");
    clean_up(&docker, &owner, &dir).await;
}

#[tokio::test]
async fn a_run_s_resources_become_the_container_s_limits() {
    let Some(docker) = engine_or_skip("docker resources").await else {
        return;
    };
    sleeper_images(&docker).await.expect("test images");
    let (provider, owner, dir) = provider("resources", |cfg| {
        cfg.memory_bytes = Some(1 << 30);
        cfg.nano_cpus = Some(2_000_000_000);
    });
    let name = fresh_name("sized");
    let mut sized = spec(&name, SLEEPER_IMAGE);
    sized.resources.cpu = Some(tea_contract::Cpus::from_millis(500));
    sized.resources.memory = Some(256 << 20);
    let fitted = provider.fit(&sized.resources).await.expect("fits");
    assert_eq!(fitted.describe().as_deref(), Some("0.5 CPU, 256 MiB"));
    let handle = provider.create_or_adopt(&sized).await.expect("create");
    let host = docker
        .inspect_container(&name, None)
        .await
        .expect("inspect")
        .host_config
        .expect("a host config");
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(256 << 20));
    provider.delete(&handle.id).await.expect("delete");

    // Sizes and too little memory: refused before any container exists.
    let refused = fresh_name("refused");
    for (field, resources) in [
        (
            "`resources.size`",
            tea_contract::Resources {
                size: Some("large".into()),
                ..Default::default()
            },
        ),
        (
            "`resources.memory` (1 MiB)",
            tea_contract::Resources {
                memory: Some(1 << 20),
                ..Default::default()
            },
        ),
    ] {
        let mut asked = spec(&refused, SLEEPER_IMAGE);
        asked.resources = resources;
        let err = provider.create_or_adopt(&asked).await.expect_err(field);
        assert_eq!(err.kind, ErrorKind::Permanent);
        assert!(err.message.contains(field), "{err}");
        assert!(err.message.contains("the docker provider"), "{err}");
    }
    // A GPU, on an engine without the NVIDIA runtime.
    let runtimes = docker
        .info()
        .await
        .expect("info")
        .runtimes
        .unwrap_or_default();
    if !runtimes.contains_key("nvidia") {
        let mut gpu = spec(&refused, SLEEPER_IMAGE);
        gpu.resources.gpu = Some(1);
        let err = provider
            .create_or_adopt(&gpu)
            .await
            .expect_err("no GPU runtime");
        assert!(err.message.contains("`resources.gpu` (1 GPU)"), "{err}");
        assert!(err.message.contains("nvidia"), "{err}");
    }
    assert!(
        docker.inspect_container(&refused, None).await.is_err(),
        "no container for a refused request"
    );
    clean_up(&docker, &owner, &dir).await;
}

/// Removes what a test made (its owner's containers, foreign ones, its log directory) and
/// fails when any container of its owner was left behind.
async fn clean_up(docker: &Docker, owner: &ComputeOwner, dir: &std::path::Path) {
    remove_labelled(docker, TEST_LABEL, Some(&foreign_of(owner))).await;
    let left = remove_owned(docker, owner.as_str()).await;
    let _ = std::fs::remove_dir_all(dir);
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn provider_with_owner(
    owner: &ComputeOwner,
    dir: &std::path::Path,
    cfg: impl FnOnce(&mut DockerConfig),
) -> (Arc<DockerProvider>, ComputeOwner, PathBuf) {
    let mut config = DockerConfig::new(dir);
    config.stop_grace = Duration::from_secs(1);
    cfg(&mut config);
    let provider = DockerProvider::new(config, owner.clone()).expect("provider");
    (Arc::new(provider), owner.clone(), dir.to_path_buf())
}

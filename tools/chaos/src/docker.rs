//! The docker lane's side of the engine (through its API, `bollard`): a bridge network of the
//! chaos run's own, foreign containers that must survive, the lane's live containers (by the
//! provider's owner label), `docker kill` and `docker network disconnect` of one of them, an
//! observer of the engine's container events (every container the lane's workflow-worker
//! creates, for the created and duplicate counts), and removing all of it at the end.
//!
//! Whatever happens (an error, Ctrl-C), nothing of the chaos run stays on the engine: the
//! cleanup runs at the end of the run and again, if it did not, when [`DockerLane`] is dropped.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, anyhow};
use bollard::{
    Docker,
    models::{
        ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, EventMessage, HostConfig,
        NetworkCreateRequest, NetworkDisconnectRequest,
    },
    query_parameters::{
        CreateContainerOptionsBuilder, EventsOptionsBuilder, KillContainerOptionsBuilder,
        RemoveContainerOptionsBuilder,
    },
};
use futures::StreamExt;
use tea_compute::{
    docker::{OWNER_LABEL, list_labelled},
    naming::compute_name,
};
use tokio::task::JoinHandle;

use crate::{lanes::Unit, say};

/// Label of everything the tests and the chaos command make besides compute (the label CI
/// checks for leftovers, as `tea_compute::docker::testing::TEST_LABEL`).
pub const TEST_LABEL: &str = "io.github.temporal-external-activity.test";
/// The image the docker lane's runs use unless `--docker-image` names another.
pub const DEFAULT_IMAGE: &str = "temporal-external-activity/external-worker:dev";
/// How long connecting to the engine may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the final cleanup may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between the cleanup's rounds and the observer's reconnects.
const POLL: Duration = Duration::from_millis(200);

/// The engine at `DOCKER_HOST` (else the local socket), its API version negotiated, or an
/// error saying why the docker lane cannot run.
pub async fn connect(host: Option<&str>) -> anyhow::Result<Docker> {
    let shown = host.unwrap_or("the local socket (DOCKER_HOST unset)");
    let why = |e: &dyn std::fmt::Display| {
        anyhow!(
            "the docker lane needs a Docker engine, and none answers at {shown}: {e}; start \
             one (or set DOCKER_HOST), or choose other lanes (--provider local,digitalocean)"
        )
    };
    let docker = match host {
        Some(host) => Docker::connect_with_host(host),
        None => Docker::connect_with_local_defaults(),
    }
    .map_err(|e| why(&e))?;
    let answer = async {
        let docker = docker.negotiate_version().await?;
        docker.ping().await?;
        Ok::<_, bollard::errors::Error>(docker)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, answer).await {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(e)) => Err(why(&e)),
        Err(_) => Err(why(&format!("no answer within {CONNECT_TIMEOUT:?}"))),
    }
}

/// An error unless the engine has `image` (the docker lane's runs do not pull).
pub async fn check_image(docker: &Docker, image: &str) -> anyhow::Result<()> {
    docker.inspect_image(image).await.map(|_| ()).map_err(|e| {
        anyhow!(
            "the docker lane runs the image {image}, which the engine does not have ({e}): \
             build it (docs/deployment.md) or name another with --docker-image"
        )
    })
}

/// `DOCKER_HOST` when set and not empty.
pub fn docker_host() -> Option<String> {
    std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty())
}

/// Container ID -> name of every container of the lane the observer saw, and the starts.
#[derive(Debug, Default)]
struct History {
    created: BTreeMap<String, String>,
    /// (container ID, event time in ns): a replayed event is counted once.
    starts: BTreeSet<(String, i64)>,
}

/// What the engine says the lane created.
#[derive(Clone, Debug, Default)]
pub struct Created {
    /// Containers of the lane (foreign ones left out).
    pub containers: u64,
    /// Times one of them was started.
    pub starts: u64,
    /// Names that got more than one container, with how many.
    pub duplicates: Vec<(String, usize)>,
}

/// The docker lane's network, foreign containers and observer.
pub struct DockerLane {
    docker: Docker,
    /// The lane's `COMPUTE_OWNER` (unique to this chaos run: the engine is shared).
    pub owner: String,
    /// The bridge network the lane's containers join.
    pub network: String,
    /// The image of the lane's runs.
    pub image: String,
    /// The label value of the seeded foreign containers.
    foreign_label: String,
    /// Names of the seeded foreign containers.
    pub foreign: BTreeSet<String>,
    history: Arc<Mutex<History>>,
    observer: Option<JoinHandle<()>>,
    cleaned: bool,
}

impl DockerLane {
    /// Checks the image, creates the network, starts the observer and seeds foreign
    /// containers; `suffix` makes the names unique to this chaos run.
    pub async fn start(docker: Docker, image: &str, suffix: &str) -> anyhow::Result<DockerLane> {
        check_image(&docker, image).await?;
        let network = format!("tea-chaos-{suffix}");
        docker
            .create_network(NetworkCreateRequest {
                name: network.clone(),
                driver: Some("bridge".into()),
                labels: Some(HashMap::from([(TEST_LABEL.into(), "network".into())])),
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating the network {network}"))?;
        let owner = format!("chaos-docker-{suffix}");
        let history = Arc::new(Mutex::new(History::default()));
        let observer = tokio::spawn(observe(docker.clone(), owner.clone(), history.clone()));
        let mut lane = DockerLane {
            docker,
            owner,
            network,
            image: image.to_owned(),
            foreign_label: format!("chaos-foreign-{suffix}"),
            foreign: BTreeSet::new(),
            history,
            observer: Some(observer),
            cleaned: false,
        };
        // From here on a failure drops `lane`, which removes what was made.
        lane.seed(suffix).await?;
        say!(
            "docker: network {}, owner {}, image {}; seeded {} containers that are not ours",
            lane.network,
            lane.owner,
            lane.image,
            lane.foreign.len()
        );
        Ok(lane)
    }

    /// Creates (without starting) containers that are not the lane's: `ext-api-*` unmarked
    /// and marked as ours (not our name shape), our name shape unmarked and marked by another
    /// owner.
    async fn seed(&mut self, suffix: &str) -> anyhow::Result<()> {
        let seeds = [
            (format!("ext-api-{suffix}"), None),
            (format!("ext-api-ours-{suffix}"), Some(self.owner.clone())),
            (
                compute_name(&format!("chaos-someone-elses-run-{suffix}"), 1),
                Some("someone-else".to_owned()),
            ),
            (
                compute_name(&format!("chaos-unmarked-run-{suffix}"), 1),
                None,
            ),
        ];
        for (name, owner) in seeds {
            let mut labels = HashMap::from([(TEST_LABEL.to_owned(), self.foreign_label.clone())]);
            if let Some(owner) = owner {
                labels.insert(OWNER_LABEL.to_owned(), owner);
            }
            let body = ContainerCreateBody {
                image: Some(self.image.clone()),
                labels: Some(labels),
                host_config: Some(HostConfig {
                    network_mode: Some("none".into()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let options = CreateContainerOptionsBuilder::new().name(&name).build();
            self.docker
                .create_container(Some(options), body)
                .await
                .with_context(|| format!("seeding the foreign container {name}"))?;
            self.foreign.insert(name);
        }
        Ok(())
    }

    /// Every container of the lane now (the owner's), foreign ones included.
    pub async fn units(&self) -> anyhow::Result<Vec<Unit>> {
        let mut units: BTreeMap<String, Unit> = BTreeMap::new();
        for filter in [
            format!("{OWNER_LABEL}={}", self.owner),
            format!("{TEST_LABEL}={}", self.foreign_label),
        ] {
            let containers = list_labelled(&self.docker, &filter)
                .await
                .context("listing the lane's containers")?;
            for unit in containers.into_iter().filter_map(unit_of) {
                units.insert(unit.id.clone(), unit);
            }
        }
        let mut history = lock(&self.history);
        for unit in units.values() {
            if !self.foreign.contains(&unit.name) {
                history
                    .created
                    .entry(unit.id.clone())
                    .or_insert_with(|| unit.name.clone());
            }
        }
        Ok(units.into_values().collect())
    }

    /// `docker kill` (SIGKILL) of the container.
    pub async fn kill(&self, unit: &Unit) -> anyhow::Result<()> {
        let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        self.docker
            .kill_container(&unit.id, Some(options))
            .await
            .with_context(|| format!("docker kill {}", unit.name))
    }

    /// `docker network disconnect` of the container from the lane's network (its only one).
    pub async fn disconnect(&self, unit: &Unit) -> anyhow::Result<()> {
        self.docker
            .disconnect_network(
                &self.network,
                NetworkDisconnectRequest {
                    container: unit.id.clone(),
                    force: Some(true),
                },
            )
            .await
            .with_context(|| format!("docker network disconnect {} {}", self.network, unit.name))
    }

    /// The lane's containers the engine created, from its events and every listing.
    pub fn created(&self) -> Created {
        let history = lock(&self.history);
        let mut ids_by_name: BTreeMap<&str, usize> = BTreeMap::new();
        for name in history.created.values() {
            if !self.foreign.contains(name) {
                *ids_by_name.entry(name.as_str()).or_default() += 1;
            }
        }
        let starts = history
            .starts
            .iter()
            .filter(|(id, _)| {
                history
                    .created
                    .get(id)
                    .is_none_or(|name| !self.foreign.contains(name))
            })
            .count();
        Created {
            containers: ids_by_name.values().sum::<usize>() as u64,
            starts: starts as u64,
            duplicates: ids_by_name
                .into_iter()
                .filter(|(_, n)| *n > 1)
                .map(|(name, n)| (name.to_owned(), n))
                .collect(),
        }
    }

    /// Removes every container of the lane (the owner's and the foreign ones) and the
    /// network; the error names what is still there.
    pub async fn clean_up(&mut self) -> anyhow::Result<Vec<String>> {
        if let Some(observer) = self.observer.take() {
            observer.abort();
        }
        let removed = clean_up(
            &self.docker,
            &self.owner,
            &self.foreign_label,
            &self.network,
        )
        .await?;
        self.cleaned = true;
        Ok(removed)
    }
}

impl Drop for DockerLane {
    /// A chaos run that ended early (an error, Ctrl-C) removes what it made all the same.
    fn drop(&mut self) {
        if let Some(observer) = self.observer.take() {
            observer.abort();
        }
        if self.cleaned {
            return;
        }
        let (owner, label, network) = (
            self.owner.clone(),
            self.foreign_label.clone(),
            self.network.clone(),
        );
        // Drop cannot await: a thread with a runtime (and a client) of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| anyhow!("no runtime for the cleanup: {e}"))?;
            runtime.block_on(async {
                let docker = connect(docker_host().as_deref()).await?;
                clean_up(&docker, &owner, &label, &network).await
            })
        });
        match cleanup.join() {
            Ok(Ok(removed)) if removed.is_empty() => {}
            Ok(Ok(removed)) => eprintln!("chaos: docker: removed {}", removed.join(", ")),
            Ok(Err(e)) => eprintln!("chaos: docker: the cleanup failed: {e:#}"),
            Err(_) => eprintln!("chaos: docker: the cleanup panicked"),
        }
    }
}

/// Removes the containers of `owner` and those labelled `label` (foreign), then `network`,
/// until none is left or [`CLEANUP_TIMEOUT`] passes; returns the names removed.
async fn clean_up(
    docker: &Docker,
    owner: &str,
    label: &str,
    network: &str,
) -> anyhow::Result<Vec<String>> {
    let deadline = tokio::time::Instant::now() + CLEANUP_TIMEOUT;
    let filters = [
        format!("{OWNER_LABEL}={owner}"),
        format!("{TEST_LABEL}={label}"),
    ];
    let mut removed = Vec::new();
    loop {
        let mut left = Vec::new();
        for filter in &filters {
            left.extend(list_labelled(docker, filter).await.unwrap_or_default());
        }
        let network_left = docker.inspect_network(network, None).await.is_ok();
        if left.is_empty() && !network_left {
            return Ok(removed);
        }
        if tokio::time::Instant::now() >= deadline {
            let mut names: Vec<String> = left.iter().filter_map(name_of).collect();
            if network_left {
                names.push(format!("network {network}"));
            }
            return Err(anyhow!(
                "still on the engine after {CLEANUP_TIMEOUT:?}: {}",
                names.join(", ")
            ));
        }
        for container in &left {
            let Some(id) = &container.id else { continue };
            let options = RemoveContainerOptionsBuilder::new()
                .force(true)
                .v(true)
                .build();
            if docker.remove_container(id, Some(options)).await.is_ok() {
                removed.extend(name_of(container));
            }
        }
        if left.is_empty() && docker.remove_network(network).await.is_ok() {
            removed.push(format!("network {network}"));
            continue;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Records the create and start events of `owner`'s containers until aborted, subscribing
/// again (replaying from the start) when the stream ends.
async fn observe(docker: Docker, owner: String, history: Arc<Mutex<History>>) {
    let since = chrono::Utc::now().timestamp().to_string();
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        (
            "event".to_owned(),
            vec!["create".to_owned(), "start".to_owned()],
        ),
        ("label".to_owned(), vec![format!("{OWNER_LABEL}={owner}")]),
    ]);
    loop {
        let options = EventsOptionsBuilder::new()
            .since(&since)
            .filters(&filters)
            .build();
        let mut events = docker.events(Some(options));
        while let Some(Ok(event)) = events.next().await {
            record(&history, &event);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn record(history: &Mutex<History>, event: &EventMessage) {
    let Some(actor) = &event.actor else { return };
    let Some(id) = actor.id.clone() else { return };
    let name = actor
        .attributes
        .as_ref()
        .and_then(|a| a.get("name"))
        .cloned();
    let mut history = lock(history);
    match event.action.as_deref() {
        Some("create") => {
            if let Some(name) = name {
                history.created.insert(id, name);
            }
        }
        Some("start") => {
            history.starts.insert((id, event.time_nano.unwrap_or(0)));
        }
        _ => {}
    }
}

fn unit_of(container: ContainerSummary) -> Option<Unit> {
    let name = name_of(&container)?;
    Some(Unit {
        running: container.state == Some(ContainerSummaryStateEnum::RUNNING),
        pid: None,
        id: container.id?,
        name,
    })
}

fn name_of(container: &ContainerSummary) -> Option<String> {
    container
        .names
        .as_ref()?
        .first()
        .map(|n| n.trim_start_matches('/').to_owned())
}

fn lock(history: &Mutex<History>) -> std::sync::MutexGuard<'_, History> {
    history.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    //! The docker lane on the real engine (skipped, saying why, where none is reachable; a
    //! failure under `REQUIRE_DOCKER=1`), and its error where there is none.

    use tea_compute::{
        ComputeOwner, ComputeProvider, ComputeSpec, Deleted, ImageRef,
        docker::{
            DockerConfig, DockerProvider,
            testing::{SLEEPER_IMAGE, engine_or_skip, sleeper_images},
        },
    };
    use tea_harness::wait_for;

    use super::*;

    const WAIT: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn no_engine_is_a_clear_error() {
        let err = connect(Some("unix:///nonexistent/docker.sock"))
            .await
            .expect_err("no engine there");
        let message = format!("{err:#}");
        assert!(
            message.contains("the docker lane needs a Docker engine")
                && message.contains("/nonexistent/docker.sock"),
            "{message}"
        );
    }

    /// Containers of `filter` (`label` or `label=value`) and whether `network` exists.
    async fn on_engine(docker: &Docker, filters: &[String], network: &str) -> (Vec<String>, bool) {
        let mut names = Vec::new();
        for filter in filters {
            let containers = list_labelled(docker, filter)
                .await
                .expect("list containers");
            names.extend(containers.iter().filter_map(name_of));
        }
        (names, docker.inspect_network(network, None).await.is_ok())
    }

    fn filters(lane: &DockerLane) -> Vec<String> {
        vec![
            format!("{OWNER_LABEL}={}", lane.owner),
            format!("{TEST_LABEL}={}", lane.foreign_label),
        ]
    }

    /// The lane seeds foreign containers, lists, kills and cuts off its own, counts what the
    /// engine created, and leaves nothing behind: when cleaned up, and when dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn docker_lane_hits_its_containers_and_leaves_nothing() {
        let Some(docker) = engine_or_skip("chaos-docker-lane").await else {
            return;
        };
        sleeper_images(&docker).await.expect("sleeper images");
        let suffix = format!("{:08x}", rand::random::<u32>());
        let mut lane = DockerLane::start(docker.clone(), SLEEPER_IMAGE, &suffix)
            .await
            .expect("start the lane");
        assert_eq!(lane.foreign.len(), 4, "{:?}", lane.foreign);

        // A container of the lane, made as its workflow-worker would.
        let dir = std::env::temp_dir().join(format!("tea-chaos-test-{suffix}"));
        let mut cfg = DockerConfig::new(&dir);
        cfg.network = lane.network.clone();
        cfg.temporal_address = Some("host.docker.internal:7233".into());
        cfg.stop_grace = Duration::from_secs(1);
        let owner = ComputeOwner::new(lane.owner.clone()).expect("owner");
        let provider = DockerProvider::new(cfg, owner).expect("provider");
        let (repository, tag) = tea_compute::docker::split_reference(SLEEPER_IMAGE);
        let name = compute_name(&format!("chaos-test-run-{suffix}"), 1);
        let spec = ComputeSpec {
            name: name.clone(),
            image: ImageRef {
                registry: String::new(),
                repository: repository.to_owned(),
                tag: tag.to_owned(),
            },
            env: Vec::new(),
            resources: Default::default(),
        };
        provider.create_or_adopt(&spec).await.expect("create");

        let units = lane.units().await.expect("units");
        let ours: Vec<&Unit> = units
            .iter()
            .filter(|u| !lane.foreign.contains(&u.name))
            .collect();
        assert!(
            matches!(ours.as_slice(), [u] if u.name == name && u.running),
            "{units:?}"
        );
        assert_eq!(units.len(), 5, "the foreign ones are listed too: {units:?}");
        let unit = ours[0].clone();

        lane.disconnect(&unit).await.expect("disconnect");
        let container = docker
            .inspect_container(&unit.id, None)
            .await
            .expect("inspect");
        let networks = container
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default();
        assert!(!networks.contains_key(&lane.network), "{networks:?}");

        lane.kill(&unit).await.expect("kill");
        wait_for("the killed container to stop", WAIT, || async {
            let units = lane.units().await.ok()?;
            units
                .iter()
                .any(|u| u.name == name && !u.running)
                .then_some(())
        })
        .await;
        let created = wait_for("the engine's events to arrive", WAIT, || async {
            let created = lane.created();
            (created.starts == 1).then_some(created)
        })
        .await;
        assert_eq!(created.containers, 1, "{created:?}");
        assert!(created.duplicates.is_empty(), "{created:?}");

        assert_eq!(
            provider.delete(&name).await.expect("delete"),
            Deleted::Removed
        );
        let removed = lane.clean_up().await.expect("clean up");
        assert_eq!(
            removed.len(),
            5,
            "4 foreign containers and the network: {removed:?}"
        );
        let (left, network) = on_engine(&docker, &filters(&lane), &lane.network).await;
        assert!(
            left.is_empty() && !network,
            "left: {left:?}, network: {network}"
        );

        // Dropped without a cleanup (an error, Ctrl-C): removed all the same.
        let other = format!("{:08x}", rand::random::<u32>());
        let dropped = DockerLane::start(docker.clone(), SLEEPER_IMAGE, &other)
            .await
            .expect("start another lane");
        let (filters, network) = (filters(&dropped), dropped.network.clone());
        drop(dropped);
        let (left, network) = on_engine(&docker, &filters, &network).await;
        assert!(
            left.is_empty() && !network,
            "left: {left:?}, network: {network}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

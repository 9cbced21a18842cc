//! `tea-fake-k8s`: a fake Kubernetes cluster for the Kubernetes provider's tests and the
//! end-to-end tests: an API server over HTTP with the real REST paths and semantics kube uses
//! (its `api` module), a control plane (Job controller, TTL-after-finished, garbage collector:
//! [`controller`]) and a one-node kubelet that runs each pod's container as a local process,
//! chosen from the image reference by [`FakeK8sConfig::images`] ([`kubelet`]).
//!
//! Every create body is checked against the official strict schemas of the PyPI package
//! `kubernetes-validate` (see [`schema`]); the fake does not start without them. Faults are
//! armed in-process ([`FakeK8s::inject`]) or with `POST /_fake/faults` ([`Fault`]); a pod is
//! evicted with [`FakeK8s::evict`] or `POST /_fake/pods/{ns}/{name}/evict`, deleted with the
//! API. [`FakeK8s::write_kubeconfig`] writes the kubeconfig a client uses to reach it.
//!
//! # Where it differs from a cluster
//! - No authentication, no admission but the schemas and the checks of [`validate`], no watch,
//!   no `resourceVersion` preconditions; one namespace is as good as another (none is created).
//! - The kubelet retries a pod that cannot start on every tick (50 ms), not with a back-off.
//! - A pod's container is a process on this machine, with the fake's environment (less
//!   [`kubelet::STRIPPED_ENV_PREFIXES`]) and the pod's; its security context is only checked.

mod api;
pub mod controller;
pub mod faults;
pub mod kubelet;
pub mod schema;
pub mod store;
pub mod validate;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use faults::{Fault, Op, UNSCHEDULABLE_MESSAGE};
pub use schema::{SCHEMA_PACKAGE, SCHEMA_VERSION};
pub use store::Kind;

use store::Shared;

/// The name of the fake's one node.
pub const NODE_NAME: &str = "fake-node";

/// Configuration of a fake cluster.
#[derive(Clone, Debug)]
pub struct FakeK8sConfig {
    /// Listen address; port 0 picks a free port (default `127.0.0.1:0`).
    pub bind: SocketAddr,
    /// The program (and arguments) each image reference runs; an image not listed cannot be
    /// pulled (`ErrImagePull`).
    pub images: BTreeMap<String, (PathBuf, Vec<String>)>,
    /// Where containers' logs go, one file per pod.
    pub log_dir: PathBuf,
    /// The strict schema directory; `None`: found as [`schema::locate`] says.
    pub schema_dir: Option<PathBuf>,
    /// How often the controllers and the kubelet run (default 50 ms).
    pub tick: Duration,
}

impl FakeK8sConfig {
    /// Defaults, with containers' logs under `log_dir`.
    pub fn new(log_dir: impl Into<PathBuf>) -> Self {
        FakeK8sConfig {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            images: BTreeMap::new(),
            log_dir: log_dir.into(),
            schema_dir: None,
            tick: Duration::from_millis(50),
        }
    }

    /// Runs `program` with `args` for the image `image` (builder style).
    pub fn with_image<I, S>(mut self, image: &str, program: impl Into<PathBuf>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args = args.into_iter().map(Into::into).collect();
        self.images.insert(image.to_owned(), (program.into(), args));
        self
    }
}

/// A running fake cluster; dropping it stops the server and kills every container.
pub struct FakeK8s {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl FakeK8s {
    /// Loads the schemas, binds the listener and starts serving (inside a tokio runtime).
    pub async fn start(cfg: FakeK8sConfig) -> anyhow::Result<FakeK8s> {
        let schemas = schema::Schemas::load(cfg.schema_dir.as_deref())?;
        std::fs::create_dir_all(&cfg.log_dir)
            .with_context(|| format!("creating {}", cfg.log_dir.display()))?;
        let listener = tokio::net::TcpListener::bind(cfg.bind)
            .await
            .with_context(|| format!("binding {}", cfg.bind))?;
        let mut addr = listener.local_addr()?;
        if addr.ip().is_unspecified() {
            addr.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        let tick = cfg.tick;
        let shared = Shared::new(cfg, schemas, format!("http://{addr}"));
        let router = api::router(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "fake-k8s server failed");
            }
        });
        let ticking = shared.clone();
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            loop {
                interval.tick().await;
                controller::tick(&ticking);
                kubelet::tick(&ticking);
            }
        });
        tracing::info!(url = %shared.base_url, schemas = %shared.schemas.dir().display(), "fake-k8s listening");
        Ok(FakeK8s {
            shared,
            addr,
            stop: Some(tx),
            tasks: vec![server, ticker],
        })
    }

    /// `http://127.0.0.1:PORT`, the API server's address.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Writes a kubeconfig whose current context is this cluster, in `namespace`.
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) -> anyhow::Result<()> {
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user:\n    token: fake-token\ncontexts:\n- name: fake\n  \
             context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\n\
             current-context: fake\n",
            self.base_url()
        );
        std::fs::write(path, config).with_context(|| format!("writing {}", path.display()))
    }

    /// Arms a fault.
    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// The objects of `kind` in `namespace`, as the API server would return them.
    pub fn objects(&self, kind: Kind, namespace: &str) -> Vec<Value> {
        let st = self.shared.lock();
        st.of_kind(kind, namespace)
            .into_iter()
            .map(|(_, o)| o)
            .collect()
    }

    /// Names of the objects of `kind` in `namespace`.
    pub fn names(&self, kind: Kind, namespace: &str) -> Vec<String> {
        let st = self.shared.lock();
        st.of_kind(kind, namespace)
            .into_iter()
            .map(|((_, _, name), _)| name)
            .collect()
    }

    /// Stores `object` as if a client had created it (someone else's Job or Secret), checked
    /// like any create.
    pub fn seed(&self, kind: Kind, namespace: &str, object: Value) -> anyhow::Result<Value> {
        if let Err(causes) = validate::check(&self.shared, kind, namespace, &object) {
            anyhow::bail!("invalid {}: {causes:?}", kind.name());
        }
        controller::create(&self.shared, kind, namespace, object)
            .map_err(|status| anyhow::anyhow!("{}", status["message"]))
    }

    /// Create bodies as received, secrets included (in-process only).
    pub fn create_bodies(&self, kind: Kind) -> Vec<Value> {
        let st = self.shared.lock();
        st.create_bodies
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, body)| body.clone())
            .collect()
    }

    /// Names of every pod whose container was started, ever.
    pub fn pods_started(&self) -> Vec<String> {
        self.shared.lock().pods_started.clone()
    }

    /// Evicts a pod (see [`kubelet::evict`]); false when there is no such pod.
    pub fn evict(&self, namespace: &str, pod: &str) -> bool {
        kubelet::evict(&self.shared, namespace, pod)
    }

    /// Deletes an object as a client would (`policy`: a propagation policy).
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str, policy: Option<&str>) -> bool {
        let key = (kind, namespace.to_owned(), name.to_owned());
        controller::delete(&self.shared, &key, policy, None).is_ok()
    }

    /// Stops the server and kills every container.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        kubelet::kill_all(&self.shared);
        self.shared.procs().clear();
    }
}

impl Drop for FakeK8s {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        for task in &self.tasks {
            task.abort();
        }
        kubelet::kill_all(&self.shared);
    }
}

/// Every object's name (pods with their phase), for `GET /_fake/state`.
pub(crate) fn summary(shared: &Shared) -> Value {
    let st = shared.lock();
    let mut out = json!({"jobs": [], "pods": [], "secrets": [], "faults": st.faults.clone()});
    for ((kind, ns, name), object) in &st.objects {
        let entry = json!({"namespace": ns, "name": name, "phase": object["status"]["phase"], "deleting": store::is_deleting(object)});
        let list = match kind {
            Kind::Job => "jobs",
            Kind::Pod => "pods",
            Kind::Secret => "secrets",
        };
        if let Some(items) = out[list].as_array_mut() {
            items.push(entry);
        }
    }
    out
}

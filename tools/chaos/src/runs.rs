//! The runs of a chaos run: their input, starting them, waiting for each to close across
//! dev server restarts (a fresh client per attempt, transient errors retried until the
//! deadline), and cancelling or terminating them.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use anyhow::anyhow;
use tea_contract::{GoDuration, TriggerExternalWorkflowClient, WorkflowInput};
use tea_starter::{RunEnd, RunHandle};
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, Url, WorkflowCancelOptions,
    WorkflowStartOptions, WorkflowTerminateOptions,
};
use temporalio_common::data_converters::RawValue;
use tokio::{task::JoinHandle, time::Instant};

use crate::{lanes::Kind, say};

/// How long one connection attempt to the dev server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between attempts after a transient error (the server may be restarting).
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// How a run ended, as far as the chaos command knows.
#[derive(Clone, Debug)]
pub enum Outcome {
    Completed {
        attempts: u32,
        compute: String,
    },
    Failed(String),
    Cancelled,
    Terminated,
    TimedOut,
    /// Still open at the deadline (with the last error seen while waiting, if any).
    Open(String),
}

impl From<RunEnd> for Outcome {
    fn from(end: RunEnd) -> Self {
        match end {
            RunEnd::Completed(outcome) => Outcome::Completed {
                attempts: outcome.attempts,
                compute: outcome.compute_name,
            },
            RunEnd::Failed(message) => Outcome::Failed(message),
            RunEnd::Cancelled => Outcome::Cancelled,
            RunEnd::Terminated => Outcome::Terminated,
            RunEnd::TimedOut => Outcome::TimedOut,
        }
    }
}

/// What the chaos loop did to a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intervention {
    Cancel,
    Terminate,
}

/// One run and what happened to it.
#[derive(Clone, Debug)]
pub struct Run {
    pub id: String,
    pub run_id: String,
    pub kind: Kind,
    pub outcome: Option<Outcome>,
    pub intervention: Option<Intervention>,
    /// External workers of this run the chaos loop SIGKILLed.
    pub worker_kills: u32,
    /// Containers of this run the chaos loop cut off their network.
    pub disconnects: u32,
}

impl Run {
    pub fn new(id: String, run_id: String, kind: Kind) -> Self {
        Run {
            id,
            run_id,
            kind,
            outcome: None,
            intervention: None,
            worker_kills: 0,
            disconnects: 0,
        }
    }

    /// Kills and network cuts of this run's compute (each costs a compute attempt).
    pub fn hits(&self) -> u32 {
        self.worker_kills + self.disconnects
    }

    /// Whether the run has not closed yet.
    pub fn open(&self) -> bool {
        self.outcome.is_none()
    }

    /// Whether `compute` is a name this run's compute may have.
    pub fn owns(&self, compute: &str) -> bool {
        (1..=MAX_ATTEMPTS).any(|a| tea_compute::naming::compute_name(&self.run_id, a) == compute)
    }
}

/// The runs, shared by the waiters and the chaos loop.
pub type Runs = Arc<Mutex<Vec<Run>>>;

/// Locks the runs (a poisoned lock is recovered: the data stays usable).
pub fn lock(runs: &Runs) -> MutexGuard<'_, Vec<Run>> {
    runs.lock().unwrap_or_else(|e| e.into_inner())
}

/// Compute attempts each run may use.
pub const MAX_ATTEMPTS: u32 = 3;

/// The input of every run: short pauses and heartbeats so failures show quickly.
pub fn input(job_duration: GoDuration) -> WorkflowInput {
    WorkflowInput {
        registry: "sje-test-registry".into(),
        repository: "external".into(),
        tag: "latest".into(),
        job_duration: Some(job_duration),
        pause: Some(GoDuration::from_millis(200)),
        heartbeat_timeout: Some(GoDuration::from_secs(2)),
        worker_start_timeout: Some(GoDuration::from_secs(30)),
        max_compute_attempts: Some(MAX_ATTEMPTS),
        ..Default::default()
    }
}

/// A client on the `default` namespace of the dev server at `address`, or `None` when it does
/// not answer within [`CONNECT_TIMEOUT`].
pub async fn connect(address: &str) -> Option<Client> {
    let url = Url::parse(&format!("http://{address}")).ok()?;
    let connecting = Connection::connect(ConnectionOptions::new(url).build());
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .ok()?
        .ok()?;
    Client::new(connection, ClientOptions::new("default").build()).ok()
}

/// Like [`connect`], retrying until `deadline`.
pub async fn connect_retrying(address: &str, deadline: Instant) -> anyhow::Result<Client> {
    loop {
        if let Some(client) = connect(address).await {
            return Ok(client);
        }
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "could not connect to the dev server at {address} before the deadline"
            ));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Retry-After of the long rate-limit fault: longer than the runs' heartbeat timeout.
pub const LONG_RETRY_AFTER_SECS: u64 = 5;

/// A raw workflow input another client might send that the workflow cannot use.
pub fn bad_input(rng: &mut impl rand::Rng) -> RawValue {
    let inputs = [
        serde_json::json!({"registry": "r", "repository": "external"}),
        serde_json::json!("external:latest"),
        serde_json::json!({"registry": "r", "repository": "external", "tag": "latest",
                           "job_duration": -5_000_000_000_i64}),
    ];
    let input = &inputs[rng.random_range(0..inputs.len())];
    RawValue::new(vec![tea_contract::json_payload(input)])
}

/// Starts a run with a raw input, as any client may; returns its run ID.
pub async fn start_raw(
    client: &Client,
    task_queue: &str,
    id: &str,
    input: RawValue,
) -> anyhow::Result<String> {
    let handle = client
        .start_workflow(
            TriggerExternalWorkflowClient,
            input,
            WorkflowStartOptions::new(task_queue, id).build(),
        )
        .await
        .map_err(|e| anyhow!("could not start {id}: {e}"))?;
    handle
        .run_id()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("the server returned no run ID for {id}"))
}

/// Starts a run; returns its run ID.
pub async fn start(
    client: &Client,
    task_queue: &str,
    id: &str,
    input: WorkflowInput,
) -> anyhow::Result<String> {
    let handle = tea_starter::start(client, task_queue, id, input).await?;
    handle
        .run_id()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("the server returned no run ID for {id}"))
}

/// A handle on the latest run of workflow `id`.
pub fn handle(client: &Client, id: &str) -> RunHandle {
    tea_starter::handle(client, id)
}

/// Waits until run `id` closes, reconnecting after errors, at most until `deadline`.
pub async fn wait_closed(address: &str, id: &str, deadline: Instant) -> Outcome {
    let mut last_error = String::new();
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Outcome::Open(last_error);
        }
        let Some(client) = connect(address).await else {
            last_error = format!("cannot connect to {address}");
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        };
        let handle = handle(&client, id);
        match tokio::time::timeout_at(deadline, tea_starter::wait(&handle)).await {
            Err(_) => return Outcome::Open(last_error),
            Ok(Ok(end)) => return end.into(),
            Ok(Err(e)) => {
                last_error = format!("{e:#}");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// One task per run that records how it closed.
pub fn spawn_waiters(runs: &Runs, address: &str, deadline: Instant) -> Vec<JoinHandle<()>> {
    let ids: Vec<(String, Kind)> = lock(runs).iter().map(|r| (r.id.clone(), r.kind)).collect();
    ids.into_iter()
        .map(|(id, kind)| {
            let runs = runs.clone();
            let address = address.to_owned();
            tokio::spawn(async move {
                let outcome = wait_closed(&address, &id, deadline).await;
                say!("{kind}: run {id} closed: {}", describe(&outcome));
                if let Some(run) = lock(&runs).iter_mut().find(|r| r.id == id) {
                    run.outcome = Some(outcome);
                }
            })
        })
        .collect()
}

/// One-line description of an outcome.
pub fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Completed { attempts, compute } => {
            format!("completed on {compute} (compute attempts: {attempts})")
        }
        Outcome::Failed(message) => format!("FAILED: {message}"),
        Outcome::Cancelled => "cancelled".into(),
        Outcome::Terminated => "terminated".into(),
        Outcome::TimedOut => "timed out".into(),
        Outcome::Open(error) if error.is_empty() => "still open at the deadline".into(),
        Outcome::Open(error) => format!("still open at the deadline (last error: {error})"),
    }
}

/// Cancels or terminates run `id`.
pub async fn intervene(client: &Client, id: &str, what: Intervention) -> anyhow::Result<()> {
    let handle = handle(client, id);
    match what {
        Intervention::Cancel => handle
            .cancel(WorkflowCancelOptions::builder().reason("chaos").build())
            .await
            .map_err(|e| anyhow!("cancel {id}: {e}")),
        Intervention::Terminate => handle
            .terminate(WorkflowTerminateOptions::builder().reason("chaos").build())
            .await
            .map_err(|e| anyhow!("terminate {id}: {e}")),
    }
}

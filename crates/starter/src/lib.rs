//! Starting a run of `TriggerExternalWorkflow` and waiting for how it ended.
//!
//! Used by the `starter` binary, the tests and the benchmarks, so all of them start runs the same
//! way a Go starter would: workflow type `TriggerExternalWorkflow` on `taskQueueName`, one JSON
//! input payload.

pub mod status;
pub mod summary;

use std::fmt;

use anyhow::{Context, anyhow};
use tea_contract::WorkflowInput;
use tea_contract::{RunOutcome, TriggerExternalWorkflowClient};
use temporalio_client::{
    Client, WorkflowGetResultOptions, WorkflowHandle, WorkflowStartOptions,
    errors::WorkflowGetResultError,
};

/// A started run.
pub type RunHandle = WorkflowHandle<Client, TriggerExternalWorkflowClient>;

/// A handle on the latest run of workflow `workflow_id`.
pub fn handle(client: &Client, workflow_id: &str) -> RunHandle {
    client.get_workflow_handle::<TriggerExternalWorkflowClient>(workflow_id)
}

/// How a run ended.
#[derive(Debug)]
pub enum RunEnd {
    Completed(Box<RunOutcome>),
    Failed(String),
    Cancelled,
    Terminated,
    TimedOut,
}

impl RunEnd {
    /// Exit status for command lines: 0 completed, 1 failed or timed out, 3 cancelled or
    /// terminated.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunEnd::Completed(_) => 0,
            RunEnd::Failed(_) | RunEnd::TimedOut => 1,
            RunEnd::Cancelled | RunEnd::Terminated => 3,
        }
    }
}

impl fmt::Display for RunEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // What the job did is measured apart (see [`summary`]).
            RunEnd::Completed(outcome) => {
                write!(
                    f,
                    "completed on {} compute {} (queue {}), compute deleted",
                    outcome.provider, outcome.compute_name, outcome.task_queue
                )?;
                if !outcome.usage.is_empty() {
                    let seconds: f64 = outcome.usage.iter().map(|u| u.seconds).sum();
                    write!(
                        f,
                        "; {:.1} compute-seconds in {} unit(s)",
                        seconds,
                        outcome.usage.len()
                    )?;
                    let costs: Option<Vec<f64>> =
                        outcome.usage.iter().map(|u| u.estimated_cost_usd).collect();
                    if let Some(costs) = costs {
                        write!(f, ", est. ${:.6}", costs.iter().sum::<f64>())?;
                    }
                }
                Ok(())
            }
            RunEnd::Failed(message) => write!(f, "failed: {message}"),
            RunEnd::Cancelled => f.write_str("cancelled"),
            RunEnd::Terminated => f.write_str("terminated"),
            RunEnd::TimedOut => f.write_str("timed out"),
        }
    }
}

/// Starts a run with `input` under `workflow_id` on `task_queue`.
pub async fn start(
    client: &Client,
    task_queue: &str,
    workflow_id: &str,
    input: WorkflowInput,
) -> anyhow::Result<RunHandle> {
    input.validate().map_err(|e| anyhow!(e))?;
    client
        .start_workflow(
            TriggerExternalWorkflowClient,
            input.to_raw(),
            WorkflowStartOptions::new(task_queue, workflow_id).build(),
        )
        .await
        .with_context(|| format!("could not start workflow {workflow_id} on {task_queue}"))
}

/// Waits until the run closes and says how.
pub async fn wait(handle: &RunHandle) -> anyhow::Result<RunEnd> {
    match handle.get_result(WorkflowGetResultOptions::default()).await {
        Ok(outcome) => Ok(RunEnd::Completed(Box::new(outcome))),
        Err(WorkflowGetResultError::Failed(error)) => Ok(RunEnd::Failed(failure_message(&error))),
        Err(WorkflowGetResultError::Cancelled { .. }) => Ok(RunEnd::Cancelled),
        Err(WorkflowGetResultError::Terminated { .. }) => Ok(RunEnd::Terminated),
        Err(WorkflowGetResultError::TimedOut) => Ok(RunEnd::TimedOut),
        Err(other) => Err(anyhow!("could not get the result of the run: {other}")),
    }
}

/// The result of run `workflow_id` when it completed; `None` while it runs or when it ended
/// otherwise.
pub async fn outcome(client: &Client, workflow_id: &str) -> anyhow::Result<Option<RunOutcome>> {
    match handle(client, workflow_id)
        .get_result(WorkflowGetResultOptions::default())
        .await
    {
        Ok(outcome) => Ok(Some(outcome)),
        Err(WorkflowGetResultError::Failed(_))
        | Err(WorkflowGetResultError::Cancelled { .. })
        | Err(WorkflowGetResultError::Terminated { .. })
        | Err(WorkflowGetResultError::TimedOut) => Ok(None),
        Err(other) => Err(anyhow!(
            "could not get the result of {workflow_id}: {other}"
        )),
    }
}

/// The failure's message with its causes.
fn failure_message(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = inner.source();
    }
    message
}

/// Link to the run in the Temporal Web UI: `ui_base` when given (TEMPORAL_UI_URL), Temporal
/// Cloud's UI for a `*.tmprl.cloud` address, else a dev server's UI, which `temporal server
/// start-dev` serves on its port plus 1000 unless told otherwise (`--ui-port`: then set
/// TEMPORAL_UI_URL).
pub fn ui_link(address: &str, namespace: &str, workflow_id: &str, ui_base: Option<&str>) -> String {
    let base = match ui_base {
        Some(base) => base.trim_end_matches('/').to_owned(),
        None if address.contains("tmprl.cloud") => "https://cloud.temporal.io".to_owned(),
        None => {
            let authority = address
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .split('/')
                .next()
                .unwrap_or_default();
            let (host, port) = authority
                .rsplit_once(':')
                .map_or((authority, None), |(host, port)| {
                    (host, port.parse::<u16>().ok())
                });
            let host = Some(host).filter(|h| !h.is_empty()).unwrap_or("localhost");
            let ui_port = port.unwrap_or(7233).saturating_add(1000);
            format!("http://{host}:{ui_port}")
        }
    };
    format!("{base}/namespaces/{namespace}/workflows/{workflow_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ui_links() {
        assert_eq!(
            ui_link("http://127.0.0.1:7233/", "default", "wf", None),
            "http://127.0.0.1:8233/namespaces/default/workflows/wf"
        );
        assert_eq!(
            ui_link("https://ns.acct.tmprl.cloud:7233", "ns.acct", "wf", None),
            "https://cloud.temporal.io/namespaces/ns.acct/workflows/wf"
        );
        assert_eq!(
            ui_link("x:7233", "default", "wf", Some("https://ui.example/")),
            "https://ui.example/namespaces/default/workflows/wf"
        );
        // A dev server on another port serves its UI 1000 above it.
        assert_eq!(
            ui_link("127.0.0.1:17233", "default", "wf", None),
            "http://127.0.0.1:18233/namespaces/default/workflows/wf"
        );
        assert_eq!(
            ui_link("temporal", "default", "wf", None),
            "http://temporal:8233/namespaces/default/workflows/wf"
        );
    }
}

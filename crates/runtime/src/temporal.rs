//! The Temporal side of a process: connection from envconfig, SDK runtime, build ID, signals.

use anyhow::{Context, anyhow};
use std::{net::SocketAddr, sync::Arc};

use crate::Metrics;
use temporalio_client::{
    Client, ClientOptions, Connection, NamespacedClient, envconfig::LoadClientConfigProfileOptions,
    grpc::WorkflowService, tonic,
};
use temporalio_common::protos::temporal::api::{
    common::v1::WorkflowExecution,
    enums::v1::WorkflowExecutionStatus,
    workflowservice::v1::{DescribeWorkflowExecutionRequest, DescribeWorkflowExecutionResponse},
};

use temporalio_common::telemetry::{TelemetryOptions, metrics::CoreMeter};
use temporalio_sdk::{Runtime, runtime::RuntimeOptions};

/// What a process connected to, for logs: never carries the API key.
#[derive(Clone, Debug)]
pub struct ConnectionSummary {
    pub address: String,
    pub namespace: String,
    pub tls: bool,
    pub api_key: bool,
}

/// Connects using the standard Temporal client environment (TEMPORAL_ADDRESS,
/// TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS*, TEMPORAL_GRPC_META_*, TEMPORAL_PROFILE,
/// temporal.toml). With `TEA_TEMPORAL_ENV_ONLY=true` (set on every unit of compute) the
/// environment alone counts: no config file is read.
pub async fn connect() -> anyhow::Result<(Client, ConnectionSummary)> {
    let env_only = std::env::var(tea_contract::TEMPORAL_ENV_ONLY_ENV)
        .is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let mut options = LoadClientConfigProfileOptions::default();
    options.disable_file = env_only;
    let (conn_opts, client_opts) = ClientOptions::load_from_config(options)
        .map_err(|e| anyhow!("invalid Temporal client configuration: {e}"))?;
    let summary = ConnectionSummary {
        address: conn_opts.target.to_string(),
        namespace: client_opts.namespace.clone(),
        tls: conn_opts.tls_options.is_some(),
        api_key: conn_opts.api_key.is_some(),
    };
    let connection = Connection::connect(conn_opts).await.with_context(|| {
        format!(
            "could not connect to Temporal at {} (namespace {}); is the server running and \
             TEMPORAL_ADDRESS right?",
            summary.address, summary.namespace
        )
    })?;
    let client = Client::new(connection, client_opts)
        .map_err(|e| anyhow!("could not create the Temporal client: {e}"))?;
    Ok((client, summary))
}

/// The SDK runtime on the current tokio runtime, with the SDK's own logging left off (our
/// subscriber is the only one) and its metrics recorded into `meter` when given.
pub fn new_runtime(meter: Option<Arc<dyn CoreMeter>>) -> anyhow::Result<Runtime> {
    let telemetry = TelemetryOptions::builder().maybe_metrics(meter).build();
    let options = RuntimeOptions::builder()
        .telemetry_options(telemetry)
        .build()
        .map_err(|e| anyhow!("invalid SDK runtime options: {e}"))?;
    Runtime::from_current_tokio(options)
        .map_err(|e| anyhow!("could not start the Temporal SDK runtime: {e}"))
}

/// What a worker process needs: the SDK runtime, a connected client, and its metrics.
pub struct WorkerProcess {
    pub runtime: Runtime,
    pub client: Client,
    pub metrics: Metrics,
}

/// Starts the metrics endpoint (when `metrics_addr` is given), the SDK runtime recording into
/// it, and the Temporal connection, logging where each went (never a credential).
pub async fn start_worker_process(
    metrics_addr: Option<SocketAddr>,
) -> anyhow::Result<WorkerProcess> {
    let meter = match metrics_addr {
        Some(addr) => {
            let (meter, bound) = crate::metrics::start_exporter(addr)?;
            tracing::info!(address = %bound, "serving Prometheus metrics at /metrics");
            Some(meter)
        }
        None => None,
    };
    let metrics = Metrics::new(meter.clone());
    let runtime = new_runtime(meter)?;
    let (client, conn) = connect().await?;
    tracing::info!(
        address = %conn.address,
        namespace = %conn.namespace,
        tls = conn.tls,
        api_key = conn.api_key,
        "connected to Temporal"
    );
    Ok(WorkerProcess {
        runtime,
        client,
        metrics,
    })
}

/// The status of a workflow run (`run_id` `None`: the latest run of `workflow_id`), in the
/// client's namespace; `Ok(None)` when Temporal does not know the run.
pub async fn run_status(
    client: &Client,
    workflow_id: &str,
    run_id: Option<&str>,
) -> Result<Option<WorkflowExecutionStatus>, tonic::Status> {
    let description = run_description(client, workflow_id, run_id).await?;
    Ok(description.map(|description| {
        description
            .workflow_execution_info
            .map(|info| info.status())
            .unwrap_or(WorkflowExecutionStatus::Unspecified)
    }))
}

/// What Temporal knows of a workflow run (`run_id` `None`: the latest run of `workflow_id`),
/// in the client's namespace; `Ok(None)` when it does not know the run.
pub async fn run_description(
    client: &Client,
    workflow_id: &str,
    run_id: Option<&str>,
) -> Result<Option<DescribeWorkflowExecutionResponse>, tonic::Status> {
    let request = DescribeWorkflowExecutionRequest {
        namespace: client.namespace(),
        execution: Some(WorkflowExecution {
            workflow_id: workflow_id.to_owned(),
            run_id: run_id.unwrap_or_default().to_owned(),
        }),
    };
    let mut client = client.clone();
    match client
        .describe_workflow_execution(tonic::Request::new(request))
        .await
    {
        Ok(response) => Ok(Some(response.into_inner())),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
        Err(status) => Err(status),
    }
}

/// An explicit worker build ID. The SDK's default hashes the whole executable, which costs
/// seconds for large debug binaries at every worker start.
pub fn build_id(package: &str, version: &str) -> String {
    format!("{package}@{version}")
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

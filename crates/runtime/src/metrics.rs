//! Prometheus metrics: one exporter per process serving the SDK's worker metrics and ours.
//!
//! [`start_exporter`] binds the endpoint and returns the meter; pass it to [`crate::new_runtime`]
//! so the SDK records into it, and build the application's own instruments from it
//! ([`Metrics`]). Without an address nothing is exported and every instrument is a no-op.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::anyhow;
use temporalio_common::telemetry::{
    PrometheusExporterOptions,
    metrics::{
        CoreMeter, Counter, Gauge, HistogramDuration, MetricKeyValue, MetricParameters,
        NewAttributes,
    },
    start_prometheus_metric_exporter,
};

/// Starts the Prometheus endpoint on `addr` (`/metrics`); returns the meter and the bound address.
pub fn start_exporter(addr: SocketAddr) -> anyhow::Result<(Arc<dyn CoreMeter>, SocketAddr)> {
    let options = PrometheusExporterOptions::builder()
        .socket_addr(addr)
        .counters_total_suffix(true)
        .use_seconds_for_durations(true)
        .build();
    let started = start_prometheus_metric_exporter(options)
        .map_err(|e| anyhow!("could not serve metrics on {addr}: {e}"))?;
    let meter: Arc<dyn CoreMeter> = started.meter;
    Ok((meter, started.bound_addr))
}

/// The application's instruments, over a meter or none.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    meter: Option<Arc<dyn CoreMeter>>,
}

impl Metrics {
    pub fn new(meter: Option<Arc<dyn CoreMeter>>) -> Self {
        Self { meter }
    }

    /// Adds `value` to the counter `name` with these labels.
    pub fn count(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, String)],
        value: u64,
    ) {
        if let Some(meter) = &self.meter {
            let counter: Counter = meter.counter(params(name, help, ""));
            counter.add(value, &meter.new_attributes(attributes(labels)));
        }
    }

    /// Records a duration in the histogram `name`.
    pub fn observe(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, String)],
        value: Duration,
    ) {
        if let Some(meter) = &self.meter {
            let histogram: HistogramDuration = meter.histogram_duration(params(name, help, "s"));
            histogram.record(value, &meter.new_attributes(attributes(labels)));
        }
    }

    /// Sets the gauge `name`.
    pub fn set(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, String)],
        value: u64,
    ) {
        if let Some(meter) = &self.meter {
            let gauge: Gauge = meter.gauge(params(name, help, ""));
            gauge.record(value, &meter.new_attributes(attributes(labels)));
        }
    }

    pub fn enabled(&self) -> bool {
        self.meter.is_some()
    }
}

fn params(name: &'static str, help: &'static str, unit: &'static str) -> MetricParameters {
    MetricParameters::builder()
        .name(name)
        .description(help)
        .unit(unit)
        .build()
}

fn attributes(labels: &[(&str, String)]) -> NewAttributes {
    NewAttributes::from(
        labels
            .iter()
            .map(|(k, v)| MetricKeyValue::new(*k, v.clone()))
            .collect::<Vec<_>>(),
    )
}

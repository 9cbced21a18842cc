//! Reading a process's Prometheus endpoint (`METRICS_ADDR`) in the tests: the address it serves
//! it on, and one counter's value, waited for with a deadline.

use std::time::Duration;

use crate::support::{Proc, wait_for};

/// How long a counter may take to appear on the endpoint.
const METRICS_TIMEOUT: Duration = Duration::from_secs(30);

/// `METRICS_ADDR` for a process under test: a loopback port the process picks and binds itself
/// (a port found free here could be taken before the process binds it); [`served_at`] reads
/// which.
pub(crate) const ANY_METRICS_ADDR: &str = "127.0.0.1:0";

/// The address `process` serves its metrics on, from the line its log has for it.
pub(crate) async fn served_at(process: &Proc) -> String {
    wait_for(
        "the metrics endpoint's address",
        METRICS_TIMEOUT,
        || async {
            let log = process.output();
            let line = log
                .lines()
                .find(|l| l.contains("serving Prometheus metrics"))?;
            let address = line.split_once("address=")?.1.split_whitespace().next()?;
            Some(address.to_owned())
        },
    )
    .await
}

/// The value of the counter `name` (`..._total`) whose labels include all of `labels`, once
/// the endpoint at `addr` reports it (panics, with the endpoint's text, if it never does).
pub(crate) async fn counter(addr: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let url = format!("http://{addr}/metrics");
    let series = || async {
        let body = reqwest::get(&url).await.ok()?.text().await.ok()?;
        Some((find(&body, name, labels), body))
    };
    let (value, body) = wait_for(
        &format!("{name} {labels:?} on {url}"),
        METRICS_TIMEOUT,
        || async { series().await.filter(|(value, _)| value.is_some()) },
    )
    .await;
    value.unwrap_or_else(|| panic!("{name} {labels:?} not served:\n{body}"))
}

/// The value of the series `name{...}` with all of `labels` in the exposition text `body`.
fn find(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

//! The `fake-do` binary: refuses to start without a token, prints its base URL, serves, and
//! exits cleanly on SIGTERM after stopping its workers.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use tea_harness::{pid_alive, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_fake-do");

#[test]
fn missing_token_is_a_clear_error() {
    let out = Command::new(BIN)
        .env_remove("FAKE_DO_TOKEN")
        .arg("--bind")
        .arg("127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token"), "{err}");
}

#[tokio::test]
async fn serves_and_stops_on_sigterm() {
    let mut child = Command::new(BIN)
        .env("FAKE_DO_TOKEN", "bin-token")
        .env("RUST_LOG", "warn")
        .args([
            "--bind",
            "127.0.0.1:0",
            "--step-delay",
            "50",
            "--worker-command",
            "/bin/sleep",
            "--",
            "1000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line.trim().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    let client = reqwest::Client::new();
    let body = serde_json::json!({"spec": {"name": "bin-app", "workers": [{
        "name": "w1", "image": {"registry_type": "DOCR", "repository": "r"}}]}});
    let resp = client
        .post(format!("{base}/v2/apps"))
        .bearer_auth("bin-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let pid = wait_for("the worker process", Duration::from_secs(10), || async {
        let state: serde_json::Value = client
            .get(format!("{base}/_fake/state"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        state["apps"][0]["worker_pid"].as_u64()
    })
    .await;

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_for(
        "fake-do to exit on SIGTERM",
        Duration::from_secs(15),
        || {
            let exited = child.try_wait().unwrap();
            async move { exited }
        },
    )
    .await;
    assert!(status.success(), "{status:?}");
    assert!(
        u32::try_from(pid).is_ok_and(|pid| !pid_alive(pid)),
        "worker {pid} survived the fake"
    );
}

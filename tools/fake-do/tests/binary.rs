//! The `fake-do` binary: refuses to start without a token, prints its base URL, serves, and
//! exits cleanly on SIGTERM after stopping its workers.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    // Wait for the worker process.
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        let state: serde_json::Value = client
            .get(format!("{base}/_fake/state"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(pid) = state["apps"][0]["worker_pid"].as_u64() {
            break pid;
        }
        assert!(Instant::now() < deadline, "worker never started: {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "fake-do did not exit on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(
        u32::try_from(pid).is_ok_and(|pid| !tea_harness::pid_alive(pid)),
        "worker {pid} survived the fake"
    );
}

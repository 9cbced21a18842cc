//! Worker process tests: a deployment that reaches ACTIVE starts the worker command with the
//! app's env; delete, shutdown and drop stop it; crashed workers are restarted.

mod common;

use std::time::Duration;

use common::{Api, config, create_body};
use reqwest::StatusCode;
use tea_fake_do::{FakeDo, FakeDoConfig, Signal};
use tea_harness::{pid_alive, scratch_dir, wait_for};

/// Worker that writes its env to `<dir>/<queue>.env`, then sleeps.
fn env_writer(dir: &std::path::Path) -> FakeDoConfig {
    config().with_worker_command(
        "/bin/sh",
        [
            "-c",
            r#"printf '%s|%s|%s\n' "$EXTERNAL_TASK_QUEUE" "$TEMPORAL_API_KEY" "${FAKE_DO_TOKEN:-unset}" > "$1/$EXTERNAL_TASK_QUEUE.env.tmp" && mv "$1/$EXTERNAL_TASK_QUEUE.env.tmp" "$1/$EXTERNAL_TASK_QUEUE.env"; exec sleep 1000"#,
            "sh",
            dir.to_str().unwrap(),
        ],
    )
}

async fn wait_pid(fake: &FakeDo, app_id: &str) -> u32 {
    let snap = fake
        .wait_until(Duration::from_secs(10), |s| {
            s.app(app_id).and_then(|a| a.worker_pid).is_some()
        })
        .await
        .expect("worker started");
    snap.app(app_id).and_then(|a| a.worker_pid).unwrap()
}

async fn create_ok(api: &Api, name: &str) -> String {
    let (s, v) = api.create(&create_body(name)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["app"]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn active_deployment_runs_worker_with_app_env_and_delete_stops_it() {
    let dir = scratch_dir("fake-do-env").unwrap();
    let mut cfg = env_writer(&dir);
    cfg.log_dir = Some(dir.join("logs"));
    let fake = FakeDo::start(cfg).await.unwrap();
    let api = Api::new(&fake);
    let app_id = create_ok(&api, "worker-app-1").await;
    let pid = wait_pid(&fake, &app_id).await;
    assert!(pid_alive(pid));
    let snap = fake.snapshot();
    assert_eq!(snap.app(&app_id).unwrap().phase, tea_fake_do::Phase::Active);

    let env_file = dir.join("worker-app-1.env");
    let line = wait_for(
        "the worker's environment file",
        Duration::from_secs(5),
        || async { std::fs::read_to_string(&env_file).ok() },
    )
    .await;
    assert_eq!(line.trim(), "worker-app-1|plain-secret-value-42|unset");
    let log_file = snap.app(&app_id).unwrap().log_file.clone().unwrap();
    assert!(
        std::fs::read_to_string(&log_file)
            .unwrap()
            .contains("starting worker")
    );

    let (s, _) = api.delete(&app_id).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        !pid_alive(pid),
        "worker {pid} still alive after delete returned"
    );
    assert!(fake.snapshot().apps.is_empty());
    fake.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn worker_ignoring_sigterm_is_killed_after_grace() {
    let dir = scratch_dir("fake-do-stubborn").unwrap();
    let mut cfg = config().with_worker_command(
        "/bin/sh",
        [
            "-c",
            r#"trap '' TERM; : > "$1/trapped"; while :; do sleep 0.05; done"#,
            "sh",
            dir.to_str().unwrap(),
        ],
    );
    cfg.kill_grace = Duration::from_millis(300);
    let fake = FakeDo::start(cfg).await.unwrap();
    let api = Api::new(&fake);
    let app_id = create_ok(&api, "stubborn-app").await;
    let pid = wait_pid(&fake, &app_id).await;
    // Only once the trap is set does the worker ignore SIGTERM.
    let trapped = dir.join("trapped");
    wait_for(
        "the worker to trap SIGTERM",
        Duration::from_secs(10),
        || async { trapped.exists().then_some(()) },
    )
    .await;
    let started = std::time::Instant::now();
    let (s, _) = api.delete(&app_id).await;
    assert_eq!(s, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(!pid_alive(pid));
    fake.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn crashed_worker_is_recorded_and_restarted() {
    let cfg = config().with_worker_command("/bin/sh", ["-c", "exit 3"]);
    let fake = FakeDo::start(cfg).await.unwrap();
    let api = Api::new(&fake);
    let app_id = create_ok(&api, "crashy-app").await;
    let snap = fake
        .wait_until(Duration::from_secs(10), |s| {
            s.app(&app_id).is_some_and(|a| a.restarts >= 2)
        })
        .await
        .expect("restarted twice");
    let app = snap.app(&app_id).unwrap();
    assert!(app.exits.len() >= 2);
    assert!(
        app.exits
            .iter()
            .all(|e| e.code == Some(3) && !e.stopped_by_fake)
    );
    api.delete(&app_id).await;
    fake.shutdown().await;
}

#[tokio::test]
async fn killed_worker_is_restarted_with_a_new_pid() {
    let cfg = config().with_worker_command("/bin/sleep", ["1000"]);
    let fake = FakeDo::start(cfg).await.unwrap();
    let api = Api::new(&fake);
    let app_id = create_ok(&api, "chaos-app").await;
    let pid = wait_pid(&fake, &app_id).await;
    // Via the admin endpoint.
    let resp = api
        .client
        .post(format!(
            "{}/_fake/apps/{app_id}/signal?signal=KILL",
            api.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let snap = fake
        .wait_until(Duration::from_secs(10), |s| {
            s.app(&app_id)
                .is_some_and(|a| a.restarts == 1 && a.worker_pid.is_some_and(|p| p != pid))
        })
        .await
        .expect("restarted");
    let app = snap.app(&app_id).unwrap();
    assert_eq!(app.exits[0].signal, Some(9));
    let new_pid = app.worker_pid.unwrap();
    assert!(!pid_alive(pid));
    // In-process too.
    assert!(fake.signal_worker(&app_id, Signal::SIGTERM));
    fake.wait_until(Duration::from_secs(10), |s| {
        s.app(&app_id).is_some_and(|a| a.restarts == 2)
    })
    .await
    .expect("restarted again");
    assert!(!pid_alive(new_pid));
    assert!(!fake.signal_worker("no-such-app", Signal::SIGTERM));
    fake.shutdown().await;
}

#[tokio::test]
async fn failed_deployment_starts_no_worker() {
    let cfg = config().with_worker_command("/bin/sleep", ["1000"]);
    let fake = FakeDo::start(cfg).await.unwrap();
    let api = Api::new(&fake);
    fake.inject(tea_fake_do::Fault::DeploymentError { count: 1 });
    let (_, v) = api.create(&create_body("no-worker-app")).await;
    let app_id = v["app"]["id"].as_str().unwrap();
    let dep = api
        .wait_terminal(
            app_id,
            v["app"]["pending_deployment"]["id"].as_str().unwrap(),
        )
        .await;
    assert_eq!(dep["phase"], "ERROR");
    let snap = fake.snapshot();
    assert_eq!(snap.app(app_id).unwrap().worker_pid, None);
    assert!(snap.app(app_id).unwrap().exits.is_empty());
    fake.shutdown().await;
}

#[tokio::test]
async fn shutdown_and_drop_kill_all_workers() {
    let cfg = config().with_worker_command("/bin/sleep", ["1000"]);
    let fake = FakeDo::start(cfg.clone()).await.unwrap();
    let api = Api::new(&fake);
    let a = create_ok(&api, "shut-a").await;
    let b = create_ok(&api, "shut-b").await;
    let pids = [wait_pid(&fake, &a).await, wait_pid(&fake, &b).await];
    fake.shutdown().await;
    for pid in pids {
        assert!(!pid_alive(pid), "{pid} survived shutdown");
    }

    let fake = FakeDo::start(cfg).await.unwrap();
    let api = Api::new(&fake);
    let c = create_ok(&api, "drop-c").await;
    let pid = wait_pid(&fake, &c).await;
    drop(fake);
    wait_for(
        "the dropped fake's worker to end",
        Duration::from_secs(5),
        || async { (!pid_alive(pid)).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn missing_worker_program_is_recorded_as_spawn_error() {
    let cfg = config().with_worker_command("/nonexistent/worker-binary", Vec::<String>::new());
    let fake = FakeDo::start(cfg).await.unwrap();
    let api = Api::new(&fake);
    let app_id = create_ok(&api, "missing-bin").await;
    let snap = fake
        .wait_until(Duration::from_secs(10), |s| {
            s.app(&app_id).is_some_and(|a| !a.exits.is_empty())
        })
        .await
        .expect("spawn failure recorded");
    assert!(snap.app(&app_id).unwrap().exits[0].spawn_error.is_some());
    let (s, _) = api.delete(&app_id).await;
    assert_eq!(s, StatusCode::OK);
    fake.shutdown().await;
}

//! The worker does not inherit the fake's own TEMPORAL_* / DIGITALOCEAN_* variables, only the
//! app's. Own test binary (a single test) because it mutates the process environment.

mod common;

use std::time::Duration;

use common::{Api, config, create_body};
use reqwest::StatusCode;
use tea_fake_do::FakeDo;
use tea_harness::{scratch_dir, wait_for};

#[test]
fn fake_environment_prefixes_are_stripped() {
    // SAFETY: this is the only test in this binary and no other thread exists yet.
    unsafe {
        std::env::set_var("TEMPORAL_ADDRESS", "fake-process-address:7233");
        std::env::set_var("DIGITALOCEAN_TOKEN", "must-not-leak");
        std::env::set_var("FAKE_DO_INHERITED_CHECK", "kept-by-others");
    }
    let dir = scratch_dir("fake-do-env-strip").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = config().with_worker_command(
            "/bin/sh",
            [
                "-c",
                r#"printf '%s|%s|%s|%s\n' "${TEMPORAL_ADDRESS:-unset}" "${DIGITALOCEAN_TOKEN:-unset}" "${TEMPORAL_API_KEY:-unset}" "${PATH:+path}" > "$1/out.tmp" && mv "$1/out.tmp" "$1/out"; exec sleep 1000"#,
                "sh",
                dir.to_str().unwrap(),
            ],
        );
        let fake = FakeDo::start(cfg).await.unwrap();
        let api = Api::new(&fake);
        let (s, _) = api.create(&create_body("env-strip")).await;
        assert_eq!(s, StatusCode::OK);
        let out = dir.join("out");
        let line = wait_for("the worker's output", Duration::from_secs(10), || async {
            std::fs::read_to_string(&out).ok()
        })
        .await;
        // Not inherited from the fake; the app's SECRET arrives decrypted; the rest is inherited.
        assert_eq!(line.trim(), "unset|unset|plain-secret-value-42|path");
        fake.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}

//! Tests of the local provider against tiny shell-script workers.

use std::{
    ffi::OsString,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use tea_runtime::procfs::{ProcStat, is_alive};

use super::{LocalConfig, LocalProvider, process::signal_group, state::read_meta};
use crate::naming::compute_name;
use crate::{
    ComputeOwner, ComputeProvider, ComputeSpec, Deleted, EnvVar, ErrorKind, ImageRef, Readiness,
};

fn owner(name: &str) -> ComputeOwner {
    ComputeOwner::new(name).expect("owner")
}

const SLEEPER: &str = "#!/bin/sh\necho \"queue=$EXTERNAL_TASK_QUEUE\"\nexec sleep 1000\n";
const TERM_IGNORER: &str = "#!/bin/sh\ntrap '' TERM\necho ready\nexec sleep 1000\n";
const CRASHER: &str = "#!/bin/sh\necho boom-before-exit\nexit 3\n";
const ENV_PRINTER: &str = "#!/bin/sh\nenv | sort\necho env-done\nexec sleep 1000\n";

/// How long a tiny worker script may take to start, print or exit on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// A unique state directory; on drop, SIGKILLs every worker recorded in it and removes it.
struct TestDir {
    path: PathBuf,
}

impl TestDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "tea-local-{tag}-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).expect("create test dir");
        Self { path }
    }

    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path.join(format!("{name}.sh"));
        fs::write(&path, body).expect("write script");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    fn state_dir(&self) -> PathBuf {
        self.path.join("state")
    }

    fn provider(&self, script: &Path) -> LocalProvider {
        self.provider_of(script, "test/owner")
    }

    fn provider_of(&self, script: &Path, owner_name: &str) -> LocalProvider {
        LocalProvider::new(
            LocalConfig::new(self.state_dir(), script),
            owner(owner_name),
        )
        .expect("provider")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if let Ok(entries) = fs::read_dir(self.state_dir()) {
            for entry in entries.flatten() {
                if let Ok(Some(meta)) = read_meta(&entry.path())
                    && is_alive(meta.pid, Some(meta.start_time))
                {
                    let _ = signal_group(meta.pid, Signal::SIGKILL);
                }
            }
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn spec(name: &str, env: &[(&str, &str, bool)]) -> ComputeSpec {
    ComputeSpec {
        name: name.to_owned(),
        image: ImageRef {
            registry: "local".into(),
            repository: "external-worker".into(),
            tag: "dev".into(),
        },
        env: env
            .iter()
            .map(|(key, value, secret)| EnvVar {
                key: (*key).to_owned(),
                value: (*value).to_owned(),
                secret: *secret,
            })
            .collect(),
        resources: Default::default(),
    }
}

fn pid_of(handle: &crate::ComputeHandle) -> u32 {
    handle
        .revision
        .as_deref()
        .and_then(|d| d.parse().ok())
        .expect("the revision is the pid")
}

/// Poll `path` until it contains `needle`; panics with the file's content at the deadline.
async fn wait_for_log(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never appeared in {}: {text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the process `pid` that started at `start_time` is gone.
fn gone(pid: u32, start_time: u64) -> bool {
    !is_alive(pid, Some(start_time))
}

#[tokio::test]
async fn create_spawns_with_spec_env_and_log() {
    let t = TestDir::new("create");
    let p = t.provider(&t.script("worker", SLEEPER));
    let h = p
        .create_or_adopt(&spec(
            "ext-create-1",
            &[("EXTERNAL_TASK_QUEUE", "ext-create-1", false)],
        ))
        .await
        .expect("create");
    assert_eq!(h.id, "ext-create-1");
    assert_eq!(h.name, "ext-create-1");
    assert!(!h.adopted);
    let pid = pid_of(&h);
    assert_eq!(p.running_pids(), [("ext-create-1".to_owned(), pid)]);

    let meta = read_meta(&p.compute_dir("ext-create-1"))
        .expect("meta")
        .expect("meta exists");
    assert_eq!(meta.pid, pid);
    assert_eq!(meta.name, "ext-create-1");
    assert!(chrono::DateTime::parse_from_rfc3339(&meta.created_at).is_ok());
    assert_eq!(
        ProcStat::read(pid).map(|s| s.start_time),
        Some(meta.start_time)
    );

    wait_for_log(&p.log_path("ext-create-1"), "queue=ext-create-1").await;
    assert_eq!(
        p.readiness(&h).await.expect("readiness"),
        Readiness::Ready {
            phase: "RUNNING".into()
        }
    );
    assert_eq!(p.delete(&h.id).await.expect("delete"), Deleted::Removed);
}

#[tokio::test]
async fn adopts_in_process_and_after_restart_then_deletes() {
    let t = TestDir::new("adopt");
    let script = t.script("worker", SLEEPER);
    let p = t.provider(&script);
    let s = spec(
        "ext-adopt-1",
        &[("EXTERNAL_TASK_QUEUE", "ext-adopt-1", false)],
    );
    let first = p.create_or_adopt(&s).await.expect("create");
    let pid = pid_of(&first);
    let start = ProcStat::read(pid).expect("stat").start_time;

    let again = p.create_or_adopt(&s).await.expect("adopt");
    assert!(again.adopted);
    assert_eq!(pid_of(&again), pid);
    assert_eq!(p.running_pids().len(), 1);

    // A new provider on the same state directory (a restarted workflow-worker).
    let restarted = t.provider(&script);
    let adopted = restarted
        .create_or_adopt(&s)
        .await
        .expect("adopt after restart");
    assert!(adopted.adopted);
    assert_eq!(pid_of(&adopted), pid);
    assert_eq!(restarted.running_pids(), [("ext-adopt-1".to_owned(), pid)]);

    wait_for_log(&p.log_path("ext-adopt-1"), "queue=ext-adopt-1").await;
    assert_eq!(
        restarted.delete("ext-adopt-1").await.expect("delete"),
        Deleted::Removed
    );
    assert!(gone(pid, start), "worker {pid} still alive after delete");
    assert!(!p.compute_dir("ext-adopt-1").exists());
    assert!(p.running_pids().is_empty());
    let kept = fs::read_to_string(p.kept_log_path("ext-adopt-1")).expect("kept log");
    assert!(kept.contains("queue=ext-adopt-1"), "{kept}");
    assert!(kept.contains("SIGTERM"), "{kept}");

    assert_eq!(
        restarted.delete("ext-adopt-1").await.expect("delete again"),
        Deleted::AlreadyGone
    );
    assert_eq!(
        p.delete("ext-adopt-1").await.expect("delete"),
        Deleted::AlreadyGone
    );
    let err = p.readiness(&adopted).await.expect_err("gone");
    assert_eq!(err.kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn concurrent_creates_spawn_once() {
    let t = TestDir::new("concurrent");
    let p = t.provider(&t.script("worker", SLEEPER));
    let s = spec("ext-conc-1", &[]);
    let (a, b) = tokio::join!(p.create_or_adopt(&s), p.create_or_adopt(&s));
    let (a, b) = (a.expect("a"), b.expect("b"));
    assert_eq!(pid_of(&a), pid_of(&b));
    assert!(a.adopted != b.adopted, "exactly one adopts: {a:?} {b:?}");
    assert_eq!(p.running_pids().len(), 1);
    assert_eq!(
        p.delete("ext-conc-1").await.expect("delete"),
        Deleted::Removed
    );
}

#[tokio::test]
async fn delete_escalates_to_sigkill_when_term_is_ignored() {
    let t = TestDir::new("sigkill");
    let mut cfg = LocalConfig::new(t.state_dir(), t.script("stubborn", TERM_IGNORER));
    cfg.kill_grace = Duration::from_millis(300);
    cfg.report_margin = Duration::from_millis(200);
    let p = LocalProvider::new(cfg, owner("test/owner")).expect("provider");
    // The worker's own job kill grace is longer than the provider's: delete waits for it,
    // and for the margin to report, before SIGKILL.
    let grace = Duration::from_millis(700);
    let h = p
        .create_or_adopt(&spec(
            "ext-stubborn-1",
            &[("JOB_KILL_GRACE", "500ms", false)],
        ))
        .await
        .expect("create");
    let meta = read_meta(&p.compute_dir("ext-stubborn-1"))
        .unwrap()
        .unwrap();
    assert_eq!(meta.stop_grace_ms, Some(700));
    let pid = pid_of(&h);
    let start = ProcStat::read(pid).expect("stat").start_time;
    // Only once the trap is installed does the worker ignore SIGTERM.
    wait_for_log(&p.log_path("ext-stubborn-1"), "ready").await;

    let began = Instant::now();
    assert_eq!(p.delete(&h.id).await.expect("delete"), Deleted::Removed);
    assert!(began.elapsed() >= grace, "returned before the grace period");
    assert!(gone(pid, start));
    let kept = fs::read_to_string(p.kept_log_path("ext-stubborn-1")).expect("kept log");
    assert!(kept.contains("SIGKILL"), "{kept}");
}

/// A worker whose job left processes behind, one ignoring SIGTERM in the worker's group and
/// one in a group of its own, each printing its pid.
const JOB_LEAVER: &str = "#!/bin/sh\n\
    (trap '' TERM; exec sleep 1000) &\n\
    echo in-group=$!\n\
    perl -e 'setpgrp(0,0); $SIG{TERM}=\"IGNORE\"; sleep 1000' &\n\
    echo own-group=$!\n\
    exec sleep 1000\n";

#[tokio::test]
async fn delete_kills_what_the_jobs_of_a_killed_worker_left_in_its_session() {
    let t = TestDir::new("leftovers");
    let p = t.provider(&t.script("leaver", JOB_LEAVER));
    let h = p
        .create_or_adopt(&spec("ext-leaver-1", &[]))
        .await
        .expect("create");
    let log = wait_for_log(&p.log_path("ext-leaver-1"), "own-group=").await;
    let left: Vec<(u32, u64)> = ["in-group=", "own-group="]
        .iter()
        .map(|key| {
            let pid: u32 = log
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|pid| pid.trim().parse().ok())
                .expect("a pid in the log");
            (pid, ProcStat::read(pid).expect("alive").start_time)
        })
        .collect();
    let meta = read_meta(&p.compute_dir("ext-leaver-1")).unwrap().unwrap();
    assert!(meta.session);
    // The worker dies with no chance to stop anything; what it started lives on.
    let worker = nix::unistd::Pid::from_raw(i32::try_from(pid_of(&h)).unwrap());
    nix::sys::signal::kill(worker, Signal::SIGKILL).expect("kill the worker");
    let deadline = Instant::now() + DEADLINE;
    while !gone(meta.pid, meta.start_time) {
        assert!(Instant::now() < deadline, "the worker survived SIGKILL");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(left.iter().all(|(pid, start)| !gone(*pid, *start)));

    assert_eq!(p.delete(&h.id).await.expect("delete"), Deleted::Removed);
    for (pid, start) in left {
        assert!(
            gone(pid, start),
            "process {pid} of the worker's job survived delete"
        );
    }
    let kept = fs::read_to_string(p.kept_log_path("ext-leaver-1")).expect("kept log");
    assert!(kept.contains("2 processes of its jobs"), "{kept}");
}

#[tokio::test]
async fn crashed_worker_reports_failed_and_is_restarted_on_create() {
    let t = TestDir::new("crash");
    let p = t.provider(&t.script("crasher", CRASHER));
    let s = spec("ext-crash-1", &[]);
    let h = p.create_or_adopt(&s).await.expect("create");
    let deadline = Instant::now() + DEADLINE;
    let reason = loop {
        match p.readiness(&h).await.expect("readiness") {
            Readiness::Failed { phase, reason } => {
                assert_eq!(phase, "EXITED");
                break reason;
            }
            other => {
                assert!(Instant::now() < deadline, "never failed: {other:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(reason.contains("exit status: 3"), "{reason}");
    assert!(reason.contains("boom-before-exit"), "{reason}");
    assert!(p.running_pids().is_empty());

    let created_at = read_meta(&p.compute_dir("ext-crash-1"))
        .expect("meta")
        .expect("meta exists")
        .created_at;
    let again = p.create_or_adopt(&s).await.expect("restart");
    assert!(!again.adopted);
    let meta = read_meta(&p.compute_dir("ext-crash-1"))
        .expect("meta")
        .expect("meta exists");
    assert_eq!(meta.created_at, created_at, "created_at survives a restart");
    assert_eq!(
        p.delete("ext-crash-1").await.expect("delete"),
        Deleted::Removed
    );
    assert!(!p.compute_dir("ext-crash-1").exists());
}

#[tokio::test]
async fn list_ours_keeps_only_generated_names_with_our_mark() {
    let t = TestDir::new("list");
    let script = t.script("worker", SLEEPER);
    let p = t.provider_of(&script, "deploy/a");
    let other = t.provider_of(&script, "deploy/b");
    let (a1, a2, b1) = (
        compute_name("run-a1", 1),
        compute_name("run-a2", 1),
        compute_name("run-b1", 1),
    );
    for name in [&a1, &a2, "ext-api"] {
        p.create_or_adopt(&spec(name, &[])).await.expect("create");
    }
    other
        .create_or_adopt(&spec(&b1, &[]))
        .await
        .expect("create");
    fs::create_dir_all(t.state_dir().join("logs")).expect("logs dir");
    // A lookalike without meta.json, and one whose meta.json carries no mark.
    let unmarked = compute_name("run-unmarked", 1);
    fs::create_dir_all(t.state_dir().join(compute_name("run-bare", 1))).expect("bare dir");
    fs::create_dir_all(t.state_dir().join(&unmarked)).expect("unmarked dir");
    let mut legacy = read_meta(&p.compute_dir(&a1)).expect("meta").expect("meta");
    legacy.owner = None;
    legacy.pid = std::process::id();
    super::state::write_meta(&t.state_dir().join(&unmarked), &legacy).expect("write");

    let ours = p.list_ours("ext-").await.expect("list");
    let mut names: Vec<&str> = ours.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    let mut expected = vec![a1.as_str(), a2.as_str()];
    expected.sort();
    assert_eq!(names, expected);
    assert!(
        ours.iter()
            .all(|s| s.id == s.name && s.created_at.is_some())
    );
    assert_eq!(p.list_ours("").await.expect("list all").len(), 2);
    let theirs = other.list_ours("").await.expect("list");
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].name, b1);

    // Neither adopts nor deletes the other's compute; unmarked compute is never adopted.
    for (name, provider) in [(&b1, &p), (&a1, &other), (&unmarked, &p)] {
        let err = provider
            .create_or_adopt(&spec(name, &[]))
            .await
            .expect_err("not ours");
        assert_eq!(err.kind, ErrorKind::Permanent, "{}", err.message);
        assert!(err.message.contains("not ours"), "{}", err.message);
        if name != &unmarked {
            let err = provider.delete(name).await.expect_err("not ours");
            assert_eq!(err.kind, ErrorKind::Permanent, "{}", err.message);
        }
    }
    assert_eq!(p.running_pids().len(), 4);
    // Deleting an unmarked unit by ID (its run's own Delete, from before marks) is allowed.
    assert_eq!(p.delete(&unmarked).await.expect("delete"), Deleted::Removed);

    for name in [&a1, &a2, "ext-api"] {
        assert_eq!(p.delete(name).await.expect("delete"), Deleted::Removed);
    }
    assert_eq!(other.delete(&b1).await.expect("delete"), Deleted::Removed);
    assert!(p.list_ours("").await.expect("list").is_empty());
    assert!(p.running_pids().is_empty());
}

#[tokio::test]
async fn only_the_explicit_environment_is_inherited() {
    let t = TestDir::new("env");
    let mut parent: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| k == "PATH" || k == "HOME")
        .collect();
    for (k, v) in [
        ("TEMPORAL_LEAK", "parent-leak"),
        ("TEMPORAL_ADDRESS", "parent:7233"),
        ("DIGITALOCEAN_TOKEN", "parent-token"),
        ("LOCAL_STATE_DIR", "/parent"),
        ("EXTERNAL_WORKER_BIN", "/parent/bin"),
        ("KEEP_ME", "not kept"),
        ("IDLE_TIMEOUT", "kept"),
    ] {
        parent.push((k.into(), v.into()));
    }
    let p = t
        .provider(&t.script("env", ENV_PRINTER))
        .with_parent_env(parent);
    p.create_or_adopt(&spec(
        "ext-env-1",
        &[
            ("TEMPORAL_ADDRESS", "spec:7233", false),
            ("TEMPORAL_API_KEY", "spec-secret", true),
        ],
    ))
    .await
    .expect("create");
    let log = wait_for_log(&p.log_path("ext-env-1"), "env-done").await;
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.contains(&"TEMPORAL_ADDRESS=spec:7233"), "{log}");
    assert!(lines.contains(&"TEMPORAL_API_KEY=spec-secret"), "{log}");
    // The worker is told which of its variables are secrets, to mask them in job output.
    assert!(
        lines.contains(&"TEA_SECRET_NAMES=TEMPORAL_API_KEY"),
        "{log}"
    );
    assert!(lines.contains(&"IDLE_TIMEOUT=kept"), "{log}");
    assert!(!log.contains("KEEP_ME"), "{log}");
    assert!(!lines.iter().any(|l| l.starts_with("HOME=")), "{log}");
    for leaked in [
        "TEMPORAL_LEAK",
        "parent:7233",
        "DIGITALOCEAN_TOKEN",
        "LOCAL_STATE_DIR",
        "EXTERNAL_WORKER_BIN",
    ] {
        assert!(!log.contains(leaked), "{leaked} leaked: {log}");
    }
    assert_eq!(
        p.delete("ext-env-1").await.expect("delete"),
        Deleted::Removed
    );
}

#[tokio::test]
async fn invalid_names_are_rejected() {
    let t = TestDir::new("invalid");
    let p = t.provider(&t.script("worker", SLEEPER));
    for bad in ["../escape", "Upper", "a", ".locks"] {
        let err = p.create_or_adopt(&spec(bad, &[])).await.expect_err(bad);
        assert_eq!(err.kind, ErrorKind::Permanent, "{bad}");
        assert_eq!(
            p.delete(bad).await.expect_err(bad).kind,
            ErrorKind::Permanent
        );
    }
    assert!(p.running_pids().is_empty());
}

#[tokio::test]
async fn missing_worker_binary_is_a_permanent_error() {
    let t = TestDir::new("nobin");
    let p = t.provider(&t.path.join("does-not-exist"));
    let err = p
        .create_or_adopt(&spec("ext-nobin-1", &[]))
        .await
        .expect_err("no binary");
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("does-not-exist"), "{}", err.message);
}

fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
    move |key| {
        vars.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| OsString::from(v))
    }
}

#[test]
fn config_from_env_resolves_paths_and_durations() {
    let t = TestDir::new("config");
    let bin_dir = t.path.join("bin");
    fs::create_dir_all(bin_dir.join("deps")).expect("mkdir");
    let bin = bin_dir.join(super::WORKER_BIN_NAME);
    fs::write(&bin, "#!/bin/sh\n").expect("write");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin_str = bin.to_string_lossy().into_owned();
    let exe = Some(bin_dir.join("workflow-worker"));

    let cfg = LocalConfig::from_lookup(
        lookup(&[("LOCAL_STATE_DIR", "/s"), ("LOCAL_KILL_GRACE", "5s")]),
        exe.clone(),
    )
    .expect("config");
    assert_eq!(cfg.state_dir, PathBuf::from("/s"));
    assert_eq!(cfg.worker_bin, bin);
    assert_eq!(cfg.kill_grace, Duration::from_secs(5));

    // Test binaries live in target/<profile>/deps/, the worker one level up.
    let cfg = LocalConfig::from_lookup(
        lookup(&[("XDG_STATE_HOME", "/xdg"), ("HOME", "/home/u")]),
        Some(bin_dir.join("deps").join("tea_compute-123")),
    )
    .expect("config");
    assert_eq!(
        cfg.state_dir,
        PathBuf::from("/xdg/temporal-external-activity/local")
    );
    assert_eq!(cfg.worker_bin, bin);
    assert_eq!(cfg.kill_grace, super::DEFAULT_KILL_GRACE);

    let path_var = bin_dir.to_string_lossy().into_owned();
    let cfg = LocalConfig::from_lookup(
        lookup(&[("HOME", "/home/u"), ("PATH", &path_var)]),
        Some(t.path.join("elsewhere").join("x")),
    )
    .expect("config");
    assert_eq!(
        cfg.state_dir,
        PathBuf::from("/home/u/.local/state/temporal-external-activity/local")
    );
    assert_eq!(cfg.worker_bin, bin);

    let cfg = LocalConfig::from_lookup(lookup(&[("EXTERNAL_WORKER_BIN", &bin_str)]), None)
        .expect("config");
    assert_eq!(
        cfg.state_dir,
        PathBuf::from("/tmp/temporal-external-activity/local")
    );
    assert_eq!(cfg.worker_bin, bin);

    let err = LocalConfig::from_lookup(
        lookup(&[("EXTERNAL_WORKER_BIN", "/nope/worker")]),
        exe.clone(),
    )
    .expect_err("missing bin");
    assert!(
        err.message.contains("EXTERNAL_WORKER_BIN"),
        "{}",
        err.message
    );

    let plain = t.path.join("plain");
    fs::write(&plain, "x").expect("write");
    let plain_str = plain.to_string_lossy().into_owned();
    let err = LocalConfig::from_lookup(lookup(&[("EXTERNAL_WORKER_BIN", &plain_str)]), None)
        .expect_err("not executable");
    assert!(
        err.message.contains("EXTERNAL_WORKER_BIN"),
        "{}",
        err.message
    );

    let err = LocalConfig::from_lookup(lookup(&[]), Some(t.path.join("x")))
        .expect_err("no worker anywhere");
    assert!(
        err.message.contains("cargo build --bin external-worker"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("EXTERNAL_WORKER_BIN"),
        "{}",
        err.message
    );

    let err = LocalConfig::from_lookup(
        lookup(&[
            ("EXTERNAL_WORKER_BIN", &bin_str),
            ("LOCAL_KILL_GRACE", "soon"),
        ]),
        None,
    )
    .expect_err("bad duration");
    assert!(err.message.contains("LOCAL_KILL_GRACE"), "{}", err.message);
}

#[test]
fn any_command_may_run_as_the_unit() {
    let t = TestDir::new("command-config");
    let script = t.script("worker", SLEEPER);
    let script_str = script.to_string_lossy().into_owned();
    let json = format!(r#"["{script_str}", "--queue", "a b"]"#);
    let cfg = LocalConfig::from_lookup(lookup(&[("LOCAL_WORKER_COMMAND", &json)]), None)
        .expect("a JSON array");
    assert_eq!(cfg.worker_bin, script);
    assert_eq!(cfg.worker_args, ["--queue", "a b"]);
    // Words, the program found on PATH.
    let dir = t.path.to_string_lossy().into_owned();
    let cfg = LocalConfig::from_lookup(
        lookup(&[("LOCAL_WORKER_COMMAND", "worker.sh -v  x"), ("PATH", &dir)]),
        None,
    )
    .expect("words");
    assert_eq!(cfg.worker_bin, script);
    assert_eq!(cfg.worker_args, ["-v", "x"]);
    assert_eq!(cfg.describe_command(), format!("{script_str} -v x"));
    for (command, expected) in [
        (
            "nope-not-a-program",
            "\"nope-not-a-program\" is not an executable file on PATH",
        ),
        (
            "/nope/python3 w.py",
            "\"/nope/python3\" is not an executable file",
        ),
        ("[\"a\", 1]", "not a JSON array of strings"),
        ("  ", "no program given"),
    ] {
        let err = LocalConfig::from_lookup(
            lookup(&[("LOCAL_WORKER_COMMAND", command), ("PATH", &dir)]),
            None,
        )
        .expect_err(command);
        assert!(err.message.contains(expected), "{command}: {}", err.message);
        assert!(
            err.message.contains("LOCAL_WORKER_COMMAND"),
            "{}",
            err.message
        );
    }
    let err = LocalConfig::from_lookup(
        lookup(&[
            ("LOCAL_WORKER_COMMAND", &script_str),
            ("EXTERNAL_WORKER_BIN", &script_str),
        ]),
        None,
    )
    .expect_err("both");
    assert!(err.message.contains("both set"), "{}", err.message);
}

/// A worker that is a program with arguments (an interpreter and its script): it starts a
/// child of its own, as an SDK's worker may.
const INTERPRETED: &str = "echo \"args=$*\"\nsleep 1000 &\necho child=$!\nexec sleep 1000\n";

#[tokio::test]
async fn a_command_with_arguments_runs_as_the_unit_and_delete_stops_all_of_it() {
    let t = TestDir::new("command");
    let script = t.path.join("worker.sh");
    fs::write(&script, INTERPRETED).expect("write script");
    let mut cfg = LocalConfig::new(t.state_dir(), "/bin/sh");
    cfg.worker_args = vec![script.to_string_lossy().into_owned(), "--flag".into()];
    let p = LocalProvider::new(cfg, owner("test/owner")).expect("provider");
    let h = p
        .create_or_adopt(&spec("ext-command-1", &[]))
        .await
        .expect("create");
    let log = wait_for_log(&p.log_path("ext-command-1"), "child=").await;
    assert!(log.contains("args=--flag"), "{log}");
    let child: u32 = log
        .lines()
        .find_map(|l| l.strip_prefix("child="))
        .and_then(|pid| pid.trim().parse().ok())
        .expect("the child's pid");
    let child_start = ProcStat::read(child).expect("child alive").start_time;
    let meta = read_meta(&p.compute_dir("ext-command-1")).unwrap().unwrap();
    assert_eq!(meta.worker_bin, PathBuf::from("/bin/sh"));
    assert_eq!(p.delete(&h.id).await.expect("delete"), Deleted::Removed);
    assert!(
        gone(meta.pid, meta.start_time),
        "the worker survived delete"
    );
    assert!(
        gone(child, child_start),
        "the worker's child survived delete"
    );
}

#[tokio::test]
async fn resources_are_checked_against_this_machine_and_gpus_are_refused_before_any_unit() {
    let t = TestDir::new("resources");
    let p = t.provider(&t.script("worker", SLEEPER));
    let mut gpu = spec("ext-gpu-1", &[]);
    gpu.resources.gpu = Some(1);
    let err = p.create_or_adopt(&gpu).await.expect_err("no GPUs here");
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("`resources.gpu` (1 GPU)"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("the local provider"),
        "{}",
        err.message
    );
    assert!(!p.compute_dir("ext-gpu-1").exists(), "nothing created");
    let mut size = spec("ext-size-1", &[]);
    size.resources.size = Some("large".into());
    let err = p.fit(&size.resources).await.unwrap_err();
    assert!(err.message.contains("`resources.size`"), "{err}");

    let mut small = spec("ext-small-1", &[]);
    small.resources.cpu = Some(tea_contract::Cpus::from_millis(500));
    small.resources.memory = Some(64 << 20);
    let fitted = p.fit(&small.resources).await.expect("fits");
    assert_eq!(fitted.describe().as_deref(), Some("0.5 CPU, 64 MiB"));
    assert_eq!(fitted.usd_per_second, None);
    let h = p.create_or_adopt(&small).await.expect("create");
    assert_eq!(p.delete(&h.id).await.expect("delete"), Deleted::Removed);
}

/// The provider contract (`crate::conformance`) against the local provider.
mod conformance {
    use std::sync::Arc;

    use async_trait::async_trait;

    use super::*;
    use crate::{ComputeHandle, conformance::Subject};

    const WORKER: &str =
        "#!/bin/sh\nif [ -n \"$FAIL_AT_START\" ]; then echo failing; exit 3; fi\nexec sleep 1000\n";

    struct Local {
        /// Kept for its drop: kills what the suite left and removes the state directory.
        _dir: TestDir,
        provider: Arc<LocalProvider>,
        foreign: LocalProvider,
    }

    #[async_trait]
    impl Subject for Local {
        fn provider(&self) -> Arc<dyn ComputeProvider> {
            self.provider.clone()
        }
        fn spec(&self, name: &str) -> ComputeSpec {
            spec(name, &[])
        }
        async fn failing_spec(&self, name: &str) -> ComputeSpec {
            spec(name, &[("FAIL_AT_START", "1", false)])
        }
        async fn kill(&self, handle: &ComputeHandle) {
            let pid = pid_of(handle);
            let _ = signal_group(pid, Signal::SIGKILL);
        }
        async fn add_foreign(&self, name: &str) {
            self.foreign
                .create_or_adopt(&spec(name, &[]))
                .await
                .expect("another owner's unit");
        }
    }

    #[tokio::test]
    async fn the_local_provider_keeps_the_provider_contract() {
        let dir = TestDir::new("conformance");
        let script = dir.script("worker", WORKER);
        let subject = Local {
            provider: Arc::new(dir.provider(&script)),
            foreign: dir.provider_of(&script, "someone/else"),
            _dir: dir,
        };
        crate::conformance::run(&subject)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

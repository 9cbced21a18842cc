//! Ownership and the sweeper, end to end: two deployments sharing one DigitalOcean account (or
//! one local state directory) never touch each other's compute, foreign and lookalike compute
//! is never deleted, a sweep goes on past a unit it cannot delete, a create costs the same
//! requests however many apps the account holds, and one worker's configuration never removes
//! the schedule the fleet relies on.

use std::{collections::BTreeMap, path::Path, process::ExitStatus, time::Duration};

use serde_json::{Value, json};
use tea_compute::{ComputeOwner, naming::compute_name};
use tea_fake_do::{FakeDo, Fault, Op, SeedApps, Snapshot};
use tea_orchestrator::sweeper::schedule_id;
use tea_starter::{RunEnd, RunHandle};
use temporalio_client::{Client, WorkflowTerminateOptions};

use crate::digitalocean::{self, DO_TOKEN};
use crate::local;
use crate::support::{
    DevServer, Proc, ProcBuilder, bin, history,
    run::{self, RUN_TIMEOUT, pending_job},
    startup_error, test_dir, unique, wait_for,
};

/// How long the scheduled sweeps of the other deployment get to do damage.
const SWEEPS_TO_WATCH: usize = 3;

fn queue(label: &str) -> String {
    unique(&format!("wf-{label}"))
}

/// The compute name of attempt 1 of `handle`'s run.
fn compute_of(handle: &RunHandle) -> String {
    compute_name(handle.run_id().expect("the run has a run ID"), 1)
}

async fn start_job(client: &Client, task_queue: &str, test: &str) -> RunHandle {
    let handle = run::start(client, task_queue, test, "10m").await;
    wait_for("the job to start", RUN_TIMEOUT, || pending_job(&handle)).await;
    handle
}

async fn terminate(handle: &RunHandle) {
    handle
        .terminate(WorkflowTerminateOptions::builder().reason("test").build())
        .await
        .expect("terminate");
}

/// Waits until `worker` has logged `SWEEPS_TO_WATCH` more finished sweeps than now.
async fn watch_sweeps(worker: &Proc) {
    let count = |w: &Proc| w.output().matches("sweep finished").count();
    let target = count(worker) + SWEEPS_TO_WATCH;
    wait_for(
        "the other deployment's scheduled sweeps",
        Duration::from_secs(90),
        || async { (count(worker) >= target).then_some(()) },
    )
    .await;
}

/// Runs a `workflow-worker sweep` command with a zero grace period; its exit status and the
/// JSON report it printed.
async fn sweep(command: ProcBuilder) -> (ExitStatus, Value) {
    let mut sweep = command
        .env("SWEEP_GRACE_PERIOD", "0s")
        .env("LOG_LEVEL", "error")
        .arg("sweep")
        .arg("--json")
        .spawn();
    let status = sweep.wait(Duration::from_secs(120)).await;
    let output = sweep.output();
    let start = output.find("\n{").map_or(0, |i| i + 1);
    let end = output.rfind("\n}").map_or(output.len(), |i| i + 2);
    let report = serde_json::from_str(&output[start..end])
        .unwrap_or_else(|e| panic!("sweep printed no JSON report ({e}): {output}"));
    (status, report)
}

fn deleted_names(report: &Value) -> Vec<String> {
    report["deleted"]
        .as_array()
        .expect("deleted list")
        .iter()
        .map(|d| d["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn app_names(snapshot: &Snapshot) -> Vec<String> {
    let mut names: Vec<String> = snapshot.apps.iter().map(|a| a.name.clone()).collect();
    names.sort();
    names
}

/// Apps that are not ours in the account: names of our shape without our mark or with
/// another's, and `ext-` names that are not generated at all (one even with our mark).
fn seed_foreign_apps(fake: &FakeDo, ours: &str) -> Vec<String> {
    let seeds = [
        SeedApps::one("ext-api", &[]),
        SeedApps::one("ext-api-b", &[("TEA_COMPUTE_OWNER", ours)]),
        SeedApps::one(compute_name("someone-elses-run", 1), &[]),
        SeedApps::one(
            compute_name("another-deployments-run", 1),
            &[("TEA_COMPUTE_OWNER", "deploy-c")],
        ),
    ];
    let mut names = Vec::new();
    for seed in seeds {
        fake.seed(&seed).expect("seed a foreign app");
        names.push(seed.name.expect("named seed"));
    }
    names
}

/// One shared account (or state directory) as the two-deployment scenario sees it.
struct Shared<'a> {
    label: &'a str,
    /// The workflow-worker command on queue `.0` with owner `.1`, logging to `.2`.
    worker: &'a dyn Fn(&str, &str, &str) -> ProcBuilder,
    /// Names of all compute in the account now, sorted.
    names: &'a dyn Fn() -> Vec<String>,
    /// Names of the foreign compute seeded into it.
    foreign: Vec<String>,
}

/// Deployments A (no schedule) and B (sweeping every 2 s, no grace period) each run a job in
/// `shared`. A's run is terminated: B's sweeps must leave its orphan (and every foreign unit)
/// alone, and A's own sweep removes exactly that orphan. Then B's run is terminated and B's
/// schedule removes B's orphan. Only the foreign compute is left.
async fn two_deployments_never_touch_each_other(server: &DevServer, shared: Shared<'_>) {
    let Shared {
        label,
        worker,
        names,
        mut foreign,
    } = shared;
    let (qa, qb) = (queue(&format!("{label}-a")), queue(&format!("{label}-b")));
    let (owner_a, owner_b) = (format!("{label}-a"), format!("{label}-b"));
    let _worker_a = worker(&qa, &owner_a, "worker-a.log")
        .env("SWEEP_INTERVAL", "0")
        .spawn();
    let client = server.client().await;
    let run_a = start_job(&client, &qa, &format!("{label}-a")).await;
    // B's sweeps start once B's run is listed as running: with no grace period, a sweep that
    // does not see it yet would take its new unit for an orphan.
    let run_b = run::start(&client, &qb, &format!("{label}-b"), "10m").await;
    run::wait_until_listed(&run_b, true).await;
    let worker_b = worker(&qb, &owner_b, "worker-b.log")
        .env("SWEEP_INTERVAL", "2s")
        .env("SWEEP_GRACE_PERIOD", "0s")
        .spawn();
    wait_for("B's job to start", RUN_TIMEOUT, || pending_job(&run_b)).await;
    let (unit_a, unit_b) = (compute_of(&run_a), compute_of(&run_b));
    foreign.sort();
    let mut everything = foreign.clone();
    everything.extend([unit_a.clone(), unit_b.clone()]);
    everything.sort();
    assert_eq!(names(), everything);

    terminate(&run_a).await;
    run::wait_until_listed(&run_a, false).await;
    watch_sweeps(&worker_b).await;
    assert_eq!(names(), everything, "B's sweeps touched compute not B's");

    let (status, report) =
        sweep(worker(&qa, &owner_a, "sweep-a.log").env("SWEEP_INTERVAL", "0")).await;
    assert!(status.success(), "{report}");
    assert_eq!(report["owner"], owner_a.as_str(), "{report}");
    assert_eq!(report["examined"], 1, "{report}");
    assert_eq!(deleted_names(&report), [unit_a.as_str()], "{report}");

    terminate(&run_b).await;
    wait_for(
        "B's sweeper to delete B's orphan",
        Duration::from_secs(90),
        || {
            let gone = !names().contains(&unit_b);
            async move { gone.then_some(()) }
        },
    )
    .await;
    assert_eq!(names(), foreign);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_do_deployments_in_one_account_never_touch_each_other_s_compute() {
    let dir = test_dir("own-do");
    let server = DevServer::start(&dir).await;
    let fake = digitalocean::start_fake(&dir).await;
    let worker = |q: &str, owner: &str, log: &str| {
        digitalocean::workflow_worker(&dir, &server, &fake, DO_TOKEN, q, log)
            .env("COMPUTE_OWNER", owner)
    };
    let names = || app_names(&fake.snapshot());
    let shared = Shared {
        label: "own-do",
        worker: &worker,
        names: &names,
        foreign: seed_foreign_apps(&fake, "own-do-b"),
    };
    two_deployments_never_touch_each_other(&server, shared).await;
    assert_eq!(fake.snapshot().total_created, 2);
}

/// A unit in the local state directory that no provider of ours created: a directory named
/// `name` whose `meta.json` carries `owner` (`None`: no mark).
pub(crate) fn seed_local_dir(state_dir: &Path, name: &str, owner: Option<&str>) -> String {
    let dir = state_dir.join(name);
    std::fs::create_dir_all(&dir).expect("create a foreign compute dir");
    let meta = json!({
        "name": name, "pid": 1, "start_time": u64::MAX, "created_at": "2020-01-01T00:00:00Z",
        "worker_bin": "/bin/false", "owner": owner,
    });
    std::fs::write(dir.join("meta.json"), meta.to_string()).expect("write meta.json");
    name.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_local_deployments_in_one_state_dir_never_touch_each_other_s_compute() {
    let dir = test_dir("own-local");
    let server = DevServer::start(&dir).await;
    let state_dir = dir.join("compute");
    let foreign = vec![
        seed_local_dir(&state_dir, "ext-api", None),
        seed_local_dir(&state_dir, "ext-api-b", Some("own-local-b")),
        seed_local_dir(&state_dir, &compute_name("someone-elses-run", 1), None),
        seed_local_dir(
            &state_dir,
            &compute_name("another-deployments-run", 1),
            Some("own-local-c"),
        ),
    ];
    let worker = |q: &str, owner: &str, log: &str| {
        local::workflow_worker(&dir, &server, q, &bin("external-worker"), log)
            .env("COMPUTE_OWNER", owner)
    };
    let names = || -> Vec<String> {
        tea_compute::local::compute_dirs(&state_dir)
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    };
    let shared = Shared {
        label: "own-local",
        worker: &worker,
        names: &names,
        foreign,
    };
    two_deployments_never_touch_each_other(&server, shared).await;
}

/// Two orphaned apps of owner `solo` (their runs terminated), the delete of the first one
/// failing with 500 until the faults are cleared.
struct Orphans {
    dir: std::path::PathBuf,
    server: DevServer,
    fake: FakeDo,
    queue: String,
    worker: Proc,
    stuck: String,
    stuck_id: String,
    other: String,
}

impl Orphans {
    /// `sweep_interval` is the workflow-worker's `SWEEP_INTERVAL` (grace period 0).
    async fn start(label: &str, sweep_interval: &str) -> Orphans {
        let dir = test_dir(label);
        let server = DevServer::start(&dir).await;
        let fake = digitalocean::start_fake(&dir).await;
        let queue = queue(label);
        // The sweeps start once both runs are listed as running: with no grace period, a sweep
        // that does not see a run yet would take its new app for an orphan.
        let client = server.client().await;
        let first = run::start(&client, &queue, &format!("{label}-1"), "10m").await;
        let second = run::start(&client, &queue, &format!("{label}-2"), "10m").await;
        for run in [&first, &second] {
            run::wait_until_listed(run, true).await;
        }
        let mut orphans = Orphans {
            worker: Self::worker_command(&dir, &server, &fake, &queue, "workflow-worker.log")
                .env("SWEEP_INTERVAL", sweep_interval)
                .env("SWEEP_GRACE_PERIOD", "0s")
                .spawn(),
            dir,
            server,
            fake,
            queue,
            stuck: String::new(),
            stuck_id: String::new(),
            other: String::new(),
        };
        for run in [&first, &second] {
            wait_for("the job to start", RUN_TIMEOUT, || pending_job(run)).await;
        }
        orphans.stuck = compute_of(&first);
        orphans.other = compute_of(&second);
        let snapshot = orphans.fake.snapshot();
        orphans.stuck_id = snapshot
            .app_by_name(&orphans.stuck)
            .expect("app")
            .id
            .clone();
        orphans.fake.inject(Fault::AppServerError {
            app_id: orphans.stuck_id.clone(),
            count: 1_000,
            status: 500,
            op: Op::Delete,
        });
        for run in [&first, &second] {
            terminate(run).await;
            run::wait_until_listed(run, false).await;
        }
        orphans
    }

    fn worker_command(
        dir: &Path,
        server: &DevServer,
        fake: &FakeDo,
        queue: &str,
        log: &str,
    ) -> ProcBuilder {
        digitalocean::workflow_worker(dir, server, fake, DO_TOKEN, queue, log)
            .env("COMPUTE_OWNER", "solo")
            .env("DIGITALOCEAN_MAX_ATTEMPTS", "2")
    }

    fn command(&self, log: &str) -> ProcBuilder {
        Self::worker_command(&self.dir, &self.server, &self.fake, &self.queue, log)
            .env("SWEEP_INTERVAL", "0")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_goes_on_past_a_unit_it_cannot_delete_and_reports_it() {
    let o = Orphans::start("own-sweep-fail", "0").await;
    let (status, report) = sweep(o.command("sweep-1.log")).await;
    assert_eq!(
        status.code(),
        Some(1),
        "a failed delete fails the sweep: {report}"
    );
    assert_eq!(deleted_names(&report), [o.other.as_str()], "{report}");
    let failed = report["failed"].as_array().expect("failed list");
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["name"], o.stuck.as_str(), "{report}");
    assert_eq!(failed[0]["id"], o.stuck_id.as_str(), "{report}");
    assert!(
        failed[0]["error"].as_str().unwrap_or("").contains("500"),
        "{report}"
    );
    let snapshot = o.fake.snapshot();
    assert!(snapshot.app_by_name(&o.other).is_none(), "{snapshot:?}");
    assert!(snapshot.app_by_name(&o.stuck).is_some(), "{snapshot:?}");

    // Once the provider lets it, the next sweep removes it.
    o.fake.clear_faults();
    let (status, report) = sweep(o.command("sweep-2.log")).await;
    assert!(status.success(), "{report}");
    assert_eq!(deleted_names(&report), [o.stuck.as_str()], "{report}");
    assert!(o.fake.snapshot().apps.is_empty());
}

/// The same through the schedule: the sweep activity deletes what it can, logs the report and
/// fails; a later scheduled sweep deletes the rest once the provider lets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_sweep_goes_on_past_a_failing_delete_and_fails_after_reporting() {
    let o = Orphans::start("own-sched-fail", "2s").await;
    wait_for(
        "a scheduled sweep to delete the other orphan and report the stuck one",
        Duration::from_secs(90),
        || {
            let gone = o.fake.snapshot().app_by_name(&o.other).is_none();
            let reported = o
                .worker
                .output()
                .contains("sweep finished with failed deletes");
            async move { (gone && reported).then_some(()) }
        },
    )
    .await;
    assert!(o.fake.snapshot().app_by_name(&o.stuck).is_some());
    assert!(
        o.worker.output().contains(&o.stuck_id),
        "the report names it"
    );

    o.fake.clear_faults();
    wait_for(
        "a later scheduled sweep to delete the stuck orphan",
        Duration::from_secs(90),
        || {
            let empty = o.fake.snapshot().apps.is_empty();
            async move { empty.then_some(()) }
        },
    )
    .await;
}

/// Requests the fake answered, by operation, since `before`.
fn requests_since(before: &Snapshot, after: &Snapshot) -> BTreeMap<String, u64> {
    let total = |s: &Snapshot, op: &str| s.requests.get(op).map_or(0, |m| m.values().sum());
    after
        .requests
        .keys()
        .map(|op| (op.clone(), total(after, op) - total(before, op)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// A dev server, a fake DigitalOcean account and one workflow-worker (no sweep schedule).
struct OneDeployment {
    _server: DevServer,
    fake: FakeDo,
    queue: String,
    worker: Proc,
    client: Client,
}

impl OneDeployment {
    async fn start(label: &str) -> OneDeployment {
        let dir = test_dir(label);
        let server = DevServer::start(&dir).await;
        let fake = digitalocean::start_fake(&dir).await;
        let queue = queue(label);
        let worker =
            digitalocean::workflow_worker(&dir, &server, &fake, DO_TOKEN, &queue, "worker.log")
                .env("SWEEP_INTERVAL", "0")
                .spawn();
        let client = server.client().await;
        OneDeployment {
            _server: server,
            fake,
            queue,
            worker,
            client,
        }
    }

    /// Runs a 1 s job to completion; returns its handle.
    async fn completed_run(&self, test: &str) -> RunHandle {
        let handle = run::start(&self.client, &self.queue, test, "1s").await;
        let end = run::finish(&handle, &self.worker).await;
        assert!(
            matches!(end, RunEnd::Completed(_)),
            "run ended {end}; worker: {}",
            self.worker.output()
        );
        handle
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_costs_the_same_requests_with_a_thousand_foreign_apps_in_the_account() {
    let one = OneDeployment::start("own-o1").await;
    let fake = &one.fake;
    let before = fake.snapshot();
    one.completed_run("own-o1-empty").await;
    let empty = requests_since(&before, &fake.snapshot());

    fake.seed(&SeedApps::many(1_000, "foreign"))
        .expect("seed 1,000 foreign apps");
    let before = fake.snapshot();
    one.completed_run("own-o1-full").await;
    let full = requests_since(&before, &fake.snapshot());
    println!("provider requests per run: empty account {empty:?}; 1,000 foreign apps {full:?}");

    for requests in [&empty, &full] {
        assert_eq!(requests.get("create"), Some(&1), "{requests:?}");
        assert_eq!(requests.get("list"), None, "no list per run: {requests:?}");
        assert_eq!(requests.get("delete"), Some(&1), "{requests:?}");
    }
    let snapshot = fake.snapshot();
    assert_eq!(snapshot.apps.len(), 1_000, "only the foreign apps are left");
    assert_eq!(snapshot.total_created, 2);
}

async fn schedule_exists(client: &Client, id: &str) -> bool {
    client
        .get_schedule_handle(id)
        .describe(Default::default())
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_a_sweep_interval_leaves_the_fleet_s_schedule_in_place() {
    let dir = test_dir("own-schedule");
    let server = DevServer::start(&dir).await;
    let client = server.client().await;
    let (fleet_q, other_q) = (queue("own-fleet"), queue("own-other"));
    let worker = |q: &str, owner: &str, log: &str| {
        local::workflow_worker(&dir, &server, q, &bin("external-worker"), log)
            .env("COMPUTE_OWNER", owner)
    };
    let fleet_id = schedule_id(&ComputeOwner::new("fleet").expect("owner"));
    let other_id = schedule_id(&ComputeOwner::new("other").expect("owner"));
    assert_ne!(fleet_id, other_id);

    let _first = worker(&fleet_q, "fleet", "first.log")
        .env("SWEEP_INTERVAL", "1m")
        .spawn();
    let _other = worker(&other_q, "other", "other.log")
        .env("SWEEP_INTERVAL", "1m")
        .spawn();
    for id in [&fleet_id, &other_id] {
        wait_for("the sweep schedule", Duration::from_secs(60), || async {
            schedule_exists(&client, id).await.then_some(())
        })
        .await;
    }

    // A second worker of the fleet with SWEEP_INTERVAL=0 leaves the schedule alone.
    let second = worker(&fleet_q, "fleet", "second.log")
        .env("SWEEP_INTERVAL", "0")
        .spawn();
    wait_for(
        "the second worker to start",
        Duration::from_secs(60),
        || {
            let started = second
                .output()
                .contains("does not manage the sweep schedule");
            async move { started.then_some(()) }
        },
    )
    .await;
    assert!(schedule_exists(&client, &fleet_id).await);

    // Removing it is an explicit command, and removes only this owner's schedule.
    let mut remove = worker(&fleet_q, "fleet", "remove.log")
        .env("LOG_LEVEL", "error")
        .arg("delete-sweep-schedule")
        .spawn();
    let status = remove.wait(Duration::from_secs(60)).await;
    assert!(status.success(), "{}", remove.output());
    assert!(
        remove
            .output()
            .contains(&format!("deleted sweep schedule {fleet_id}")),
        "{}",
        remove.output()
    );
    assert!(!schedule_exists(&client, &fleet_id).await);
    assert!(schedule_exists(&client, &other_id).await);
}

/// DigitalOcean deletes asynchronously: an app stays visible for a while after `DELETE`. Here
/// it stays 8 s, longer than the runs' 5 s heartbeat timeout: `Delete` waits until it reads as
/// gone within one attempt (heartbeating), the run completes, and the app is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_that_stays_visible_longer_than_the_heartbeat_timeout_completes_once() {
    let one = OneDeployment::start("own-async-delete").await;
    one.fake.inject(Fault::DeleteDelay { delay_ms: 8_000 });
    let handle = one.completed_run("own-async-delete").await;
    let snapshot = one.fake.snapshot();
    assert_eq!(snapshot.total_created, 1, "exactly one app ever");
    assert!(snapshot.apps.is_empty(), "left: {:?}", snapshot.apps);
    assert_eq!(snapshot.deleted_app_ids.len(), 1);
    let events = history::events(&handle).await;
    assert_eq!(
        history::activity_timeouts(&events),
        0,
        "an activity attempt timed out"
    );
}

#[tokio::test]
async fn an_invalid_compute_owner_is_a_clear_startup_error() {
    let output = startup_error(
        ProcBuilder::new(
            bin("workflow-worker"),
            test_dir("own-bad-owner").join("out.log"),
        )
        .env("COMPUTE_OWNER", "prod owner")
        .env("TEMPORAL_ADDRESS", "127.0.0.1:1"),
    )
    .await;
    assert!(
        output.contains("COMPUTE_OWNER") && output.contains("' '"),
        "{output}"
    );
}

//! The chaos loop: while runs are open, one random event every 0.5-2 s (seeded), each logged
//! and counted. It also restarts a workflow-worker that exited by itself (counted apart: that
//! is not chaos, it is a finding).

use std::{collections::BTreeMap, time::Duration};

use rand::{Rng, rngs::StdRng, seq::IndexedRandom};
use tea_fake_do::{Fault, Op};
use tea_harness::DevServer;
use temporalio_client::Client;
use tokio::time::Instant;

use crate::{
    lanes::{Kind, Lane, Unit},
    runs::{self, Intervention, Runs},
    say,
};

/// Most dev server restarts in one chaos run.
const MAX_SERVER_RESTARTS: u32 = 2;
/// How long a run with bad input may take to fail.
const BAD_INPUT_TIMEOUT: Duration = Duration::from_secs(30);
/// Most external-worker kills and network cuts per run, together (each costs a compute
/// attempt; runs have three).
const MAX_HITS_PER_RUN: u32 = 1;

/// What happened during the chaos, per provider.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub worker_kills: u32,
    /// Containers cut off their network mid-job (docker lane).
    pub disconnects: u32,
    pub workflow_worker_restarts: u32,
    /// Workflow-workers that exited without being killed (restarted too).
    pub workflow_worker_exits: u32,
    pub faults: u32,
    pub cancels: u32,
    pub terminates: u32,
    /// Runs another client started with input the workflow cannot use (each must fail at
    /// once and create no compute).
    pub bad_inputs: u32,
    /// Of those, runs that did not fail within [`BAD_INPUT_TIMEOUT`] or that created compute.
    pub bad_inputs_mishandled: u32,
}

/// Counts per provider plus the dev server restarts.
#[derive(Clone, Debug, Default)]
pub struct AllCounts {
    pub per_lane: BTreeMap<Kind, Counts>,
    pub server_restarts: u32,
    pub failed_events: u32,
}

/// How many runs may be cancelled and terminated in total.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub cancels: u32,
    pub terminates: u32,
    pub bad_inputs: u32,
}

impl Budget {
    /// About one run in six each, at least one.
    pub fn for_runs(runs: usize) -> Self {
        let n = u32::try_from(runs / 6).unwrap_or(u32::MAX).max(1);
        Budget {
            cancels: n,
            terminates: n,
            bad_inputs: n,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    KillExternalWorker,
    /// `docker network disconnect` of a container mid-job.
    DisconnectNetwork,
    RestartWorkflowWorker,
    RestartServer,
    RateLimit,
    /// A 429 whose Retry-After outlasts the runs' heartbeat timeout.
    LongRetryAfter,
    ServerError,
    DeploymentError,
    /// Asynchronous delete from now on, for a random 1-4 s.
    AsyncDelete,
    Cancel,
    Terminate,
    BadInput,
}

impl Event {
    fn weight(self) -> u32 {
        match self {
            Event::KillExternalWorker => 20,
            Event::DisconnectNetwork => 8,
            Event::RestartWorkflowWorker => 10,
            Event::RestartServer => 4,
            Event::RateLimit => 8,
            Event::LongRetryAfter => 4,
            Event::ServerError => 8,
            Event::DeploymentError => 3,
            Event::AsyncDelete => 3,
            Event::Cancel => 6,
            Event::Terminate => 6,
            Event::BadInput => 3,
        }
    }
}

/// Runs the chaos until every run is closed or `deadline` passes.
pub async fn chaos(
    rng: &mut StdRng,
    server: &mut DevServer,
    lanes: &mut [Lane],
    runs: &Runs,
    budget: Budget,
    deadline: Instant,
) -> AllCounts {
    let started = Instant::now();
    let address = server.address();
    let mut counts = AllCounts::default();
    for lane in lanes.iter() {
        counts.per_lane.insert(lane.kind, Counts::default());
    }
    let mut budget = budget;
    let mut client: Option<Client> = None;

    while any_open(runs) && Instant::now() < deadline {
        let pause = Duration::from_millis(rng.random_range(500..=2000));
        tokio::time::sleep_until((Instant::now() + pause).min(deadline)).await;
        supervise(lanes, &mut counts);
        if !any_open(runs) {
            break;
        }

        let mut choices = vec![Event::KillExternalWorker, Event::RestartWorkflowWorker];
        if counts.server_restarts < MAX_SERVER_RESTARTS
            && started.elapsed() > Duration::from_secs(3)
        {
            choices.push(Event::RestartServer);
        }
        // One armed fault at a time: faults nobody hits would pile up and then fail the
        // final sweep's retries, which measures the chaos command, not the project.
        if lanes.iter().any(|l| l.faults_pending() == Some(0)) {
            choices.extend([
                Event::RateLimit,
                Event::LongRetryAfter,
                Event::ServerError,
                Event::DeploymentError,
            ]);
        }
        if lanes.iter().any(|l| l.kind == Kind::DigitalOcean) {
            choices.push(Event::AsyncDelete);
        }
        if lanes.iter().any(|l| l.kind == Kind::Docker) {
            choices.push(Event::DisconnectNetwork);
        }
        if budget.bad_inputs > 0 {
            choices.push(Event::BadInput);
        }
        if budget.cancels > 0 {
            choices.push(Event::Cancel);
        }
        if budget.terminates > 0 {
            choices.push(Event::Terminate);
        }
        let Ok(event) = choices.choose_weighted(rng, |e| e.weight()) else {
            continue;
        };
        match *event {
            Event::KillExternalWorker => {
                hit_compute(rng, lanes, runs, &mut counts, Hit::Kill).await;
            }
            Event::DisconnectNetwork => {
                let Some(c) = connected(&mut client, &address, &mut counts).await else {
                    continue;
                };
                hit_compute(rng, lanes, runs, &mut counts, Hit::Disconnect(c)).await;
            }
            Event::RestartWorkflowWorker => {
                let i = rng.random_range(0..lanes.len());
                let lane = &mut lanes[i];
                let pause = Duration::from_millis(rng.random_range(200..=1500));
                say!(
                    "EVENT {}: SIGKILL the workflow-worker, restart it after {pause:?}",
                    lane.kind
                );
                if let Err(e) = lane.kill_worker().await {
                    say!("  {}: the workflow-worker did not exit: {e:#}", lane.kind);
                    counts.failed_events += 1;
                }
                tokio::time::sleep(pause).await;
                match lane.spawn_worker() {
                    Ok(()) => bump(&mut counts, lane.kind, |c| c.workflow_worker_restarts += 1),
                    Err(e) => {
                        say!(
                            "  {}: could not restart the workflow-worker: {e:#}",
                            lane.kind
                        );
                        counts.failed_events += 1;
                    }
                }
            }
            Event::RestartServer => {
                say!("EVENT: restart the Temporal dev server (SIGKILL, same port and database)");
                let t = Instant::now();
                client = None;
                match server.restart().await {
                    Ok(()) => {
                        counts.server_restarts += 1;
                        say!("  the dev server is back after {:?}", t.elapsed());
                    }
                    Err(e) => {
                        say!("  the dev server restart failed: {e:#}");
                        counts.failed_events += 1;
                    }
                }
            }
            Event::BadInput => {
                let lane = &lanes[rng.random_range(0..lanes.len())];
                let id = format!(
                    "chaos-bad-input-{}-{}",
                    lane.kind.short(),
                    budget.bad_inputs
                );
                say!(
                    "EVENT {}: another client starts run {id} with bad input",
                    lane.kind
                );
                let Some(c) = connected(&mut client, &address, &mut counts).await else {
                    continue;
                };
                let input = runs::bad_input(rng);
                match runs::start_raw(c, &lane.queue, &id, input).await {
                    Ok(run_id) => {
                        budget.bad_inputs -= 1;
                        bump(&mut counts, lane.kind, |c| c.bad_inputs += 1);
                        let outcome =
                            runs::wait_closed(&address, &id, Instant::now() + BAD_INPUT_TIMEOUT)
                                .await;
                        say!(
                            "  {}: run {id} closed: {}",
                            lane.kind,
                            runs::describe(&outcome)
                        );
                        let mut run = runs::Run::new(id, run_id, lane.kind);
                        let created = match lane.live_units().await {
                            Ok(units) => units.iter().any(|u| run.owns(&u.name)),
                            Err(e) => {
                                say!("  {}: cannot list its compute: {e:#}", lane.kind);
                                counts.failed_events += 1;
                                false
                            }
                        };
                        if !matches!(outcome, runs::Outcome::Failed(_)) || created {
                            say!("FINDING {}: bad input was not refused at once", lane.kind);
                            bump(&mut counts, lane.kind, |c| c.bad_inputs_mishandled += 1);
                        }
                        run.outcome = Some(outcome);
                        runs::lock(runs).push(run);
                    }
                    Err(e) => {
                        say!("  failed: {e:#}");
                        client = None;
                        counts.failed_events += 1;
                    }
                }
            }
            Event::RateLimit
            | Event::LongRetryAfter
            | Event::ServerError
            | Event::DeploymentError
            | Event::AsyncDelete => {
                let ops = [
                    Op::Any,
                    Op::Create,
                    Op::Get,
                    Op::GetDeployment,
                    Op::Delete,
                    Op::List,
                ];
                let op = *ops.choose(rng).unwrap_or(&Op::Any);
                let fault = match *event {
                    Event::RateLimit => Fault::RateLimit {
                        count: 2,
                        retry_after_secs: 1,
                        op,
                    },
                    Event::LongRetryAfter => Fault::RateLimit {
                        count: 1,
                        retry_after_secs: runs::LONG_RETRY_AFTER_SECS,
                        op,
                    },
                    Event::AsyncDelete => Fault::DeleteDelay {
                        delay_ms: rng.random_range(1000..=4000),
                    },
                    Event::ServerError => Fault::ServerError {
                        count: 2,
                        status: *[500u16, 502, 503].choose(rng).unwrap_or(&503),
                        op,
                    },
                    _ => Fault::DeploymentError { count: 1 },
                };
                if let Some(lane) = lanes.iter().find(|l| l.kind == Kind::DigitalOcean) {
                    say!("EVENT digitalocean: inject {fault:?}");
                    lane.inject(fault);
                    bump(&mut counts, Kind::DigitalOcean, |c| c.faults += 1);
                }
            }
            Event::Cancel | Event::Terminate => {
                let what = if *event == Event::Cancel {
                    Intervention::Cancel
                } else {
                    Intervention::Terminate
                };
                let target = {
                    let runs = runs::lock(runs);
                    let candidates: Vec<(String, Kind)> = runs
                        .iter()
                        .filter(|r| r.open() && r.intervention.is_none())
                        .map(|r| (r.id.clone(), r.kind))
                        .collect();
                    candidates.choose(rng).cloned()
                };
                let Some((id, kind)) = target else { continue };
                say!("EVENT {kind}: {what:?} run {id}");
                let Some(c) = connected(&mut client, &address, &mut counts).await else {
                    continue;
                };
                match runs::intervene(c, &id, what).await {
                    Ok(()) => {
                        if let Some(run) = runs::lock(runs).iter_mut().find(|r| r.id == id) {
                            run.intervention = Some(what);
                        }
                        match what {
                            Intervention::Cancel => {
                                budget.cancels -= 1;
                                bump(&mut counts, kind, |c| c.cancels += 1);
                            }
                            Intervention::Terminate => {
                                budget.terminates -= 1;
                                bump(&mut counts, kind, |c| c.terminates += 1);
                            }
                        }
                    }
                    Err(e) => {
                        say!("  failed: {e:#}");
                        client = None;
                        counts.failed_events += 1;
                    }
                }
            }
        }
    }
    // Leave the workflow-workers running for the runs' last steps and for nothing else.
    supervise(lanes, &mut counts);
    counts
}

/// The client, connecting first when there is none; `None` (counted as a failed event) when
/// the dev server does not answer.
async fn connected<'a>(
    client: &'a mut Option<Client>,
    address: &str,
    counts: &mut AllCounts,
) -> Option<&'a Client> {
    if client.is_none() {
        *client = runs::connect(address).await;
    }
    if client.is_none() {
        say!("  cannot connect to the dev server; skipped");
        counts.failed_events += 1;
    }
    client.as_ref()
}

fn any_open(runs: &Runs) -> bool {
    runs::lock(runs).iter().any(runs::Run::open)
}

fn bump(counts: &mut AllCounts, kind: Kind, f: impl FnOnce(&mut Counts)) {
    f(counts.per_lane.entry(kind).or_default());
}

/// Restarts workflow-workers that exited by themselves.
fn supervise(lanes: &mut [Lane], counts: &mut AllCounts) {
    for lane in lanes.iter_mut() {
        if let Some(status) = lane.exited() {
            say!(
                "FINDING {}: the workflow-worker exited by itself ({status}); restarting it \
                 (see {})",
                lane.kind,
                lane.worker_log().display()
            );
            bump(counts, lane.kind, |c| c.workflow_worker_exits += 1);
            if let Err(e) = lane.spawn_worker() {
                say!("  could not restart it: {e:#}");
            }
        }
    }
}

/// What [`hit_compute`] does to a unit of compute.
#[derive(Clone, Copy)]
enum Hit<'a> {
    /// SIGKILL its external worker (`docker kill` of a container).
    Kill,
    /// `docker network disconnect` of its container mid-job (docker lane only); the client
    /// tells which runs' jobs are running.
    Disconnect(&'a Client),
}

/// SIGKILLs the external worker (or cuts the container off its network mid-job) of a random
/// open run that was not hit yet.
async fn hit_compute(
    rng: &mut StdRng,
    lanes: &[Lane],
    runs: &Runs,
    counts: &mut AllCounts,
    hit: Hit<'_>,
) {
    let mut units: Vec<(usize, Unit)> = Vec::new();
    for (i, lane) in lanes.iter().enumerate() {
        if matches!(hit, Hit::Disconnect(_)) && lane.kind != Kind::Docker {
            continue;
        }
        match lane.live_units().await {
            Ok(live) => units.extend(live.into_iter().map(|u| (i, u))),
            Err(e) => {
                say!("  {}: cannot list its compute: {e:#}", lane.kind);
                counts.failed_events += 1;
            }
        }
    }
    // (lane, unit, the ID of the run that owns it)
    let mut candidates: Vec<(usize, Unit, String)> = {
        let runs = runs::lock(runs);
        units
            .into_iter()
            .filter(|(_, unit)| unit.running)
            .filter_map(|(i, unit)| {
                let run = runs.iter().find(|r| {
                    r.kind == lanes[i].kind
                        && r.open()
                        && r.intervention.is_none()
                        && r.hits() < MAX_HITS_PER_RUN
                        && r.owns(&unit.name)
                })?;
                Some((i, unit, run.id.clone()))
            })
            .collect()
    };
    if let Hit::Disconnect(client) = hit {
        // Mid-job only: a cut after the job ended would test nothing.
        let mut running_jobs = Vec::new();
        for candidate in candidates {
            let handle = runs::handle(client, &candidate.2);
            if tea_starter::status::pending_job(&handle).await.is_some() {
                running_jobs.push(candidate);
            }
        }
        candidates = running_jobs;
    }
    let Some((i, unit, _)) = candidates.choose(rng).cloned() else {
        return;
    };
    let lane = &lanes[i];
    let what = match (hit, unit.pid) {
        (Hit::Disconnect(_), _) => {
            format!(
                "docker network disconnect of container {} mid-job",
                unit.name
            )
        }
        (Hit::Kill, Some(pid)) => format!("SIGKILL external worker {} (pid {pid})", unit.name),
        (Hit::Kill, None) => format!("SIGKILL external worker {} (docker kill)", unit.name),
    };
    say!("EVENT {}: {what}", lane.kind);
    let done = match hit {
        Hit::Kill => lane.kill_unit(&unit).await,
        Hit::Disconnect(_) => lane.disconnect_unit(&unit).await,
    };
    match done {
        Ok(()) => {
            bump(counts, lane.kind, |c| match hit {
                Hit::Kill => c.worker_kills += 1,
                Hit::Disconnect(_) => c.disconnects += 1,
            });
            if let Some(run) = runs::lock(runs)
                .iter_mut()
                .find(|r| r.kind == lane.kind && r.owns(&unit.name))
            {
                match hit {
                    Hit::Kill => run.worker_kills += 1,
                    Hit::Disconnect(_) => run.disconnects += 1,
                }
            }
        }
        Err(e) => {
            say!("  failed: {e:#}");
            counts.failed_events += 1;
        }
    }
}

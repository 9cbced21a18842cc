//! The processes of the jobs this worker runs, and the worker process's own hardening.
//!
//! [`harden`] makes the worker non-dumpable (a job running as the same user cannot read
//! `/proc/<worker>/environ`, where the worker's Temporal credentials are, nor attach to it) and
//! a child subreaper (a job's processes whose parent exits are reparented to the worker instead
//! of init, so they stay findable as the worker's descendants).
//!
//! A job runs in a process group of its own. Its processes, as [`JobGroup::members`] finds
//! them in `/proc`, are every process in that group, every descendant of those, every process
//! seen as one of them before (while it lives: each look, on every heartbeat, remembers them,
//! so one that left the group with `setpgid`/`setsid` and was orphaned stays known), and,
//! while no other job runs in this worker, every process the worker adopted as subreaper (an
//! orphan of the job) and their descendants. [`JobGroup::kill`] SIGKILLs them until none is
//! left; [`reap_orphans`] waits for the adopted ones that exited, so they do not linger as
//! zombies.
//!
//! What this cannot reach while the worker lives: a process that left the job's group and
//! was orphaned between two looks while another job ran in the same worker (the product runs
//! one job per worker), or one reparented to another subreaper the job itself set up. Once the
//! worker is SIGKILLed, nothing in the worker runs: the job's first process gets SIGKILL from
//! the kernel (parent-death signal) and the rest is the compute's to end (the local provider
//! kills the worker's whole session; a container's processes end with it).

use std::{
    collections::{HashMap, HashSet},
    sync::{LazyLock, Mutex, MutexGuard},
    time::Duration,
};

use nix::{
    sys::{
        signal::{Signal, kill, killpg},
        wait::{WaitPidFlag, waitpid},
    },
    unistd::Pid,
};
use tea_runtime::procfs::{self, ProcStat};

/// Makes this process non-dumpable and a child subreaper (see the module documentation).
/// Call first thing in `main`: both settings are process-wide and survive for its life.
pub fn harden() -> Result<(), String> {
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| format!("cannot make the worker non-dumpable (PR_SET_DUMPABLE): {e}"))?;
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| {
        format!("cannot make the worker a child subreaper (PR_SET_CHILD_SUBREAPER): {e}")
    })?;
    Ok(())
}

/// A pid read from `/proc` as the `Pid` the signal calls take (every pid fits).
fn as_pid(pid: u32) -> Option<Pid> {
    i32::try_from(pid).ok().map(Pid::from_raw)
}

/// Process groups (= the pids of their first processes) of the jobs running in this worker.
/// Held while a job is spawned, so [`reap_orphans`] never waits for a job's first process
/// (its `Child` does).
static JOBS: LazyLock<Mutex<HashSet<u32>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

fn jobs() -> MutexGuard<'static, HashSet<u32>> {
    JOBS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running job's process group, registered while it exists.
#[derive(Debug)]
pub(crate) struct JobGroup {
    pgid: Pid,
    /// Every process found to be the job's so far, with its start time.
    known: Mutex<HashMap<u32, u64>>,
}

impl JobGroup {
    /// Spawns a job's first process with `spawn` (which must make it the leader of a new
    /// process group) and registers its group.
    pub(crate) fn spawn<C>(
        spawn: impl FnOnce() -> std::io::Result<C>,
        pid_of: impl FnOnce(&C) -> Option<u32>,
    ) -> std::io::Result<(C, Option<JobGroup>)> {
        let mut jobs = jobs();
        let child = spawn()?;
        let group = pid_of(&child).filter(|pid| *pid > 1).and_then(|pid| {
            let pgid = as_pid(pid)?;
            jobs.insert(pid);
            Some(JobGroup {
                pgid,
                known: Mutex::new(HashMap::new()),
            })
        });
        Ok((child, group))
    }

    pub(crate) fn pgid(&self) -> Pid {
        self.pgid
    }

    /// The job's live processes now (see the module documentation), remembered for the next
    /// look; never this worker.
    pub(crate) fn members(&self) -> Vec<Pid> {
        let stats = procfs::processes();
        let running = jobs().clone();
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let live: HashMap<u32, &ProcStat> = stats
            .iter()
            .filter(|s| !s.has_exited())
            .map(|s| (s.pid, s))
            .collect();
        known.retain(|pid, start| live.get(pid).is_some_and(|s| s.start_time == *start));
        let seeds: HashSet<u32> = known.keys().copied().collect();
        let found = members(
            u32::try_from(self.pgid.as_raw()).ok(),
            &seeds,
            &running,
            &stats,
            std::process::id(),
        );
        for pid in &found {
            if let Some(stat) = live.get(pid) {
                known.insert(*pid, stat.start_time);
            }
        }
        found.into_iter().filter_map(as_pid).collect()
    }

    /// Sends `signal` to the job's group and to each of its processes; returns how many
    /// processes it found.
    pub(crate) fn signal(&self, signal: Signal) -> usize {
        // Look first: once signalled, a process may end and orphan its children.
        let members = self.members();
        let _ = killpg(self.pgid, signal);
        for pid in &members {
            let _ = kill(*pid, signal);
        }
        members.len()
    }

    /// Waits until no process of the job is left or `deadline` passes; true when none is.
    pub(crate) async fn ended_by(&self, deadline: tokio::time::Instant) -> bool {
        let mut pause = Duration::from_millis(1);
        loop {
            reap_orphans();
            if self.members().is_empty() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// SIGKILLs every process of the job until none is left (processes may fork while they
    /// are being killed), reaping the orphans among them; gives up after `limit`, returning
    /// how many were still alive.
    pub(crate) async fn kill(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        let mut pause = Duration::from_millis(1);
        loop {
            let found = self.signal(Signal::SIGKILL);
            reap_orphans();
            if found == 0 || tokio::time::Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

impl Drop for JobGroup {
    fn drop(&mut self) {
        // Whatever is left of the job goes with it (the usual paths have killed it already).
        self.signal(Signal::SIGKILL);
        if let Ok(pgid) = u32::try_from(self.pgid.as_raw()) {
            jobs().remove(&pgid);
        }
        reap_orphans();
    }
}

/// The live processes of the job whose group is `pgid`, out of `stats`, for a worker `me`
/// running the jobs `running`: the group, the `known` processes, the worker's adopted orphans
/// when no other job runs, and the descendants of all of those (see the module
/// documentation); with no `pgid`, every descendant of the worker.
fn members(
    pgid: Option<u32>,
    known: &HashSet<u32>,
    running: &HashSet<u32>,
    stats: &[ProcStat],
    me: u32,
) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<&ProcStat>> = HashMap::new();
    for stat in stats {
        children.entry(stat.ppid).or_default().push(stat);
    }
    let alone = running.iter().all(|job| Some(*job) == pgid);
    let in_group = |s: &ProcStat| Some(s.pgrp) == pgid;
    let mut found: HashSet<u32> = HashSet::new();
    let mut queue: Vec<&ProcStat> = stats
        .iter()
        // The group, and its first process even if it left the group (while it is this
        // worker's child, so its pid cannot have been reused).
        .filter(|s| in_group(s) || (Some(s.pid) == pgid && s.ppid == me) || known.contains(&s.pid))
        .chain(
            // Adopted orphans: children of the worker that are no job's first process.
            stats
                .iter()
                .filter(|s| alone && s.ppid == me && !running.contains(&s.pid)),
        )
        .collect();
    while let Some(stat) = queue.pop() {
        if stat.pid == me || stat.pid <= 1 || !found.insert(stat.pid) {
            continue;
        }
        if let Some(kids) = children.get(&stat.pid) {
            // Never into another running job's group.
            queue.extend(
                kids.iter()
                    .filter(|k| in_group(k) || !running.contains(&k.pgrp)),
            );
        }
    }
    let mut live: Vec<u32> = stats
        .iter()
        .filter(|s| found.contains(&s.pid) && !s.has_exited())
        .map(|s| s.pid)
        .collect();
    live.sort_unstable();
    live
}

/// Waits for every child of this worker that has exited and is no job's first process: the
/// job's orphans this worker adopted as subreaper.
pub(crate) fn reap_orphans() {
    let running = jobs();
    let me = std::process::id();
    for stat in procfs::processes() {
        if stat.ppid == me
            && stat.state == 'Z'
            && !running.contains(&stat.pid)
            && let Some(pid) = as_pid(stat.pid)
        {
            let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
        }
    }
}

/// SIGKILLs every descendant of this worker until none is left (bounded), as it stops:
/// nothing it started outlives it.
pub async fn kill_descendants() {
    let me = std::process::id();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = members(
            None,
            &HashSet::new(),
            &HashSet::new(),
            &procfs::processes(),
            me,
        );
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            if !left.is_empty() {
                tracing::warn!(?left, "processes of jobs survived SIGKILL");
            }
            return;
        }
        for pid in left.iter().filter_map(|pid| as_pid(*pid)) {
            let _ = kill(pid, Signal::SIGKILL);
        }
        reap_orphans();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(pid: u32, ppid: u32, pgrp: u32) -> ProcStat {
        ProcStat {
            pid,
            state: 'S',
            ppid,
            pgrp,
            session: 1,
            start_time: 1000,
        }
    }

    #[test]
    fn a_job_is_its_group_its_descendants_what_it_was_and_the_worker_s_orphans() {
        let me = 100;
        let stats = [
            stat(me, 1, me),
            stat(200, me, 200),  // the job's first process
            stat(201, 200, 200), // its child, same group
            stat(202, 201, 202), // left the group (setpgid): still a descendant
            stat(203, me, 203),  // an orphan of the job, adopted (it left with setsid)
            stat(204, 203, 203), // that orphan's child
            stat(205, 1, 200),   // reparented elsewhere but still in the group
            stat(207, 1, 207),   // left the group and was orphaned: known from before
            stat(208, 207, 207), // its child
            stat(300, 7, 300),   // unrelated
            ProcStat {
                state: 'Z',
                ..stat(206, 200, 200)
            },
        ];
        let none = HashSet::new();
        let known = HashSet::from([207]);
        let running = HashSet::from([200]);
        assert_eq!(
            members(Some(200), &known, &running, &stats, me),
            [200, 201, 202, 203, 204, 205, 207, 208]
        );
        // With another job running, an adopted orphan may be that job's: left alone.
        let stats = [&stats[..], &[stat(400, me, 400)]].concat();
        let running = HashSet::from([200, 400]);
        assert_eq!(
            members(Some(200), &none, &running, &stats, me),
            [200, 201, 202, 205]
        );
        assert_eq!(members(Some(400), &none, &running, &stats, me), [400]);
        // Every descendant of the worker, when it stops.
        assert_eq!(
            members(None, &none, &none, &stats, me),
            [200, 201, 202, 203, 204, 400]
        );
    }
}

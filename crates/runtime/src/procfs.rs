//! The kernel's table of processes, read from `/proc/<pid>/stat`: the one parser of that file
//! and the one liveness check every crate uses (the local provider deciding whether its
//! recorded worker still runs, the external worker finding the processes of its jobs, the
//! tests waiting for a process to be gone).
//!
//! A process is alive while `/proc/<pid>/stat` exists and its state is neither `Z` (a zombie:
//! it exited and waits for its parent to reap it) nor `X` (dead). A pid alone may be reused by
//! another process once the first is gone; its start time (field 22, in clock ticks after
//! boot) tells the two apart, so a caller that recorded it asks [`is_alive`] with it.

/// The parts of `/proc/<pid>/stat` that say what a process is and where it belongs (fields
/// numbered as in proc(5)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 1.
    pub pid: u32,
    /// Field 3: `R`, `S`, `D`, `Z`, `T`, `X`, ...
    pub state: char,
    /// Field 4: the parent (0 for the kernel's own roots).
    pub ppid: u32,
    /// Field 5: the process group.
    pub pgrp: u32,
    /// Field 6: the session.
    pub session: u32,
    /// Field 22: start time in clock ticks after boot (tells a process from a reused pid).
    pub start_time: u64,
}

impl ProcStat {
    /// Parses the contents of `/proc/<pid>/stat`. The command name (field 2) is in parentheses
    /// and may itself hold spaces and parentheses, so the fields after it are counted from the
    /// last `)`.
    pub fn parse(text: &str) -> Option<Self> {
        let pid = text.split_once(' ')?.0.parse().ok()?;
        let close = text.rfind(')')?;
        let mut fields = text.get(close + 1..)?.split_ascii_whitespace();
        let state = fields.next()?.chars().next()?;
        let ppid = fields.next()?.parse().ok()?;
        let pgrp = fields.next()?.parse().ok()?;
        let session = fields.next()?.parse().ok()?;
        // Fields 7 to 21, then 22.
        let start_time = fields.nth(15)?.parse().ok()?;
        Some(Self {
            pid,
            state,
            ppid,
            pgrp,
            session,
            start_time,
        })
    }

    /// The current `/proc/<pid>/stat` of `pid`, or `None` when there is no such process.
    pub fn read(pid: u32) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// Whether the process has exited: a zombie (`Z`) or dead (`X`).
    pub fn has_exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Whether `pid` is a live process (it exists and has not exited, see [`ProcStat::has_exited`])
/// and, given the `start_time` recorded when it was started, still that process rather than a
/// later one that reused the pid. Without a start time, any live process with that pid counts.
pub fn is_alive(pid: u32, start_time: Option<u64>) -> bool {
    ProcStat::read(pid).is_some_and(|stat| {
        !stat.has_exited() && start_time.is_none_or(|start| stat.start_time == start)
    })
}

/// Every process visible in `/proc` now, exited or not.
pub fn processes() -> Vec<ProcStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(ProcStat::read)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let tail = "S 17 4321 4300 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 424242 1 2";
        let stat = ProcStat::parse(&format!("4321 (a) b (c)) {tail}")).expect("parse");
        assert_eq!(
            stat,
            ProcStat {
                pid: 4321,
                state: 'S',
                ppid: 17,
                pgrp: 4321,
                session: 4300,
                start_time: 424242,
            }
        );
        assert_eq!(ProcStat::parse("123 (x) Z 1 2"), None);
        assert_eq!(ProcStat::parse("garbage"), None);
        assert_eq!(ProcStat::parse(""), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let stat = ProcStat::read(me).expect("own stat");
        assert_eq!(stat.pid, me);
        assert_eq!(stat.ppid, std::os::unix::process::parent_id());
        assert!(!stat.has_exited());
        assert!(
            processes()
                .iter()
                .any(|p| p.pid == me && p.start_time == stat.start_time)
        );
    }

    #[test]
    fn a_live_process_is_alive_only_with_its_own_start_time() {
        let me = std::process::id();
        let start = ProcStat::read(me).expect("own stat").start_time;
        assert!(is_alive(me, None));
        assert!(is_alive(me, Some(start)));
        assert!(
            !is_alive(me, Some(start + 1)),
            "another start time means another process that reused the pid"
        );
    }

    #[test]
    fn a_zombie_is_not_alive_and_a_reaped_process_is_gone() {
        let mut child = Command::new("true")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        // Not reaped yet: its entry stays, as a zombie, once it has exited.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let zombie = loop {
            let stat = ProcStat::read(pid).expect("an unreaped child keeps its entry");
            if stat.has_exited() {
                break stat;
            }
            assert!(std::time::Instant::now() < deadline, "{pid} did not exit");
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert_eq!(zombie.state, 'Z');
        assert!(!is_alive(pid, None));
        assert!(!is_alive(pid, Some(zombie.start_time)));
        child.wait().expect("reap");
        assert_eq!(ProcStat::read(pid), None);
        assert!(!is_alive(pid, None));
    }
}

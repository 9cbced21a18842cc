//! The table the chaos command prints: one column per provider plus the total, then what the
//! counts mean, the runs that did not complete and why, and whether the exit status is 0.

use std::collections::BTreeMap;

use crate::{
    events::{AllCounts, Counts},
    lanes::Kind,
    measure::Measure,
    runs::{Intervention, Outcome, Run, describe},
};

/// Everything the table shows.
pub struct Report {
    seed: u64,
    kinds: Vec<Kind>,
    runs: Vec<Run>,
    counts: AllCounts,
    swept: BTreeMap<Kind, Result<usize, String>>,
    measures: BTreeMap<Kind, Measure>,
    /// Lanes that could not be measured or cleaned up, and why.
    problems: Vec<String>,
}

/// A cell: a number, or text such as `-` or `error`.
enum Cell {
    N(u64),
    Text(String),
}

impl Cell {
    fn show(&self) -> String {
        match self {
            Cell::N(n) => n.to_string(),
            Cell::Text(t) => t.clone(),
        }
    }
}

impl Report {
    pub fn new(seed: u64, kinds: &[Kind], runs: &[Run], counts: AllCounts) -> Self {
        Report {
            seed,
            kinds: kinds.to_vec(),
            runs: runs.to_vec(),
            counts,
            swept: BTreeMap::new(),
            measures: BTreeMap::new(),
            problems: Vec::new(),
        }
    }

    pub fn set_swept(&mut self, kind: Kind, swept: anyhow::Result<usize>) {
        self.swept.insert(kind, swept.map_err(|e| format!("{e:#}")));
    }

    pub fn set_measure(&mut self, kind: Kind, measure: anyhow::Result<Measure>) {
        match measure {
            Ok(measure) => {
                self.measures.insert(kind, measure);
            }
            Err(e) => self
                .problems
                .push(format!("{kind}: could not be measured: {e:#}")),
        }
    }

    /// What stopping the lane (removing what it made) came to.
    pub fn set_stopped(&mut self, kind: Kind, stopped: anyhow::Result<()>) {
        if let Err(e) = stopped {
            self.problems
                .push(format!("{kind}: could not be cleaned up: {e:#}"));
        }
    }

    fn runs_of(&self, kind: Kind) -> impl Iterator<Item = &Run> {
        self.runs.iter().filter(move |r| r.kind == kind)
    }

    fn count_runs(&self, kind: Kind, pred: impl Fn(&Outcome) -> bool) -> u64 {
        self.runs_of(kind)
            .filter(|r| r.outcome.as_ref().is_some_and(&pred))
            .count() as u64
    }

    fn open_runs(&self) -> u64 {
        self.runs
            .iter()
            .filter(|r| matches!(r.outcome, None | Some(Outcome::Open(_))))
            .count() as u64
    }

    fn left_running(&self) -> u64 {
        self.measures
            .values()
            .map(|m| m.left_running() as u64)
            .sum()
    }

    fn duplicates(&self) -> u64 {
        self.measures.values().map(|m| m.duplicates as u64).sum()
    }

    fn foreign_deleted(&self) -> u64 {
        self.measures
            .values()
            .map(|m| m.foreign_deleted as u64)
            .sum()
    }

    /// Exit status 0: every run closed, nothing left running, nothing duplicated, and every
    /// sweep and measurement happened.
    pub fn ok(&self) -> bool {
        self.open_runs() == 0
            && self.left_running() == 0
            && self
                .kinds
                .iter()
                .all(|k| self.counts(*k).bad_inputs_mishandled == 0)
            && self.duplicates() == 0
            && self.foreign_deleted() == 0
            && self.swept.values().all(Result::is_ok)
            && self.kinds.iter().all(|k| self.measures.contains_key(k))
            && self.problems.is_empty()
    }

    fn counts(&self, kind: Kind) -> Counts {
        self.counts.per_lane.get(&kind).cloned().unwrap_or_default()
    }

    /// The rows: label and one cell per provider; the total is added by summing numbers.
    fn rows(&self) -> Vec<(&'static str, Vec<Cell>, Option<Cell>)> {
        let per = |f: &dyn Fn(Kind) -> Cell| self.kinds.iter().map(|k| f(*k)).collect::<Vec<_>>();
        let measure = |kind: Kind, f: &dyn Fn(&Measure) -> Option<u64>| match self
            .measures
            .get(&kind)
            .and_then(f)
        {
            Some(n) => Cell::N(n),
            None => Cell::Text("-".into()),
        };
        let ev = |f: fn(&Counts) -> u32| per(&|k| Cell::N(u64::from(f(&self.counts(k)))));
        vec![
            (
                "runs started",
                per(&|k| Cell::N(self.runs_of(k).count() as u64)),
                None,
            ),
            (
                "  completed",
                per(&|k| Cell::N(self.count_runs(k, |o| matches!(o, Outcome::Completed { .. })))),
                None,
            ),
            (
                "  cancelled",
                per(&|k| Cell::N(self.count_runs(k, |o| matches!(o, Outcome::Cancelled)))),
                None,
            ),
            (
                "  terminated",
                per(&|k| Cell::N(self.count_runs(k, |o| matches!(o, Outcome::Terminated)))),
                None,
            ),
            (
                "  failed",
                per(&|k| {
                    Cell::N(
                        self.count_runs(k, |o| matches!(o, Outcome::Failed(_) | Outcome::TimedOut)),
                    )
                }),
                None,
            ),
            (
                "  still open (must be 0)",
                per(&|k| {
                    Cell::N(
                        self.runs_of(k)
                            .filter(|r| matches!(r.outcome, None | Some(Outcome::Open(_))))
                            .count() as u64,
                    )
                }),
                None,
            ),
            (
                "compute created",
                per(&|k| measure(k, &|m| Some(m.created))),
                None,
            ),
            (
                "  external-worker processes started",
                per(&|k| measure(k, &|m| m.process_starts)),
                None,
            ),
            (
                "  swept by the final sweep",
                per(&|k| match self.swept.get(&k) {
                    Some(Ok(n)) => Cell::N(*n as u64),
                    Some(Err(_)) => Cell::Text("error".into()),
                    None => Cell::Text("-".into()),
                }),
                None,
            ),
            (
                "compute left running (must be 0)",
                per(&|k| measure(k, &|m| Some(m.left_running() as u64))),
                None,
            ),
            (
                "  external-worker processes alive",
                per(&|k| measure(k, &|m| Some(m.processes_alive as u64))),
                None,
            ),
            (
                "duplicate compute (must be 0)",
                per(&|k| measure(k, &|m| Some(m.duplicates as u64))),
                None,
            ),
            (
                "foreign compute deleted (must be 0)",
                per(&|k| measure(k, &|m| Some(m.foreign_deleted as u64))),
                None,
            ),
            (
                "events: external worker SIGKILLs",
                ev(|c| c.worker_kills),
                None,
            ),
            (
                "events: container network disconnects",
                ev(|c| c.disconnects),
                None,
            ),
            (
                "events: workflow-worker SIGKILL+restart",
                ev(|c| c.workflow_worker_restarts),
                None,
            ),
            (
                "events: Temporal dev server restarts",
                per(&|_| Cell::Text("-".into())),
                Some(Cell::N(u64::from(self.counts.server_restarts))),
            ),
            (
                "events: API faults (429/5xx/deploy/long Retry-After)",
                ev(|c| c.faults),
                None,
            ),
            ("events: cancels", ev(|c| c.cancels), None),
            (
                "events: runs started with bad input",
                ev(|c| c.bad_inputs),
                None,
            ),
            (
                "  not refused at once (must be 0)",
                ev(|c| c.bad_inputs_mishandled),
                None,
            ),
            ("events: terminates", ev(|c| c.terminates), None),
            (
                "workflow-worker exits by itself",
                ev(|c| c.workflow_worker_exits),
                None,
            ),
        ]
    }

    pub fn print(&self) {
        let mut header = vec![String::new()];
        header.extend(self.kinds.iter().map(|k| k.to_string()));
        header.push("total".into());
        let mut table = vec![header];
        for (label, cells, total) in self.rows() {
            let total = total.unwrap_or_else(|| {
                let numbers: Vec<u64> = cells
                    .iter()
                    .filter_map(|c| match c {
                        Cell::N(n) => Some(*n),
                        Cell::Text(_) => None,
                    })
                    .collect();
                if numbers.is_empty() {
                    Cell::Text("-".into())
                } else {
                    Cell::N(numbers.iter().sum())
                }
            });
            let mut row = vec![label.to_owned()];
            row.extend(cells.iter().map(Cell::show));
            row.push(total.show());
            table.push(row);
        }
        let widths: Vec<usize> = (0..table[0].len())
            .map(|c| table.iter().map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
        println!();
        println!("chaos report (seed {})", self.seed);
        for (i, row) in table.iter().enumerate() {
            let mut line = format!("{:<w$}", row[0], w = widths[0]);
            for (c, cell) in row.iter().enumerate().skip(1) {
                line.push_str(&format!("  {:>w$}", cell, w = widths[c]));
            }
            println!("{}", line.trim_end());
            if i == 0 {
                println!(
                    "{}",
                    "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))
                );
            }
        }
        println!();
        println!(
            "compute created: local = distinct compute names used (kept logs + live dirs); \
             digitalocean = apps the fake stored; docker = containers of the lane's owner the \
             engine created (its events)."
        );
        println!(
            "compute left running: units still existing after the sweep (local dirs, DO apps, \
             containers of the lane's owner) plus external-worker processes of this chaos run \
             belonging to none."
        );
        println!(
            "duplicate compute: a compute name that got a second unit after its first was \
             deleted (local: log markers; DO: app IDs per name; docker: container IDs per \
             name). A worker restarted in place under its name is not a duplicate."
        );
        println!(
            "foreign compute: seeded units that are not the lane's (ext-api, our name shape \
             without our owner mark or with another's, foreign apps); none may be deleted."
        );
        if self.counts.failed_events > 0 {
            println!(
                "{} chaos event(s) could not be carried out (see the log above).",
                self.counts.failed_events
            );
        }
        for problem in &self.problems {
            println!("{problem}");
        }
        for (kind, swept) in &self.swept {
            if let Err(e) = swept {
                println!("{kind}: the final sweep failed: {e}");
            }
        }
        for (kind, m) in &self.measures {
            if !m.left_names.is_empty() {
                println!("{kind}: compute left: {}", m.left_names.join(", "));
            }
            if !m.duplicate_names.is_empty() {
                println!(
                    "{kind}: duplicate compute: {}",
                    m.duplicate_names.join(", ")
                );
            }
            if m.unobserved > 0 {
                println!(
                    "{kind}: {} app(s) were stored but never observed; duplicates among them \
                     cannot be ruled out",
                    m.unobserved
                );
            }
        }
        for run in &self.runs {
            let expected = matches!(
                (&run.outcome, run.intervention),
                (Some(Outcome::Completed { .. }), _)
                    | (Some(Outcome::Cancelled), Some(Intervention::Cancel))
                    | (Some(Outcome::Terminated), Some(Intervention::Terminate))
            );
            if !expected {
                let outcome = run
                    .outcome
                    .as_ref()
                    .map_or_else(|| "unknown".to_owned(), describe);
                println!(
                    "{} run {} (run ID {}, {} worker kill(s), {} network cut(s), chaos {:?}): \
                     {outcome}",
                    run.kind,
                    run.id,
                    run.run_id,
                    run.worker_kills,
                    run.disconnects,
                    run.intervention
                );
            }
        }
    }
}

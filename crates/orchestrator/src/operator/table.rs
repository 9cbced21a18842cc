//! What `compute list` and `sweep` print for people: aligned tables of the units of compute
//! and of a sweep's report.

use std::fmt::Write as _;

use tea_compute::Deleted;
use tea_contract::Phase;

use super::ComputeRow;
use crate::sweeper::SweepReport;

/// `rows` as an aligned table, with a header; a line saying so when there are none.
pub fn compute_table(rows: &[ComputeRow]) -> String {
    if rows.is_empty() {
        return "no compute of this owner\n".to_owned();
    }
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|row| {
            let (run, status, phase) = match &row.owner_run {
                Some(run) => (
                    format!("{} ({})", run.workflow_id, run.run_id),
                    "running".to_owned(),
                    run.phase
                        .map(|p| serde_plain(&p))
                        .unwrap_or_else(|| "? (no answer)".to_owned()),
                ),
                None => (
                    "-".to_owned(),
                    "none running".to_owned(),
                    "orphan: swept after the grace period".to_owned(),
                ),
            };
            [
                row.name.clone(),
                row.provider.clone(),
                run,
                status,
                phase,
                row.age_secs
                    .map(format_age)
                    .unwrap_or_else(|| "?".to_owned()),
            ]
        })
        .collect();
    table(
        [
            "NAME",
            "PROVIDER",
            "OWNER RUN",
            "RUN STATUS",
            "PHASE",
            "AGE",
        ],
        &cells,
    )
}

/// A sweep report for people: a summary line, then what was deleted and what failed.
pub fn sweep_table(report: &SweepReport) -> String {
    let mut out = String::new();
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let _ = writeln!(
        out,
        "sweep of {} compute of owner {}{}: {} examined, {} owned by running runs, {} within the \
         grace period, {} {verb}, {} failed",
        report.provider,
        report.owner,
        if report.dry_run { " (dry run)" } else { "" },
        report.examined,
        report.owned_by_running_runs,
        report.within_grace_period,
        report.deleted.len(),
        report.failed.len()
    );
    let mut cells: Vec<[String; 3]> = report
        .deleted
        .iter()
        .map(|d| {
            let outcome = match d.outcome {
                None => "would delete".to_owned(),
                Some(Deleted::Removed) => "deleted".to_owned(),
                Some(Deleted::AlreadyGone) => "already gone".to_owned(),
            };
            [d.name.clone(), outcome, d.reason.clone()]
        })
        .collect();
    cells.extend(
        report
            .failed
            .iter()
            .map(|f| [f.name.clone(), "FAILED".to_owned(), f.error.clone()]),
    );
    if !cells.is_empty() {
        out.push_str(&table(["NAME", "OUTCOME", "WHY"], &cells));
    }
    out
}

/// Columns padded to their widest cell; the last one is not padded.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn serde_plain(phase: &Phase) -> String {
    serde_json::to_value(phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{phase:?}"))
}

/// `42s`, `5m03s`, `2h05m`, `3d04h`.
fn format_age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        operator::OwnerRun,
        sweeper::{SweepFailure, SweptCompute},
    };

    #[test]
    fn ages_read_well() {
        assert_eq!(format_age(7), "7s");
        assert_eq!(format_age(303), "5m03s");
        assert_eq!(format_age(7_500), "2h05m");
        assert_eq!(format_age(273_600), "3d04h");
    }

    #[test]
    fn the_compute_table_names_each_unit_s_run_and_phase() {
        let rows = vec![
            ComputeRow {
                name: "ext-aaaa-1".into(),
                id: "app-1".into(),
                provider: "docker".into(),
                created_at: None,
                age_secs: Some(65),
                owner_run: Some(OwnerRun {
                    workflow_id: "nightly-export".into(),
                    run_id: "r-1".into(),
                    phase: Some(Phase::Running),
                }),
            },
            ComputeRow {
                name: "ext-bbbb-2".into(),
                id: "app-2".into(),
                provider: "docker".into(),
                created_at: None,
                age_secs: None,
                owner_run: None,
            },
        ];
        let text = compute_table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("NAME") && lines[0].ends_with("AGE"),
            "{text}"
        );
        assert!(
            lines[1].contains("nightly-export (r-1)")
                && lines[1].contains("running")
                && lines[1].ends_with("1m05s"),
            "{text}"
        );
        assert!(
            lines[2].contains("none running") && lines[2].contains("orphan"),
            "{text}"
        );
        // Aligned: every column starts at the same offset on every line.
        let at = |line: &str| line.find("docker");
        assert_eq!(at(lines[1]), at(lines[2]), "{text}");
        assert_eq!(compute_table(&[]), "no compute of this owner\n");
    }

    #[test]
    fn the_sweep_table_says_what_was_deleted_and_what_failed() {
        let report = SweepReport {
            provider: "local".into(),
            owner: "default/q".into(),
            examined: 3,
            owned_by_running_runs: 1,
            within_grace_period: 0,
            deleted: vec![SweptCompute {
                name: "ext-1".into(),
                id: "ext-1".into(),
                reason: "no running run owns it".into(),
                outcome: Some(Deleted::Removed),
            }],
            failed: vec![SweepFailure {
                name: "ext-2".into(),
                id: "ext-2".into(),
                error: "engine error".into(),
            }],
            dry_run: false,
        };
        let text = sweep_table(&report);
        assert!(text.starts_with("sweep of local compute of owner default/q: 3 examined, 1 owned by running runs, 0 within the grace period, 1 deleted, 1 failed"), "{text}");
        assert!(
            text.contains("ext-1  deleted  no running run owns it"),
            "{text}"
        );
        assert!(text.contains("ext-2  FAILED   engine error"), "{text}");
    }
}

//! The result table: one row per metric with its value, target and verdict, rendered as
//! aligned plain text for the terminal and as markdown for `docs/benchmarks.md`.

/// Whether a measured value meets its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Miss,
    /// Informational row without a target.
    Info,
}

impl Verdict {
    pub fn from_bool(pass: bool) -> Self {
        if pass { Verdict::Pass } else { Verdict::Miss }
    }

    fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::Info => "",
        }
    }
}

/// One metric.
#[derive(Clone, Debug)]
pub struct Row {
    pub section: &'static str,
    pub metric: String,
    pub value: String,
    pub target: String,
    pub verdict: Verdict,
}

/// All rows, in the order the sections ran.
#[derive(Default, Debug)]
pub struct Table {
    pub rows: Vec<Row>,
}

impl Table {
    /// Adds a row with a target.
    pub fn check(
        &mut self,
        section: &'static str,
        metric: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        pass: bool,
    ) {
        self.rows.push(Row {
            section,
            metric: metric.into(),
            value: value.into(),
            target: target.into(),
            verdict: Verdict::from_bool(pass),
        });
    }

    /// Adds the row checking that no local compute was left after a section's runs (`left`
    /// units were).
    pub fn check_nothing_left(&mut self, section: &'static str, left: usize) {
        self.check(
            section,
            "local compute left after the runs",
            left.to_string(),
            "0",
            left == 0,
        );
    }

    /// Adds an informational row.
    pub fn info(
        &mut self,
        section: &'static str,
        metric: impl Into<String>,
        value: impl Into<String>,
    ) {
        self.rows.push(Row {
            section,
            metric: metric.into(),
            value: value.into(),
            target: String::new(),
            verdict: Verdict::Info,
        });
    }

    /// Adds a row saying a section could not be measured.
    pub fn failed(&mut self, section: &'static str, error: &anyhow::Error) {
        self.rows.push(Row {
            section,
            metric: format!("{section}: section failed"),
            value: format!("{error:#}"),
            target: "completes".into(),
            verdict: Verdict::Miss,
        });
    }

    pub fn misses(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.verdict == Verdict::Miss)
            .count()
    }

    fn cells(&self) -> Vec<[String; 4]> {
        self.rows
            .iter()
            .map(|r| {
                [
                    r.metric.clone(),
                    r.value.clone(),
                    r.target.clone(),
                    r.verdict.as_str().to_owned(),
                ]
            })
            .collect()
    }

    /// Aligned plain text.
    pub fn to_text(&self) -> String {
        let header = ["metric", "value", "target", "verdict"].map(str::to_owned);
        let cells = self.cells();
        let mut widths = header.clone().map(|h| h.chars().count());
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |row: &[String; 4]| {
            let mut out = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                out.push_str(cell);
                if i < 3 {
                    out.push_str(&" ".repeat(w - cell.chars().count()));
                }
            }
            out.trim_end().to_owned() + "\n"
        };
        let mut out = line(&header);
        out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 6));
        out.push('\n');
        let mut section = None;
        for (row, cells) in self.rows.iter().zip(&cells) {
            if section.is_some() && section != Some(row.section) {
                out.push('\n');
            }
            section = Some(row.section);
            out.push_str(&line(cells));
        }
        out
    }

    /// A markdown table.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from("| metric | value | target | verdict |\n|---|---|---|---|\n");
        for row in self.cells() {
            let escaped = row.map(|c| c.replace('|', "\\|"));
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                escaped[0], escaped[1], escaped[2], escaped[3]
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_aligned_text_and_markdown() {
        let mut table = Table::default();
        table.check("a", "cold start", "30 ms", "<= 50 ms", true);
        table.info("b", "phase", "1 ms");
        let text = table.to_text();
        assert!(text.contains("cold start  30 ms  <= 50 ms  PASS"), "{text}");
        assert!(table.to_markdown().contains("| phase | 1 ms |  |  |"));
        assert_eq!(table.misses(), 0);
    }
}

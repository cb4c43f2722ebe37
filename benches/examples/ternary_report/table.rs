//! A training column as numbers ([`Table`]), its generated section ([`Column`]: the table plus
//! the commands that wrote it and their wall clocks), the markdown both are written as, and the
//! parse and merge behind `--merge`: a section is read back, the rows of a new run added or
//! replaced, and the whole written again, so that a column can be completed over several runs.

use vsa_optim_bench::ternary_runs::mean_sd;

/// What a training column reports.
#[derive(Clone, Copy, PartialEq)]
pub enum Metric {
    /// Digits test accuracy in percent (higher is better; Δ in points).
    DigitsAccuracy,
    /// Char-LM validation cross-entropy in nats (lower is better; Δ in percent).
    CharLmLoss,
}

impl Metric {
    /// Whether `a` is a better mean than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Self::DigitsAccuracy => a > b,
            Self::CharLmLoss => a < b,
        }
    }

    /// Decimals printed (and kept by a parse).
    fn decimals(self) -> usize {
        match self {
            Self::DigitsAccuracy => 2,
            Self::CharLmLoss => 4,
        }
    }

    fn round(self, x: f64) -> f64 {
        let p = 10f64.powi(self.decimals() as i32);
        (x * p).round() / p
    }

    fn header(self) -> &'static str {
        match self {
            Self::DigitsAccuracy => {
                "| accumulator | bytes held (digits MLP, 9 610 parameters) | best lr | test acc. % per seed | mean ± sd | Δ vs f32 (points) | mean at each lr |\n|---|---|---|---|---|---|---|\n"
            }
            Self::CharLmLoss => {
                "| accumulator | bytes held | best lr | val. loss per seed | mean ± sd | Δ vs f32 (%) | mean at each lr |\n|---|---|---|---|---|---|---|\n"
            }
        }
    }
}

/// One row: the mean over the seeds at every learning rate tried, and the seeds' values and
/// their standard deviation at the best one.
#[derive(Clone, Debug, PartialEq)]
pub struct RowResult {
    /// The row's label (first cell).
    pub label: String,
    /// Bytes held by the accumulator, as printed.
    pub bytes: String,
    /// `(lr, mean over the seeds)`, by increasing lr.
    pub per_lr: Vec<(f64, f64)>,
    /// The learning rate with the best mean.
    pub best_lr: f64,
    /// Each seed's value at `best_lr`.
    pub per_seed: Vec<f64>,
    /// Their sample standard deviation.
    pub sd: f64,
}

impl RowResult {
    /// The row from every `(lr, values over the seeds)`: the best lr by mean (the first of
    /// equals).
    pub fn new(label: String, bytes: String, metric: Metric, runs: &[(f64, Vec<f64>)]) -> Self {
        let mut per_lr: Vec<(f64, f64)> = runs.iter().map(|(lr, v)| (*lr, mean_sd(v).0)).collect();
        per_lr.sort_by(|a, b| a.0.total_cmp(&b.0));
        let best_lr = best(metric, &per_lr);
        let per_seed = runs
            .iter()
            .find(|r| r.0 == best_lr)
            .map(|r| r.1.clone())
            .unwrap_or_default();
        let sd = mean_sd(&per_seed).1;
        Self {
            label,
            bytes,
            per_lr,
            best_lr,
            per_seed,
            sd,
        }
    }

    fn mean(&self) -> f64 {
        self.per_lr
            .iter()
            .find(|p| p.0 == self.best_lr)
            .map_or(f64::NAN, |p| p.1)
    }
}

/// The learning rate of the best mean in `per_lr` (the first of equals).
fn best(metric: Metric, per_lr: &[(f64, f64)]) -> f64 {
    let mut b: Option<(f64, f64)> = None;
    for &(lr, m) in per_lr {
        if b.is_none_or(|b| metric.better(m, b.1)) {
            b = Some((lr, m));
        }
    }
    b.map_or(f64::NAN, |b| b.0)
}

/// A training column: its settings line (up to the grid), the shared learning-rate grid and
/// the rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// The `#### …` line up to ` on [grid]`: task, steps, micro-batches, seeds.
    pub settings: String,
    /// The grid every row was tuned on (a row extended later lists more in its last cell).
    pub lrs: Vec<f64>,
    /// The rows, in table order.
    pub rows: Vec<RowResult>,
}

impl Table {
    /// The markdown: settings line, header and rows; Δ against the row labelled `exact`,
    /// from the printed (rounded) means.
    pub fn render(&self, metric: Metric, exact: &str) -> String {
        let d = metric.decimals();
        let mut out = format!(
            "\n{} on {:?}\n\n{}",
            self.settings,
            self.lrs,
            metric.header()
        );
        let base = self
            .rows
            .iter()
            .find(|r| r.label == exact)
            .map(|r| metric.round(r.mean()));
        for r in &self.rows {
            let m = metric.round(r.mean());
            let delta = match (base, metric) {
                (None, _) => "—".to_string(),
                (Some(b), Metric::DigitsAccuracy) => format!("{:+.2}", m - b),
                (Some(b), Metric::CharLmLoss) => format!("{:+.2}", 100.0 * (m - b) / b),
            };
            let seeds: Vec<String> = r.per_seed.iter().map(|v| format!("{v:.d$}")).collect();
            let lrs: Vec<String> = r
                .per_lr
                .iter()
                .map(|(lr, v)| format!("{lr:e}: {v:.d$}"))
                .collect();
            out.push_str(&format!(
                "| {} | {} | {:e} | {} | {m:.d$} ± {:.d$} | {delta} | {} |\n",
                r.label,
                r.bytes,
                r.best_lr,
                seeds.join(", "),
                r.sd,
                lrs.join(" / ")
            ));
        }
        if self
            .rows
            .iter()
            .any(|r| r.per_lr.iter().any(|p| !self.lrs.contains(&p.0)))
        {
            out.push_str("\nA row whose best lr was at an edge of the grid was extended by a later `--merge` command: the last column names every lr it was tried at.\n");
        }
        out
    }

    /// Parses what [`Table::render`] wrote (and the earlier form whose last cell lists the
    /// means in grid order without the learning rates).
    pub fn parse(text: &str) -> Result<Self, String> {
        let heading = text
            .lines()
            .find(|l| l.starts_with("#### "))
            .ok_or("no `#### ` settings line")?;
        let i = heading
            .rfind(" on [")
            .ok_or_else(|| format!("no learning-rate grid in {heading:?}"))?;
        let settings = heading[..i].to_string();
        let lrs = parse_list(heading[i + 5..].trim_end().trim_end_matches(']'))?;
        let mut rows = Vec::new();
        for line in text.lines().filter(|l| l.starts_with("| ")) {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            if cells.first() == Some(&"accumulator") {
                continue;
            }
            let [label, bytes, best_lr, seeds, mean_sd, _delta, per_lr] = cells[..] else {
                return Err(format!("a row of {} cells, not 7: {line:?}", cells.len()));
            };
            let num = |s: &str| {
                s.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("not a number: {s:?} in {line:?}"))
            };
            let items: Vec<&str> = per_lr.split(" / ").collect();
            let per_lr: Vec<(f64, f64)> = if items.iter().all(|s| s.contains(':')) {
                items
                    .iter()
                    .map(|s| {
                        let (lr, v) = s.split_once(':').unwrap_or_default();
                        Ok((num(lr)?, num(v)?))
                    })
                    .collect::<Result<_, String>>()?
            } else if items.len() == lrs.len() {
                lrs.iter()
                    .zip(&items)
                    .map(|(&lr, v)| Ok((lr, num(v)?)))
                    .collect::<Result<_, String>>()?
            } else {
                return Err(format!(
                    "{} means for a grid of {}: {line:?}",
                    items.len(),
                    lrs.len()
                ));
            };
            let sd = mean_sd
                .split_once('±')
                .ok_or_else(|| format!("no `mean ± sd` in {line:?}"))?
                .1;
            rows.push(RowResult {
                label: label.to_string(),
                bytes: bytes.to_string(),
                per_lr,
                best_lr: num(best_lr)?,
                per_seed: seeds.split(',').map(num).collect::<Result<_, _>>()?,
                sd: num(sd)?,
            });
        }
        Ok(Self {
            settings,
            lrs,
            rows,
        })
    }

    /// Why the rows of a run with `settings` on grid `lrs` cannot be merged into this table,
    /// if they cannot: the settings line must be the same, and the grid too unless every row
    /// of the run is already here (a row's grid extended).
    pub fn refuse_merge(&self, settings: &str, lrs: &[f64], labels: &[String]) -> Option<String> {
        if settings != self.settings {
            return Some(format!(
                "the section was measured as {:?}, this run is {settings:?}",
                self.settings
            ));
        }
        let missing: Vec<&String> = labels
            .iter()
            .filter(|l| !self.rows.iter().any(|r| &r.label == *l))
            .collect();
        if lrs != self.lrs.as_slice() && !missing.is_empty() {
            return Some(format!(
                "rows {missing:?} are not in the section: a new row must be run on its grid {:?} (this run: {lrs:?})",
                self.lrs
            ));
        }
        None
    }

    /// This table with `new`'s rows added, or merged into the row of the same label (the
    /// learning rates measured again replaced, the others kept, the best chosen again), in
    /// the order of `order` (labels; others after, as they come). Fails where a row's best
    /// lr would be one whose per-seed values neither table holds.
    pub fn merge(&self, new: &Table, metric: Metric, order: &[String]) -> Result<Table, String> {
        let mut rows = self.rows.clone();
        for n in &new.rows {
            let Some(o) = rows.iter_mut().find(|r| r.label == n.label) else {
                rows.push(n.clone());
                continue;
            };
            let mut per_lr: Vec<(f64, f64)> = o
                .per_lr
                .iter()
                .filter(|p| !n.per_lr.iter().any(|q| q.0 == p.0))
                .chain(&n.per_lr)
                .copied()
                .collect();
            per_lr.sort_by(|a, b| a.0.total_cmp(&b.0));
            let best_lr = best(metric, &per_lr);
            let (per_seed, sd) = if n.per_lr.iter().any(|q| q.0 == best_lr) {
                (n.per_seed.clone(), n.sd)
            } else if best_lr == o.best_lr {
                (o.per_seed.clone(), o.sd)
            } else {
                return Err(format!(
                    "row {:?}: the best lr {best_lr:e} has no per-seed values; run it again",
                    n.label
                ));
            };
            *o = RowResult {
                label: n.label.clone(),
                bytes: n.bytes.clone(),
                per_lr,
                best_lr,
                per_seed,
                sd,
            };
        }
        let rank = |r: &RowResult| {
            order
                .iter()
                .position(|l| *l == r.label)
                .unwrap_or(order.len())
        };
        rows.sort_by_key(rank);
        Ok(Table {
            settings: self.settings.clone(),
            lrs: self.lrs.clone(),
            rows,
        })
    }
}

fn parse_list(s: &str) -> Result<Vec<f64>, String> {
    s.split(',')
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .map_err(|_| format!("not a learning rate: {v:?}"))
        })
        .collect()
}

/// A generated long-column section: the commands that wrote it, in order, their wall clocks
/// (one fewer while the last is still running), and the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    /// Each command, `cargo run …`, in order.
    pub commands: Vec<String>,
    /// Each finished command's wall clock, e.g. `1217 s`.
    pub walls: Vec<String>,
    /// The table.
    pub table: Table,
}

impl Column {
    /// The section's text. `full` is the command of the whole column; `running`, while the
    /// last command is still going: `(rows done, rows it runs, seconds so far)`.
    pub fn render(
        &self,
        metric: Metric,
        exact: &str,
        full: &str,
        running: Option<(usize, usize, f64)>,
    ) -> String {
        let cmds: Vec<String> = self.commands.iter().map(|c| format!("`{c}`")).collect();
        let mut out = if cmds.len() == 1 {
            format!("Regenerate: {}", cmds[0])
        } else {
            format!(
                "Regenerate, in order (`--merge` keeps the rows already in the section and adds or replaces the rows it ran): {}",
                cmds.join(", then ")
            )
        };
        out.push_str(&format!(
            " (the full column: `{full}`; all randomness seeded).\n"
        ));
        out.push_str(&self.table.render(metric, exact));
        let tail = "(release; shared 2-core machine unless stated otherwise).\n";
        match running {
            Some((done, total, secs)) => {
                out.push_str(&format!(
                    "\n**Incomplete:** {done} of {total} rows of the last command measured so far ({secs:.0} s); the run was still going or was stopped.\n"
                ));
                if !self.walls.is_empty() {
                    out.push_str(&format!(
                        "Wall clock of the earlier commands, in order: {} {tail}",
                        self.walls.join("; ")
                    ));
                }
            }
            None if self.walls.len() == 1 => {
                out.push_str(&format!(
                    "\nWall clock of this command: {} {tail}",
                    self.walls[0]
                ));
            }
            None => out.push_str(&format!(
                "\nWall clock of the commands, in order: {} {tail}",
                self.walls.join("; ")
            )),
        }
        out
    }

    /// Parses what [`Column::render`] wrote. A command that did not finish gets the wall
    /// clock `stopped`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let first = text.lines().next().unwrap_or_default();
        let head = first.split("(the full column:").next().unwrap_or_default();
        let commands: Vec<String> = head
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|c| c.starts_with("cargo "))
            .map(String::from)
            .collect();
        if commands.is_empty() {
            return Err(format!("no `cargo …` command on the first line: {first:?}"));
        }
        let mut walls: Vec<String> = text
            .lines()
            .find(|l| l.starts_with("Wall clock"))
            .and_then(|l| l.split_once(": "))
            .map(|(_, rest)| {
                let list = rest.split(" (release").next().unwrap_or_default();
                list.split("; ").map(String::from).collect()
            })
            .unwrap_or_default();
        walls.resize(commands.len().max(walls.len()), "stopped".into());
        Ok(Self {
            commands,
            walls,
            table: Table::parse(text)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXACT: &str = "f32 sum (exact)";
    const FULL: &str = "-- --long --parts charlm --write docs/benchmarks.md";
    const SETTINGS: &str = "#### Char-LM validation loss (nats/char), 40 steps of 8 micro-batches (char-lm batch 8x8 micro), seeds [0, 1, 2], AdamW lr tuned per row";

    fn order() -> Vec<String> {
        ["f32 sum (exact)", "bf16 sum", "2 trit(s)", "5 trit(s)"]
            .map(String::from)
            .to_vec()
    }

    fn row(label: &str, runs: &[(f64, [f64; 3])]) -> RowResult {
        let runs: Vec<(f64, Vec<f64>)> = runs.iter().map(|(l, v)| (*l, v.to_vec())).collect();
        RowResult::new(label.into(), "100".into(), Metric::CharLmLoss, &runs)
    }

    fn column(cmd: &str, rows: Vec<RowResult>, lrs: &[f64]) -> Column {
        Column {
            commands: vec![cmd.into()],
            walls: vec!["10 s".into()],
            table: Table {
                settings: SETTINGS.into(),
                lrs: lrs.to_vec(),
                rows,
            },
        }
    }

    /// Two small sections: the second run's rows are added (bf16), replace the row of the
    /// same label (2 trits) or extend its grid (5 trits, best lr moves to the new point);
    /// f32 is kept, Δ is recomputed, both commands and wall clocks are named, and the
    /// written text parses back to what was written.
    #[test]
    fn merge_of_two_small_tables() {
        let grid = [1e-3, 2e-3];
        let old = column(
            "cargo run A",
            vec![
                row(EXACT, &[(1e-3, [2.0, 2.0, 2.0]), (2e-3, [2.1, 2.1, 2.1])]),
                row(
                    "2 trit(s)",
                    &[(1e-3, [3.0, 3.0, 3.0]), (2e-3, [3.1, 3.1, 3.1])],
                ),
                row(
                    "5 trit(s)",
                    &[(1e-3, [2.6, 2.6, 2.6]), (2e-3, [2.5, 2.4, 2.6])],
                ),
            ],
            &grid,
        );
        let text = old.render(Metric::CharLmLoss, EXACT, FULL, None);
        assert!(text.contains("| 2 trit(s) | 100 | 1e-3 | 3.0000, 3.0000, 3.0000 | 3.0000 ± 0.0000 | +50.00 | 1e-3: 3.0000 / 2e-3: 3.1000 |"), "{text}");
        let parsed = Column::parse(&text).expect("parses");
        assert_eq!(parsed.render(Metric::CharLmLoss, EXACT, FULL, None), text);

        let new_rows = vec![
            row(
                "bf16 sum",
                &[(1e-3, [2.02, 2.02, 2.02]), (2e-3, [2.2, 2.2, 2.2])],
            ),
            row(
                "2 trit(s)",
                &[(1e-3, [2.2, 2.2, 2.2]), (2e-3, [2.1, 2.0, 2.2])],
            ),
        ];
        assert_eq!(parsed.table.refuse_merge(SETTINGS, &grid, &[]), None);
        let new = Table {
            settings: SETTINGS.into(),
            lrs: grid.to_vec(),
            rows: new_rows,
        };
        let merged = parsed
            .table
            .merge(&new, Metric::CharLmLoss, &order())
            .expect("merges");
        let labels: Vec<&str> = merged.rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, [EXACT, "bf16 sum", "2 trit(s)", "5 trit(s)"]);
        assert_eq!(merged.rows[0], parsed.table.rows[0]);
        assert_eq!(merged.rows[2].per_seed, vec![2.1, 2.0, 2.2]);
        assert_eq!(merged.rows[2].best_lr, 2e-3);
        assert_eq!(merged.rows[3], parsed.table.rows[2]);

        // A grid extension of one row: a new point 4e-3 for 5 trits beats 2e-3.
        let ext = Table {
            settings: SETTINGS.into(),
            lrs: vec![4e-3],
            rows: vec![row("5 trit(s)", &[(4e-3, [2.3, 2.3, 2.3])])],
        };
        assert!(
            merged
                .refuse_merge(SETTINGS, &[4e-3], &["bf16 sum".into()])
                .is_none()
        );
        assert!(
            merged
                .refuse_merge(SETTINGS, &[4e-3], &["3 trit(s)".into()])
                .is_some()
        );
        assert!(merged.refuse_merge("#### other", &grid, &[]).is_some());
        let merged = merged
            .merge(&ext, Metric::CharLmLoss, &order())
            .expect("merges");
        let five = &merged.rows[3];
        assert_eq!(five.best_lr, 4e-3);
        assert_eq!(five.per_lr.len(), 3);

        let col = Column {
            commands: vec!["cargo run A".into(), "cargo run B --merge".into()],
            walls: vec!["10 s".into(), "20 s".into()],
            table: merged,
        };
        let text = col.render(Metric::CharLmLoss, EXACT, FULL, None);
        assert!(text.starts_with("Regenerate, in order"), "{text}");
        assert!(
            text.contains("`cargo run A`, then `cargo run B --merge`"),
            "{text}"
        );
        assert!(
            text.contains(
                "| bf16 sum | 100 | 1e-3 | 2.0200, 2.0200, 2.0200 | 2.0200 ± 0.0000 | +1.00 |"
            ),
            "{text}"
        );
        assert!(text.contains("| 5 trit(s) | 100 | 4e-3 | 2.3000, 2.3000, 2.3000 | 2.3000 ± 0.0000 | +15.00 | 1e-3: 2.6000 / 2e-3: 2.5000 / 4e-3: 2.3000 |"), "{text}");
        assert!(text.contains("Wall clock of the commands, in order: 10 s; 20 s (release"));
        let again = Column::parse(&text).expect("parses");
        assert_eq!(again.commands, col.commands);
        assert_eq!(again.walls, col.walls);
        assert_eq!(again.render(Metric::CharLmLoss, EXACT, FULL, None), text);
    }

    /// The form written before `--merge` (means in grid order, no lrs) parses.
    #[test]
    fn parses_the_earlier_form() {
        let text = "Regenerate: `cargo run --release -p vsa-optim-bench --example ternary_report -- --long --parts charlm --seeds 1 --lrs 1e-3,2e-3 --write docs/benchmarks.md` (the full column: `-- --long --parts charlm --write docs/benchmarks.md`; all randomness seeded).\n\n#### Char-LM validation loss (nats/char), 40 steps of 8 micro-batches (char-lm batch 8x8 micro), seeds [0], AdamW lr tuned per row on [0.001, 0.002]\n\n| accumulator | bytes held | best lr | val. loss per seed | mean ± sd | Δ vs f32 (%) | mean at each lr |\n|---|---|---|---|---|---|---|\n| f32 sum (exact) | 1689564 | 1e-3 | 2.5594 | 2.5594 ± 0.0000 | +0.00 | 2.5594 / 2.5993 |\n\nWall clock of this command: 1217 s (release; shared 2-core machine unless stated otherwise).\n";
        let c = Column::parse(text).expect("parses");
        assert_eq!(c.commands.len(), 1);
        assert_eq!(c.walls, vec!["1217 s".to_string()]);
        assert_eq!(c.table.lrs, vec![1e-3, 2e-3]);
        assert_eq!(c.table.rows[0].per_lr, vec![(1e-3, 2.5594), (2e-3, 2.5993)]);
        assert_eq!(c.table.rows[0].best_lr, 1e-3);
    }
}

//! `ternary_report --long`: the frontier's long columns (the 2400-step digits column and the
//! char-LM column) and, on request, the real-gradient table on char-LM gradients, each
//! written into its own section of `docs/benchmarks.md`.

use super::*;

/// The rows named by `flag` (`f32,bf16,1e,1n,1s,…,5s`), or every row when the flag is absent.
pub(super) fn rows_flag(args: &[String], flag: &str) -> Result<Vec<Row>> {
    match flag_value(args, flag) {
        None => Ok(Row::all()),
        Some(list) => list
            .split(',')
            .map(|id| {
                Row::all()
                    .into_iter()
                    .find(|r| r.id() == id)
                    .ok_or_else(|| {
                        candle_core::Error::Msg(format!(
                            "{flag}: no row {id:?} (f32, bf16, 1e, 1n, 1s, 2e, …, 5s)"
                        ))
                    })
            })
            .collect(),
    }
}

/// The value after `flag` in `args`, if any.
pub(super) fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// `--long`: the 2400-step digits column (section `ternary-frontier-digits2400`) and the
/// char-LM column (validation loss at the demo's step count for the accumulated char-LM
/// regime; section `ternary-frontier-charlm`), for `--rows` (default all), `--seeds N`
/// (default 3), `--lrs a,b,…` (default the shared grid [`LR_GRID`]) and
/// `--parts digits,charlm,chargrads` (default `digits,charlm`; `chargrads`, the real-gradient
/// table on char-LM micro-batch gradients of [`grads::chargrad_section`], section
/// `ternary-frontier-chargrads`, minutes rather than hours, runs first and only when named;
/// it takes `--rows` and `--quick`, and refuses `--merge`). With `--write PATH` each
/// section is rewritten after every finished row (marked incomplete until its last row), so
/// an interrupted run leaves what it measured. With `--merge` as well, the rows already in
/// the section are kept (checked before anything runs: same settings line, and the same
/// grid unless every row run is already there, whose grid is then extended), the rows run
/// are added or replace theirs, and the section names every command that wrote it.
pub(super) fn long_columns(
    args: &[String],
    quick: bool,
    dev: &Device,
    write: Option<&str>,
) -> Result<()> {
    let bad = |what: &str, v: &str| candle_core::Error::Msg(format!("{what}: cannot use {v:?}"));
    let rows = rows_flag(args, "--rows")?;
    let seeds: u64 = match flag_value(args, "--seeds") {
        None => 3,
        Some(v) => v
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| bad("--seeds", v))?,
    };
    let parts = flag_value(args, "--parts").unwrap_or("digits,charlm");
    for p in parts.split(',') {
        if p != "digits" && p != "charlm" && p != "chargrads" {
            return Err(bad("--parts (digits, charlm, chargrads)", p));
        }
    }
    let chargrads = parts.split(',').any(|p| p == "chargrads");
    let seeds: Vec<u64> = (0..if quick { 1 } else { seeds }).collect();
    let lrs: Vec<f64> = match flag_value(args, "--lrs") {
        None if quick => vec![2e-3],
        None => LR_GRID.to_vec(),
        Some(list) => list
            .split(',')
            .map(|v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x > 0.0)
                    .ok_or_else(|| bad("--lrs", v))
            })
            .collect::<Result<_>>()?,
    };
    let merge = args.iter().any(|a| a == "--merge");
    if merge && write.is_none() {
        return Err(bad("--merge", "without --write PATH"));
    }
    if merge && chargrads {
        return Err(bad("--merge (a training column only)", "--parts chargrads"));
    }
    let mut given: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    if let Some(i) = given.iter().position(|a| *a == "--write") {
        given.drain(i..(i + 2).min(given.len()));
    }
    let command = format!(
        "cargo run --release -p vsa-optim-bench --example ternary_report -- {} --write docs/benchmarks.md",
        given.join(" ")
    );
    let labels: Vec<String> = rows.iter().map(|r| r.label()).collect();
    let order: Vec<String> = Row::all().into_iter().map(Row::label).collect();
    let exact = Row::F32.label();
    // With `--merge`, the section as it stands, checked against this run.
    let kept = |section: &str, settings: &str| -> Result<Option<Column>> {
        let Some(path) = write.filter(|_| merge) else {
            return Ok(None);
        };
        let msg = |e: String| candle_core::Error::Msg(format!("--merge, {section}: {e}"));
        let col = Column::parse(&read_section(path, section)?).map_err(msg)?;
        match col.table.refuse_merge(settings, &lrs, &labels) {
            Some(why) => Err(msg(why)),
            None => Ok(Some(col)),
        }
    };
    // Every task built, and with `--merge` every section read and checked, before anything runs.
    let mut jobs: Vec<Job<'_>> = Vec::new();
    for part in parts.split(',').filter(|p| *p != "chargrads") {
        let (section, metric, steps, task): (_, _, _, Box<dyn Task>) = if part == "digits" {
            let steps = if quick { 120 } else { 2400 };
            let task = DigitsTask::new(Some(64), 8, dev)?;
            let section = "ternary-frontier-digits2400";
            (section, Metric::DigitsAccuracy, steps, Box::new(task))
        } else {
            // The demo's accumulated char-LM regime: its micro-batches, windows and step count.
            let ws = workload_settings(Workload::CharLm, Regime::Large, quick);
            let task = CharLmTask::new(
                CharLmConfig::default(),
                ws.batch.unwrap_or(8),
                ws.micro,
                ws.eval_windows,
                dev,
            )?;
            let section = "ternary-frontier-charlm";
            (section, Metric::CharLmLoss, ws.steps, Box::new(task))
        };
        let settings = settings_line(task.as_ref(), metric, steps, &seeds);
        kept(section, &settings)?;
        jobs.push((part, section, metric, steps, task, settings));
    }
    if chargrads {
        const SECTION: &str = "ternary-frontier-chargrads";
        if let Some(path) = write {
            read_section(path, SECTION)?;
        }
        let out = grads::chargrad_section(&rows, quick, dev, &command)?;
        print!("{out}");
        if let Some(path) = write {
            write_section(path, SECTION, &out)?;
        }
    }
    for (part, section, metric, steps, task, settings) in jobs {
        let t0 = std::time::Instant::now();
        let full = format!("-- --long --parts {part} --write docs/benchmarks.md");
        // The section: this run's rows merged into the kept ones, read again before every
        // write (so that `--merge` runs of different rows may go side by side).
        let column = |table: &Table, wall: Option<String>| -> Result<Column> {
            let old = kept(section, &settings)?;
            let (mut commands, mut walls) = old
                .as_ref()
                .map_or((vec![], vec![]), |c| (c.commands.clone(), c.walls.clone()));
            if let Some(i) = commands.iter().position(|c| *c == command) {
                commands.remove(i);
                walls.remove(i);
            }
            commands.push(command.clone());
            walls.extend(wall);
            let table = match &old {
                None => table.clone(),
                Some(c) => c.table.merge(table, metric, &order).map_err(|e| {
                    eprint!("{}", table.render(metric, &exact));
                    candle_core::Error::Msg(format!("--merge, {section}: {e}"))
                })?,
            };
            Ok(Column {
                commands,
                walls,
                table,
            })
        };
        let total = rows.len();
        let mut done = 0usize;
        let table = training_table(task.as_ref(), metric, &rows, steps, &seeds, &lrs, |table| {
            done += 1;
            let Some(path) = write else { return Ok(()) };
            let secs = t0.elapsed().as_secs_f64();
            let running = (done < total).then_some((done, total, secs));
            let wall = running.is_none().then(|| format!("{secs:.0} s"));
            let col = column(table, wall)?;
            write_section(path, section, &col.render(metric, &exact, &full, running))
        })?;
        let wall = format!("{:.0} s", t0.elapsed().as_secs_f64());
        print!(
            "{}",
            column(&table, Some(wall))?.render(metric, &exact, &full, None)
        );
    }
    Ok(())
}

/// One long column to run: part, section, metric, steps, task and settings line.
type Job<'a> = (&'a str, &'a str, Metric, usize, Box<dyn Task>, String);

/// The text between the `name` section's markers in `path`.
fn read_section(path: &str, name: &str) -> Result<String> {
    let (begin, end) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let doc = std::fs::read_to_string(path)?;
    match (doc.find(&begin), doc.find(&end)) {
        (Some(i), Some(j)) if i + begin.len() <= j => {
            Ok(doc[i + begin.len()..j].trim_start_matches('\n').to_string())
        }
        _ => Err(candle_core::Error::Msg(format!(
            "{path}: missing {begin} / {end} markers"
        ))),
    }
}

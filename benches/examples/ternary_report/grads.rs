//! The real-gradient table of the frontier, generic over the task the micro-batch gradients
//! come from: the digits MLP (the main section) and the char-LM of the accumulated regime
//! (`--long --parts chargrads`, section `ternary-frontier-chargrads`).

use super::*;

/// Micro-batch gradients `(step, k, micro-batches)`: `k` consecutive micro-batches of
/// `train` (k = `train.micro_batches()`) and of each task of `others` (k as given) at every
/// step of `steps` of one exact f32 run of `train` (model and data seed 0, AdamW at `lr`,
/// each step on the exact mean of its micro-batches). Every task must build the same model.
pub(super) fn real_gradients(
    train: &dyn Task,
    others: &[(usize, &dyn Task)],
    lr: f64,
    steps: &[usize],
) -> Result<Vec<(usize, usize, Micro)>> {
    let k = train.micro_batches();
    let (varmap, model) = train.build(0)?;
    let (set, vars) = ParamSet::from_varmap(&varmap)?;
    let params = ParamsAdamW {
        lr,
        ..ParamsAdamW::default()
    };
    let mut opt = AdamW::from_varmap(&varmap, params)?;
    let host = |task: &dyn Task, step: usize, j: usize| -> Result<Vec<Vec<f32>>> {
        let loss = task.micro_loss(model.as_ref(), step, j, 0)?;
        let g = grad_map(&varmap, &loss.backward()?)?;
        Ok(set.to_host_f32(&g)?)
    };
    let mut out = Vec::new();
    let last = steps.iter().copied().max().unwrap_or(0);
    for step in 0..=last {
        let micro: Micro = (0..k)
            .map(|j| host(train, step, j))
            .collect::<Result<_>>()?;
        if steps.contains(&step) {
            for &(kk, t) in others {
                let m = (0..kk).map(|j| host(t, step, j)).collect::<Result<_>>()?;
                out.push((step, kk, m));
            }
            out.push((step, k, micro.clone()));
        }
        let mean = exact_mean(&micro);
        let mut store = candle_core::backprop::GradStore::default();
        for (v, m) in vars.iter().zip(&mean) {
            let m: Vec<f32> = m.iter().map(|&x| x as f32).collect();
            store.insert(
                v.as_tensor(),
                candle_core::Tensor::from_vec(m, v.dims(), v.device())?,
            );
        }
        opt.step(&store)?;
    }
    Ok(out)
}

/// The window sizes of the real-gradient tables.
pub(super) const KS: [usize; 3] = [4, 8, 16];

/// For k = 4, 8, 16: the mean over the gradients of that k in `grads` of [`errors`]
/// `[rel. L2 error, cosine, floor, floor's cosine]`, each over `reps` windows.
pub(super) fn gradient_cells(
    row: Row,
    grads: &[(usize, usize, Micro)],
    reps: u64,
) -> [[f64; 4]; 3] {
    let mut cells = [[0f64; 4]; 3];
    for (ki, k) in KS.into_iter().enumerate() {
        let sel: Vec<_> = grads.iter().filter(|g| g.1 == k).collect();
        for g in &sel {
            let e = errors(row, &g.2, reps);
            for (c, v) in cells[ki].iter_mut().zip(e) {
                *c += v / sel.len() as f64;
            }
        }
    }
    cells
}

/// The real-gradient table (header and one line per row of `rows`): bits held per element,
/// relative L2 error, floor, error / floor and cosine for k = 4, 8, 16.
pub(super) fn gradient_table(rows: &[Row], grads: &[(usize, usize, Micro)], reps: u64) -> String {
    let mut out = String::from(
        "| accumulator | bits held/element (2^20) | rel. L2 k=4 | k=8 | k=16 | floor (one quantization of the mean) k=4 | k=8 | k=16 | error / floor k=4 | k=8 | k=16 | cosine k=4 | k=8 | k=16 |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for &row in rows {
        let cells = gradient_cells(row, grads, reps);
        let f = |i: usize| cells.map(|c| format!("{:.3}", c[i])).join(" | ");
        let ratio = cells
            .map(|c| {
                if matches!(row, Row::Ternary { .. } | Row::Dither { .. }) {
                    format!("{:.2}", c[0] / c[2])
                } else {
                    "—".into()
                }
            })
            .join(" | ");
        out.push_str(&format!(
            "| {} | {:.2} | {} | {} | {ratio} | {} |\n",
            row.label(),
            row.bits(),
            f(0),
            f(2),
            f(1)
        ));
    }
    out
}

/// The char-LM of the accumulated regime (`workload_settings(CharLm, Large)`) with `micro`
/// micro-batches per step and the regime's windows per micro-batch.
fn charlm_task(cfg: CharLmConfig, micro: usize, quick: bool, dev: &Device) -> Result<CharLmTask> {
    let ws = workload_settings(Workload::CharLm, Regime::Large, quick);
    CharLmTask::new(cfg, ws.batch.unwrap_or(8), micro, ws.eval_windows, dev)
}

/// Char-LM micro-batch gradients for k = 4, 8, 16 at `steps` of an exact run of the
/// accumulated regime's task (model `cfg`, 8 micro-batches per step, the regime's learning
/// rate).
pub(super) fn charlm_gradients(
    cfg: CharLmConfig,
    steps: &[usize],
    quick: bool,
    dev: &Device,
) -> Result<Vec<(usize, usize, Micro)>> {
    let ws = workload_settings(Workload::CharLm, Regime::Large, quick);
    let train = charlm_task(cfg, ws.micro, quick, dev)?;
    let t4 = charlm_task(cfg, 4, quick, dev)?;
    let t16 = charlm_task(cfg, 16, quick, dev)?;
    real_gradients(&train, &[(4, &t4), (16, &t16)], ws.lr, steps)
}

/// `--parts chargrads`: the section `ternary-frontier-chargrads`, the real-gradient table of
/// the main section on char-LM micro-batch gradients (steps 0, half and all of the regime's
/// step count, as the digits table takes 0, 300 and 600; 8 windows, `--quick`: step 0 and 2
/// windows). `command` is the command that regenerates it.
pub(super) fn chargrad_section(
    rows: &[Row],
    quick: bool,
    dev: &Device,
    command: &str,
) -> Result<String> {
    let t0 = std::time::Instant::now();
    let ws = workload_settings(Workload::CharLm, Regime::Large, quick);
    let steps: Vec<usize> = if quick {
        vec![0]
    } else {
        vec![0, ws.steps / 2, ws.steps]
    };
    let reps = if quick { 2 } else { 8 };
    let cfg = CharLmConfig::default();
    let grads = charlm_gradients(cfg, &steps, quick, dev)?;
    let task = charlm_task(cfg, ws.micro, quick, dev)?;
    let elements: usize = grads
        .first()
        .map_or(0, |g| g.2[0].iter().map(Vec::len).sum());
    let mut out = format!(
        "Regenerate: `{command}` (all randomness seeded). The real-gradient table of the frontier above on char-LM micro-batch gradients: the model and data of the char-LM column above ({}, {elements} parameters), micro-batches of {} windows; the exact f32 run takes 8 micro-batches per step at the regime's learning rate {:e}, and the k = 4 and 16 windows are that many consecutive micro-batches of the same model at the same step. Same rows, floor and decode as the digits table; the floor is one stochastic quantization of the exact mean with the row's trits, blocks and scales.\n",
        task.name(),
        task.batch(),
        ws.lr
    );
    out.push_str(&format!(
        "\n#### Real char-LM micro-batch gradients ({} windows each), mean over steps {steps:?} of an exact run of {} steps and {reps} windows\n\n",
        task.batch(),
        ws.steps
    ));
    out.push_str(&gradient_table(rows, &grads, reps));
    out.push_str(&format!(
        "\nWall clock of this command: {:.0} s (release; shared 2-core machine unless stated otherwise).\n",
        t0.elapsed().as_secs_f64()
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small char-LM (one block of width 32, context 16) on the regime's micro-batches of 8
    /// windows: its real gradients at steps 0 and 2, 2 windows. What must hold whatever the
    /// numbers: the exact row is exact, more trits err less, the stochastic rows do not beat
    /// the one-quantization floor (docs/ternary.md §6.2), and the table is deterministic.
    #[test]
    fn chargrad_cells_are_ordered_as_derived() {
        let dev = Device::Cpu;
        let cfg = CharLmConfig {
            d_model: 32,
            heads: 2,
            layers: 1,
            context: 16,
            ..CharLmConfig::default()
        };
        let grads = charlm_gradients(cfg, &[0, 2], true, &dev).expect("gradients");
        // 3 k's at 2 steps; every window holds k micro-batches of all parameters.
        assert_eq!(grads.len(), 6);
        for (_, k, m) in &grads {
            assert_eq!(m.len(), *k);
            assert!(m.iter().flatten().flatten().all(|x| x.is_finite()));
        }
        assert_eq!(
            charlm_gradients(cfg, &[0, 2], true, &dev).expect("gradients"),
            grads
        );
        let reps = 2;
        let cells = |row: Row| gradient_cells(row, &grads, reps);
        // f32 sums divided by k against the f64 mean: rounding only (one f32 ulp per add).
        for c in cells(Row::F32) {
            assert!(c[0] < 1e-5 && c[2] < 1e-5 && c[1] > 1.0 - 1e-9, "{c:?}");
        }
        // bf16 sums: 8 mantissa bits, k ≤ 16 adds, so a few 2^-8 at most.
        for c in cells(Row::Bf16) {
            assert!(c[0] < 0.05 && c[1] > 0.99, "{c:?}");
        }
        let schemes: [fn(u8) -> Row; 3] = [
            |trits| Row::Ternary { trits, new: false },
            |trits| Row::Ternary { trits, new: true },
            |trits| Row::Dither { trits },
        ];
        for (si, scheme) in schemes.into_iter().enumerate() {
            let by_trits: Vec<[[f64; 4]; 3]> = [1u8, 2, 3, 5]
                .into_iter()
                .map(|t| cells(scheme(t)))
                .collect();
            for ki in 0..3 {
                // More levels, less error, lower floor and a closer direction: each extra
                // trit divides the level spacing by 3 (by 9 from 3 to 5 trits), so the
                // error falls by about that factor; we require 1.5.
                for w in by_trits.windows(2) {
                    assert!(w[1][ki][0] * 1.5 < w[0][ki][0], "{si} k {ki}: {w:?}");
                    assert!(w[1][ki][1] > w[0][ki][1], "{si} k {ki}: {w:?}");
                    assert!(w[1][ki][2] < w[0][ki][2], "{si} k {ki}: {w:?}");
                }
                // Stochastic rounding holds the mean on the lattice of its block scales: no
                // unbiased lattice-valued estimate of the mean varies less than rounding it
                // once to its two nearest levels, the floor, on a lattice that is on average
                // no finer (§6.2). 10% allowance for 2 windows and scale fluctuations. The
                // dithered decode is off the lattice and has no such bound.
                if si < 2 {
                    for c in &by_trits {
                        assert!(c[ki][0] > 0.9 * c[ki][2], "{si} k {ki}: {c:?}");
                    }
                }
            }
        }
        let rows = Row::all();
        assert_eq!(
            gradient_table(&rows, &grads, reps),
            gradient_table(&rows, &grads, reps)
        );
    }
}

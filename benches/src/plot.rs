//! Loss curves as SVG (plotters).

use std::path::Path;

use plotters::prelude::*;

use crate::compare::Comparison;

/// Which x axis to plot against.
#[derive(Debug, Clone, Copy)]
pub enum Axis {
    /// Training seconds.
    Time,
    /// Optimizer steps.
    Step,
}

/// Writes held-out loss against `axis` for every run of `cmp` to `path` (SVG).
///
/// # Errors
/// Drawing or I/O errors, as text.
pub fn curves(cmp: &Comparison, axis: Axis, path: &Path) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let xs = |p: &crate::harness::Point| match axis {
        Axis::Time => p.secs,
        Axis::Step => p.step as f64,
    };
    let runs = &cmp.runs;
    let xmax = runs
        .iter()
        .flat_map(|r| r.curve.iter().map(xs))
        .fold(0.0, f64::max)
        .max(1e-9);
    let ys: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.curve.iter().skip(1).map(|p| p.loss))
        .filter(|y| y.is_finite())
        .collect();
    let ymin = ys.iter().copied().fold(f64::INFINITY, f64::min);
    let ymax = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !ymin.is_finite() || !ymax.is_finite() {
        return Err("no finite losses to plot".into());
    }
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let xlabel = match axis {
        Axis::Time => "training seconds",
        Axis::Step => "optimizer step",
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: held-out loss", cmp.task), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..xmax, (ymin * 0.95)..(ymax * 1.02))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(xlabel)
        .y_desc("loss")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, r) in runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                r.curve.iter().skip(1).map(|p| (xs(p), p.loss)),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(r.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .draw_series(LineSeries::new(
            [(0.0, cmp.target), (xmax, cmp.target)],
            BLACK.mix(0.4),
        ))
        .map_err(|e| err(&e))?
        .label("target")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.mix(0.4)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

//! Loss curves as SVG (plotters): the whole run on top, and below it a zoom on the band
//! around the target loss, where the comparison is decided.

use std::ops::Range;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::compare::Comparison;
use crate::harness::Point;

/// Which x axis to plot against.
#[derive(Debug, Clone, Copy)]
pub enum Axis {
    /// Training seconds.
    Time,
    /// Optimizer steps.
    Step,
}

/// Half-width of the zoom panel's band, as a fraction of the target: the lower panel shows
/// losses in `[target·(1 − ZOOM_BAND), target·(1 + ZOOM_BAND)]`.
pub const ZOOM_BAND: f64 = 0.05;

/// Writes held-out loss against `axis` for every run of `cmp` to `path` (SVG): the top
/// panel spans every loss; the bottom one zooms on the band [`ZOOM_BAND`] around the target,
/// drawing each curve only where it is inside the band.
///
/// # Errors
/// Drawing or I/O errors, as text; no finite loss to plot.
pub fn curves(cmp: &Comparison, axis: Axis, path: &Path) -> Result<(), String> {
    let xs = move |p: &Point| match axis {
        Axis::Time => p.secs,
        Axis::Step => p.step as f64,
    };
    let xmax = cmp
        .runs
        .iter()
        .flat_map(|r| r.curve.iter().map(xs))
        .fold(0.0, f64::max)
        .max(1e-9);
    let ys: Vec<f64> = cmp
        .runs
        .iter()
        .flat_map(|r| r.curve.iter().skip(1).map(|p| p.loss))
        .filter(|y| y.is_finite())
        .collect();
    let ymin = ys.iter().copied().fold(f64::INFINITY, f64::min);
    let ymax = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !ymin.is_finite() || !ymax.is_finite() {
        return Err("no finite losses to plot".into());
    }
    let xlabel = match axis {
        Axis::Time => "training seconds",
        Axis::Step => "optimizer step",
    };
    let root = SVGBackend::new(path, (900, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(540);
    let full = Panel {
        caption: format!("{}: held-out loss", cmp.task),
        xlabel,
        x: 0.0..xmax,
        y: (ymin * 0.95)..(ymax * 1.02),
        legend: true,
    };
    full.draw(&top, cmp, &xs)?;
    let band = Panel {
        caption: format!(
            "zoom: target {:.4} ± {:.0} % (colours as above)",
            cmp.target,
            ZOOM_BAND * 100.0
        ),
        xlabel,
        x: 0.0..xmax,
        y: (cmp.target * (1.0 - ZOOM_BAND))..(cmp.target * (1.0 + ZOOM_BAND)),
        legend: false,
    };
    band.draw(&bottom, cmp, &xs)?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

/// One chart: its caption, axis label and ranges.
struct Panel {
    caption: String,
    xlabel: &'static str,
    x: Range<f64>,
    y: Range<f64>,
    /// Whether to draw the legend (the top panel only; both panels share the colours).
    legend: bool,
}

impl Panel {
    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        cmp: &Comparison,
        xs: &dyn Fn(&Point) -> f64,
    ) -> Result<(), String> {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        let mut chart = ChartBuilder::on(area)
            .caption(&self.caption, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(self.x.clone(), self.y.clone())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(self.xlabel)
            .y_desc("loss")
            .draw()
            .map_err(|e| err(&e))?;
        for (i, r) in cmp.runs.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let points: Vec<(f64, f64)> = r.curve.iter().skip(1).map(|p| (xs(p), p.loss)).collect();
            let mut labelled = false;
            for segment in inside(&points, &self.y) {
                let series = chart
                    .draw_series(LineSeries::new(segment, color.stroke_width(2)))
                    .map_err(|e| err(&e))?;
                if !labelled {
                    series
                        .label(r.name.clone())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
                    labelled = true;
                }
            }
        }
        chart
            .draw_series(LineSeries::new(
                [(self.x.start, cmp.target), (self.x.end, cmp.target)],
                BLACK.mix(0.4),
            ))
            .map_err(|e| err(&e))?
            .label("target")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.mix(0.4)));
        if self.legend {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(&e))?;
        }
        Ok(())
    }
}

/// The maximal runs of consecutive points whose loss lies in `band` (non-finite losses end
/// a run), so that a zoomed panel never draws outside its plotting area.
fn inside(points: &[(f64, f64)], band: &Range<f64>) -> Vec<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    for &(x, y) in points {
        if y.is_finite() && band.start <= y && y <= band.end {
            current.push((x, y));
        } else if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::inside;

    #[test]
    fn zoom_keeps_only_the_runs_inside_the_band() {
        let pts = [
            (0.0, 2.0),
            (1.0, 1.04),
            (2.0, 1.0),
            (3.0, f64::NAN),
            (4.0, 0.97),
            (5.0, 0.5),
            (6.0, 0.99),
        ];
        let band = 0.95..1.05;
        assert_eq!(
            inside(&pts, &band),
            vec![
                vec![(1.0, 1.04), (2.0, 1.0)],
                vec![(4.0, 0.97)],
                vec![(6.0, 0.99)]
            ]
        );
        assert!(inside(&pts[..1], &band).is_empty());
    }
}

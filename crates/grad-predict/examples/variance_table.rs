//! Prints the extrapolation variance factor Var[ĝ(T+h)]/σ² quoted in docs/grad-predict.md.
//!
//! `cargo run -p grad-predict --example variance_table`
use grad_predict::extrapolation_variance_factor;

fn main() {
    let hs = [0.0, 1.0, 2.0, 5.0, 10.0, 20.0];
    print!("| history | decay |");
    for h in hs {
        print!(" h={h} |");
    }
    println!();
    println!("|---|---|{}", "---|".repeat(hs.len()));
    let rows: [(Option<usize>, f64); 10] = [
        (Some(4), 1.0),
        (Some(8), 1.0),
        (Some(8), 0.95),
        (Some(16), 0.95),
        (None, 0.5),
        (None, 0.8),
        (None, 0.9),
        (None, 0.95),
        (None, 0.99),
        (Some(1), 0.95),
    ];
    for (w, d) in rows {
        let name = match w {
            Some(1) => "Window(1) = LastGradient".to_string(),
            Some(w) => format!("Window({w})"),
            None => "Streaming".to_string(),
        };
        print!("| {name} | {d} |");
        for h in hs {
            print!(" {:.3} |", extrapolation_variance_factor(d, w, h));
        }
        println!();
    }
}

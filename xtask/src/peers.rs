//! `cargo xtask bench --peers`: the side-by-side with vsa-optim-rs 0.1.1 (the `peers/`
//! workspace, excluded from the main one). Builds and runs it in release mode with its own
//! committed `Cargo.lock` (`--locked`), then writes its section into `docs/benchmarks.md`
//! between the `peers` markers: replaced where present, appended otherwise; every other byte
//! of the file stays as it was.

use std::path::Path;
use std::process::Command;

/// The section's first line (the peers binary writes the same).
pub const BEGIN: &str = "<!-- peers:begin (cargo xtask bench --peers) -->";
/// The section's last line.
pub const END: &str = "<!-- peers:end -->";

/// Runs the peers binary (extra `args` are passed on, e.g. `--reps 7`) and writes its
/// section into `docs/benchmarks.md`.
pub fn peers(root: &Path, mut cargo: Command, args: &[String]) -> Result<(), String> {
    let out = root.join("target").join("peers-section.md");
    std::fs::create_dir_all(root.join("target")).map_err(|e| e.to_string())?;
    cargo.args([
        "run",
        "--release",
        "--locked",
        "--manifest-path",
        "peers/Cargo.toml",
        "--",
        "--out",
    ]);
    cargo.arg(&out).args(args);
    crate::run(cargo)?;
    let section =
        std::fs::read_to_string(&out).map_err(|e| format!("reading {}: {e}", out.display()))?;
    let path = root.join("docs").join("benchmarks.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Measured results\n".into());
    std::fs::write(&path, splice(&doc, &section)?).map_err(|e| e.to_string())?;
    println!("wrote {}", path.display());
    Ok(())
}

/// `doc` with its peers section replaced by `section` (which must itself start with
/// [`BEGIN`] and end with [`END`]), or with `section` appended after one blank line when
/// `doc` has none. Nothing outside the section changes.
pub fn splice(doc: &str, section: &str) -> Result<String, String> {
    let section = section.trim_end();
    if !section.starts_with(BEGIN) || !section.ends_with(END) {
        return Err("the peers binary's output is not one marked section".into());
    }
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(a), Some(b)) if b > a => {
            Ok(format!("{}{}{}", &doc[..a], section, &doc[b + END.len()..]))
        }
        (None, None) => {
            let sep = if doc.ends_with("\n\n") || doc.is_empty() {
                ""
            } else if doc.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            Ok(format!("{doc}{sep}{section}\n"))
        }
        _ => Err("docs/benchmarks.md has an unmatched peers marker; fix it by hand".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(body: &str) -> String {
        format!("{BEGIN}\n{body}\n{END}\n")
    }

    #[test]
    fn replaces_the_section_and_keeps_every_other_byte() {
        let before =
            "# Measured\n\nkernels\n<!-- mpi:begin (cargo xtask mpi) -->\nM\n<!-- mpi:end -->\n\n";
        let after = "\ntail text\n";
        let doc = format!("{before}{BEGIN}\nold numbers\n{END}{after}");
        let new = splice(&doc, &section("new numbers")).unwrap();
        assert_eq!(new, format!("{before}{BEGIN}\nnew numbers\n{END}{after}"));
        // Idempotent: splicing the same section again changes nothing.
        assert_eq!(splice(&new, &section("new numbers")).unwrap(), new);
    }

    #[test]
    fn appends_when_absent() {
        let doc = "# Measured\n\ntext\n";
        let new = splice(doc, &section("n")).unwrap();
        assert_eq!(new, format!("{doc}\n{BEGIN}\nn\n{END}\n"));
        assert!(new.starts_with(doc));
    }

    #[test]
    fn rejects_unmarked_output_and_a_broken_document() {
        assert!(splice("doc\n", "no markers").is_err());
        let broken = format!("doc\n{BEGIN}\nno end\n");
        assert!(splice(&broken, &section("n")).is_err());
        let reversed = format!("doc\n{END}\n{BEGIN}\n");
        assert!(splice(&reversed, &section("n")).is_err());
    }
}

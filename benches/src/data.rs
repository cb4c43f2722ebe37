//! The two real data sets shipped in `data/` (see `data/README.md` for provenance and
//! licenses): handwritten digits and Shakespeare text.

use std::io::Read;
use std::path::PathBuf;

use thiserror::Error;

/// Data loading errors.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file's content is not what the loader expects.
    #[error("parsing {path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// The project's `data/` directory (found from this crate's manifest directory).
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("data")
}

fn read_gz(name: &str) -> Result<Vec<u8>, DataError> {
    let path = data_dir().join(name);
    let shown = path.display().to_string();
    let f = std::fs::File::open(&path).map_err(|source| DataError::Io {
        path: shown.clone(),
        source,
    })?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut out)
        .map_err(|source| DataError::Io {
            path: shown,
            source,
        })?;
    Ok(out)
}

/// The digits set: 1797 rows of 64 pixels (scaled to `[0, 1]`) and a label `0..10`.
#[derive(Debug, Clone)]
pub struct Digits {
    /// Row-major features, `rows × 64`.
    pub features: Vec<f32>,
    /// Labels.
    pub labels: Vec<u32>,
}

impl Digits {
    /// Rows in the standard training split (the first 1500 in file order).
    pub const TRAIN_ROWS: usize = 1500;

    /// Loads `data/digits.csv.gz`.
    ///
    /// # Errors
    /// [`DataError`] when the file is missing or malformed.
    pub fn load() -> Result<Self, DataError> {
        let raw = read_gz("digits.csv.gz")?;
        let text = String::from_utf8(raw).map_err(|e| DataError::Parse {
            path: "digits.csv.gz".into(),
            reason: e.to_string(),
        })?;
        let mut features = Vec::new();
        let mut labels = Vec::new();
        for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let vals: Vec<&str> = line.split(',').collect();
            let bad = |reason: String| DataError::Parse {
                path: "digits.csv.gz".into(),
                reason: format!("row {i}: {reason}"),
            };
            if vals.len() != 65 {
                return Err(bad(format!("expected 65 fields, got {}", vals.len())));
            }
            for v in &vals[..64] {
                let x: f32 = v.trim().parse().map_err(|e| bad(format!("{e}")))?;
                features.push(x / 16.0);
            }
            let y: u32 = vals[64].trim().parse().map_err(|e| bad(format!("{e}")))?;
            if y > 9 {
                return Err(bad(format!("label {y} out of range")));
            }
            labels.push(y);
        }
        Ok(Self { features, labels })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.labels.len()
    }
}

/// The Shakespeare corpus as character ids, with its 67-character vocabulary.
#[derive(Debug, Clone)]
pub struct Shakespeare {
    /// Sorted distinct characters.
    pub vocab: Vec<char>,
    /// The text as ids into `vocab`.
    pub ids: Vec<u32>,
}

impl Shakespeare {
    /// Loads `data/shakespeare.txt.gz`.
    ///
    /// # Errors
    /// [`DataError`] when the file is missing or not UTF-8.
    pub fn load() -> Result<Self, DataError> {
        let raw = read_gz("shakespeare.txt.gz")?;
        let text = String::from_utf8(raw).map_err(|e| DataError::Parse {
            path: "shakespeare.txt.gz".into(),
            reason: e.to_string(),
        })?;
        let mut vocab: Vec<char> = text.chars().collect();
        vocab.sort_unstable();
        vocab.dedup();
        let ids = text
            .chars()
            .map(|c| vocab.binary_search(&c).map(|i| i as u32).unwrap_or(0))
            .collect();
        Ok(Self { vocab, ids })
    }

    /// The split point: the first 90% of characters train, the rest validate.
    pub fn split(&self) -> usize {
        self.ids.len() * 9 / 10
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_shape_and_classes() {
        let d = Digits::load().unwrap();
        assert_eq!(d.rows(), 1797);
        assert_eq!(d.features.len(), 1797 * 64);
        let mut counts = [0usize; 10];
        for &y in &d.labels {
            counts[y as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (174..=183).contains(&c)),
            "{counts:?}"
        );
        assert!(d.features.iter().all(|&x| (0.0..=1.0).contains(&x)));
    }

    #[test]
    fn shakespeare_vocab() {
        let s = Shakespeare::load().unwrap();
        assert_eq!(s.vocab.len(), 67);
        assert!(s.ids.len() > 1_600_000);
    }
}

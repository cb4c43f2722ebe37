//! The [`Compressor`](super::Compressor)'s message and its little-endian byte format.

use super::packed::{self, PackedValues};
use crate::bytes::{Reader, put_f32s, put_u32};
use crate::error::{Result, invalid};

/// One parameter's part of a [`Message`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Part {
    /// Every element (warm-up steps, small parameters of PowerSGD).
    Dense(Vec<f32>),
    /// Values whose positions both sides derive from the keys: the count sketch table
    /// (`rows × width`, row-major) or the random-k selection in index order.
    Values(Vec<f32>),
    /// Top-k: strictly increasing indices and their values.
    Sparse {
        /// Element indices, strictly increasing.
        indices: Vec<u32>,
        /// The values at those indices.
        values: Vec<f32>,
    },
    /// PowerSGD factors: `P` (`a × r`, orthonormal columns) and `Q` (`b × r`), row-major.
    LowRank {
        /// `P`, `a·r` values.
        p: Vec<f32>,
        /// `Q`, `b·r` values.
        q: Vec<f32>,
    },
    /// Packed top-k ([`Method::TopKPacked`](super::Method::TopKPacked)): strictly
    /// increasing indices (sent as Rice-coded gaps) and their coded values.
    PackedSparse {
        /// Element indices, strictly increasing.
        indices: Vec<u32>,
        /// The values at those indices.
        values: PackedValues,
    },
    /// Packed random-k ([`Method::RandomKPacked`](super::Method::RandomKPacked)): the
    /// coded values of the keyed selection, in index order.
    PackedValues(PackedValues),
}

impl Part {
    fn code(&self) -> u8 {
        match self {
            Self::Dense(_) => 0,
            Self::Values(_) => 1,
            Self::Sparse { .. } => 2,
            Self::LowRank { .. } => 3,
            Self::PackedSparse { .. } => 4,
            Self::PackedValues(_) => 5,
        }
    }

    /// Bytes of this part on the wire.
    pub fn byte_len(&self) -> usize {
        1 + match self {
            Self::Dense(v) | Self::Values(v) => 4 + 4 * v.len(),
            Self::Sparse { indices, values } => 4 + 4 * indices.len() + 4 * values.len(),
            Self::LowRank { p, q } => 8 + 4 * (p.len() + q.len()),
            Self::PackedSparse { indices, values } => packed::sparse_byte_len(indices, values),
            Self::PackedValues(v) => packed::values_byte_len(v),
        }
    }

    pub(crate) fn all_finite(&self) -> bool {
        let fin = |v: &[f32]| v.iter().all(|x| x.is_finite());
        match self {
            Self::Dense(v) | Self::Values(v) => fin(v),
            Self::Sparse { values, .. } => fin(values),
            Self::LowRank { p, q } => fin(p) && fin(q),
            Self::PackedSparse { values, .. } | Self::PackedValues(values) => values.all_finite(),
        }
    }
}

/// A compressed gradient set of a [`Compressor`](super::Compressor), in sorted
/// parameter-name order.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Message {
    /// Hash of the config (method and its parameters, seed, error feedback, warm-up) and
    /// the parameter names and shapes; checked by the decoder.
    pub fingerprint: u64,
    /// The method's wire code ([`Method::code`](super::Method::code)).
    pub method: u8,
    /// The compressor's call counter when this message was made: keys the randomness.
    pub step: u64,
    /// Total gradient elements.
    pub elements: u64,
    /// One part per parameter.
    pub parts: Vec<Part>,
}

const MAGIC: &[u8; 4] = b"GSKM";
const VERSION: u8 = 1;
/// Header bytes: magic 4, version 1, method 1, reserved 2, fingerprint 8, step 8,
/// elements 8, part count 4.
pub const MESSAGE_HEADER_BYTES: usize = 36;

fn put_len(out: &mut Vec<u8>, n: usize) -> Result<()> {
    put_u32(out, n, "length")
}

impl Message {
    /// Bytes of [`to_bytes`](Self::to_bytes).
    pub fn byte_len(&self) -> usize {
        MESSAGE_HEADER_BYTES + self.parts.iter().map(Part::byte_len).sum::<usize>()
    }

    /// The little-endian layout: the header (magic `b"GSKM"`, version 1, method code,
    /// 2 reserved zero bytes, fingerprint u64, step u64, elements u64, part count u32), then
    /// per part a kind byte (0 dense, 1 values, 2 sparse, 3 low rank, 4 packed sparse,
    /// 5 packed values) and: dense/values → `u32` length and the f32 values; sparse →
    /// `u32 k`, `k` u32 indices, `k` f32 values; low rank → `u32 |P|`, `u32 |Q|`, the values
    /// of `P` then `Q`; packed sparse → `u32 k`, the value coding byte (0 f32, 1 bf16,
    /// 2 sign), the Rice parameter byte `r`, `u32 L`, `L` bytes of Rice-coded index gaps
    /// (LSB first, zero-padded), then the values; packed values → `u32 n`, the coding byte,
    /// the values. Coded values: f32 → 4 bytes each; bf16 → 2 bytes each; sign → an f32
    /// scale and `⌈n/8⌉` bytes of sign bits (bit `i % 8` of byte `i / 8`, 1 = negative,
    /// padding zero).
    ///
    /// # Errors
    /// [`Error::InvalidCompressed`](crate::Error::InvalidCompressed) for a length above
    /// `u32::MAX` or sparse indices and values of different lengths.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.byte_len());
        self.write_bytes(&mut out)?;
        Ok(out)
    }

    /// Appends [`to_bytes`](Self::to_bytes)' layout to `out`; on error `out` is unchanged.
    ///
    /// # Errors
    /// As [`Self::to_bytes`].
    pub fn write_bytes(&self, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        let r = self.write_unchecked(out);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    fn write_unchecked(&self, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[VERSION, self.method, 0, 0]);
        out.extend_from_slice(&self.fingerprint.to_le_bytes());
        out.extend_from_slice(&self.step.to_le_bytes());
        out.extend_from_slice(&self.elements.to_le_bytes());
        put_len(out, self.parts.len())?;
        for p in &self.parts {
            out.push(p.code());
            match p {
                Part::Dense(v) | Part::Values(v) => {
                    put_len(out, v.len())?;
                    put_f32s(out, v);
                }
                Part::Sparse { indices, values } => {
                    if indices.len() != values.len() {
                        return Err(invalid(format!(
                            "sparse part: {} indices but {} values",
                            indices.len(),
                            values.len()
                        )));
                    }
                    put_len(out, indices.len())?;
                    out.extend(indices.iter().flat_map(|i| i.to_le_bytes()));
                    put_f32s(out, values);
                }
                Part::LowRank { p, q } => {
                    put_len(out, p.len())?;
                    put_len(out, q.len())?;
                    put_f32s(out, p);
                    put_f32s(out, q);
                }
                Part::PackedSparse { indices, values } => {
                    packed::write_sparse(out, indices, values)?;
                }
                Part::PackedValues(v) => packed::write_values(out, v)?,
            }
        }
        Ok(())
    }

    /// Parses [`to_bytes`](Self::to_bytes)' layout: magic, version, reserved bytes, part
    /// kinds, lengths (no trailing bytes) and finite values. Whether the message fits a
    /// compressor (fingerprint, sizes, indices) is checked by its `decompress`.
    ///
    /// # Errors
    /// [`Error::InvalidCompressed`](crate::Error::InvalidCompressed) naming the field.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let head = r.header(MAGIC)?;
        if head[0] != VERSION || head[2] != 0 || head[3] != 0 {
            return Err(invalid(format!(
                "version/reserved: expected {VERSION}/0/0, got {}/{}/{}",
                head[0], head[2], head[3]
            )));
        }
        let method = head[1];
        let fingerprint = r.u64("fingerprint")?;
        let step = r.u64("step")?;
        let elements = r.u64("elements")?;
        let count = r.len("part count")?;
        let mut parts = Vec::with_capacity(count.min(bytes.len() / 5));
        for i in 0..count {
            let kind = r.take(1, "part kind")?[0];
            let who = format!("part {i}");
            let part = match kind {
                0 | 1 => {
                    let n = r.len(&who)?;
                    let v = r.finite_f32s(n, &who)?;
                    if kind == 0 {
                        Part::Dense(v)
                    } else {
                        Part::Values(v)
                    }
                }
                2 => {
                    let k = r.len(&who)?;
                    let indices = r.u32s(k, &who)?;
                    let values = r.finite_f32s(k, &who)?;
                    Part::Sparse { indices, values }
                }
                3 => {
                    let np = r.len(&who)?;
                    let nq = r.len(&who)?;
                    let p = r.finite_f32s(np, &who)?;
                    let q = r.finite_f32s(nq, &who)?;
                    Part::LowRank { p, q }
                }
                4 => {
                    let (indices, values) = packed::read_sparse(&mut r, &who)?;
                    Part::PackedSparse { indices, values }
                }
                5 => Part::PackedValues(packed::read_values(&mut r, &who)?),
                k => return Err(invalid(format!("{who}: kind {k} is unknown"))),
            };
            parts.push(part);
        }
        r.finish("part")?;
        Ok(Self {
            fingerprint,
            method,
            step,
            elements,
            parts,
        })
    }
}

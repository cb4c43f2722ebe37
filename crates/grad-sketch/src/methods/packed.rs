//! The compact wire of [`Method::TopKPacked`](super::Method::TopKPacked) and
//! [`Method::RandomKPacked`](super::Method::RandomKPacked): sorted indices as Rice-coded
//! gaps, and values as f32, bf16 or one sign bit each with one scale per part.
//!
//! # Bytes per kept coordinate
//!
//! Top-k sends `k` strictly increasing indices `j₁ < j₂ < …` of a parameter of `n`
//! elements. The gaps `g_i = j_i − j_{i−1} − 1` (with `j₀ = −1`) are non-negative and sum to
//! at most `n − k`. A Rice code with parameter `r` writes `g` as `⌊g/2ʳ⌋` one-bits, a zero
//! bit, and the `r` low bits of `g`: `⌊g/2ʳ⌋ + 1 + r` bits. The encoder picks the `r` in
//! `0..=31` with the fewest bits for the part (ties to the smaller `r`), so the index
//! stream is never longer than that of any fixed `r`. With density `p = k/n` and
//! `2ʳ ≤ 1/p`, the total is at most `k(1 + r) + (n − k)/2ʳ` bits: choosing `r = ⌊log₂(1/p)⌋`
//! bounds it by `k(r + 3)` bits, i.e. **at most `log₂(1/p) + 3` bits per index** whatever
//! the positions (about `log₂(1/p) + 2` when the gaps are geometric). At `p = 1%` that is
//! ≤ 9.6 bits against the 32 of a `u32` index.
//!
//! Values: [`ValueCoding::F32`] 32 bits, [`ValueCoding::Bf16`] 16 bits (round to nearest
//! even), [`ValueCoding::Sign`] 1 bit plus one f32 scale per part: the decoded value is
//! `±s` with `s` the mean `|v|` of the kept values (the `s` that minimises
//! `Σ(v_i − s·sign v_i)²`). What the coding loses stays in the error-feedback residual,
//! as in 1-bit Adam and signSGD with error feedback (Karimireddy et al. 2019).
//!
//! So top-k with sign values costs about `(log₂(1/p) + 3)/8` bytes per kept coordinate
//! (≈ 1.2 bytes at `p = 1%`) instead of 8, plus 11 bytes per part. Random-k sends no
//! indices: with sign values, 1 bit per kept coordinate plus 4 bytes of scale per part.

use crate::bytes::{Reader, put_f32s, put_u32};
use crate::error::{Result, invalid};

/// How the values of a packed part are coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ValueCoding {
    /// 4 bytes per value, exact.
    F32,
    /// 2 bytes per value: bfloat16, rounded to nearest even.
    Bf16,
    /// 1 bit per value (its sign) plus one f32 scale per part: every value decodes to
    /// `±scale`, `scale` = the mean `|v|` of the part's kept values.
    Sign,
}

impl ValueCoding {
    /// The wire code (0 f32, 1 bf16, 2 sign).
    pub fn code(self) -> u8 {
        match self {
            Self::F32 => 0,
            Self::Bf16 => 1,
            Self::Sign => 2,
        }
    }

    fn from_code(c: u8, who: &str) -> Result<Self> {
        match c {
            0 => Ok(Self::F32),
            1 => Ok(Self::Bf16),
            2 => Ok(Self::Sign),
            c => Err(invalid(format!("{who}: value coding {c} is unknown"))),
        }
    }

    /// A short label (`f32`, `bf16`, `sign·scale`).
    pub fn label(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::Sign => "sign·scale",
        }
    }
}

/// The values of a packed part.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PackedValues {
    /// The values as they are.
    F32(Vec<f32>),
    /// bfloat16 bit patterns (the high half of an f32).
    Bf16(Vec<u16>),
    /// One scale and one sign per value: value `i` is `-scale` when `negative[i]`, else
    /// `scale`.
    Sign {
        /// The magnitude of every value.
        scale: f32,
        /// Whether value `i` is negative.
        negative: Vec<bool>,
    },
}

/// `x` rounded to the nearest bfloat16 (ties to even); a finite `x` past bf16's range
/// becomes ±∞ (then refused as non-finite).
pub(crate) fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 of a bfloat16 bit pattern.
pub(crate) fn from_bf16(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

impl PackedValues {
    /// Codes `values` (finite) with `coding`.
    pub fn encode(coding: ValueCoding, values: &[f32]) -> Self {
        match coding {
            ValueCoding::F32 => Self::F32(values.to_vec()),
            ValueCoding::Bf16 => Self::Bf16(values.iter().map(|&x| to_bf16(x)).collect()),
            ValueCoding::Sign => {
                let sum: f64 = values.iter().map(|x| f64::from(x.abs())).sum();
                let scale = if values.is_empty() {
                    0.0
                } else {
                    (sum / values.len() as f64) as f32
                };
                Self::Sign {
                    scale,
                    negative: values.iter().map(|&x| x < 0.0).collect(),
                }
            }
        }
    }

    /// The coding.
    pub fn coding(&self) -> ValueCoding {
        match self {
            Self::F32(_) => ValueCoding::F32,
            Self::Bf16(_) => ValueCoding::Bf16,
            Self::Sign { .. } => ValueCoding::Sign,
        }
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::Bf16(v) => v.len(),
            Self::Sign { negative, .. } => negative.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i` as f32 (`i < len()`).
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Self::F32(v) => v[i],
            Self::Bf16(v) => from_bf16(v[i]),
            Self::Sign { scale, negative } => {
                if negative[i] {
                    -*scale
                } else {
                    *scale
                }
            }
        }
    }

    /// Every value decodes to a finite f32.
    pub(crate) fn all_finite(&self) -> bool {
        match self {
            Self::F32(v) => v.iter().all(|x| x.is_finite()),
            Self::Bf16(v) => v.iter().all(|&h| from_bf16(h).is_finite()),
            Self::Sign { scale, .. } => scale.is_finite(),
        }
    }

    /// Bytes of the values on the wire (after the coding byte).
    pub(crate) fn byte_len(&self) -> usize {
        match self {
            Self::F32(v) => 4 * v.len(),
            Self::Bf16(v) => 2 * v.len(),
            Self::Sign { negative, .. } => 4 + negative.len().div_ceil(8),
        }
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        match self {
            Self::F32(v) => put_f32s(out, v),
            Self::Bf16(v) => out.extend(v.iter().flat_map(|h| h.to_le_bytes())),
            Self::Sign { scale, negative } => {
                out.extend_from_slice(&scale.to_le_bytes());
                for chunk in negative.chunks(8) {
                    let byte = chunk
                        .iter()
                        .enumerate()
                        .fold(0u8, |b, (i, &neg)| b | (u8::from(neg) << i));
                    out.push(byte);
                }
            }
        }
    }

    /// Reads `n` values coded `coding`; every value finite, sign padding bits zero.
    pub(crate) fn read(
        r: &mut Reader<'_>,
        coding: ValueCoding,
        n: usize,
        who: &str,
    ) -> Result<Self> {
        let v = match coding {
            ValueCoding::F32 => Self::F32(r.finite_f32s(n, who)?),
            ValueCoding::Bf16 => {
                let len = n
                    .checked_mul(2)
                    .ok_or_else(|| invalid(format!("{who}: length overflow")))?;
                let b = r.take(len, who)?;
                Self::Bf16(
                    b.chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .collect(),
                )
            }
            ValueCoding::Sign => {
                let scale = r.finite_f32s(1, who)?[0];
                let b = r.take(n.div_ceil(8), who)?;
                if !n.is_multiple_of(8) && b.last().is_some_and(|&x| x >> (n % 8) != 0) {
                    return Err(invalid(format!("{who}: sign padding bits are not zero")));
                }
                let negative = (0..n).map(|i| b[i / 8] >> (i % 8) & 1 == 1).collect();
                Self::Sign { scale, negative }
            }
        };
        if !v.all_finite() {
            return Err(invalid(format!("{who}: a value is not finite")));
        }
        Ok(v)
    }
}

/// The gaps of strictly increasing `indices`: `j_i − j_{i−1} − 1`, `j₀ = −1`.
fn gaps(indices: &[u32]) -> impl Iterator<Item = u64> + '_ {
    let mut prev: i64 = -1;
    indices.iter().map(move |&j| {
        let g = (i64::from(j) - prev - 1).max(0) as u64;
        prev = i64::from(j);
        g
    })
}

/// The Rice parameter with the fewest bits for `indices` (ties to the smaller), and that
/// number of bits.
pub(crate) fn rice_plan(indices: &[u32]) -> (u8, u64) {
    let mut best = (0u8, u64::MAX);
    for r in 0..32u8 {
        let bits: u64 = gaps(indices).map(|g| (g >> r) + 1 + u64::from(r)).sum();
        if bits < best.1 {
            best = (r, bits);
        }
    }
    best
}

/// Writes the Rice code of the gaps of `indices` with parameter `r` (`bits` from
/// [`rice_plan`]), LSB first, padded with zero bits to a whole byte.
pub(crate) fn write_rice(out: &mut Vec<u8>, indices: &[u32], r: u8, bits: u64) {
    let start = out.len();
    out.resize(start + bits.div_ceil(8) as usize, 0);
    let buf = &mut out[start..];
    let mut pos = 0usize;
    let mut put = |bit: bool| {
        if bit {
            buf[pos / 8] |= 1 << (pos % 8);
        }
        pos += 1;
    };
    for g in gaps(indices) {
        for _ in 0..(g >> r) {
            put(true);
        }
        put(false);
        for b in 0..r {
            put((g >> b) & 1 == 1);
        }
    }
}

/// Reads `k` Rice-coded gaps with parameter `r` from exactly `stream` (no bytes left over,
/// padding bits zero) and returns the indices (strictly increasing, each ≤ `u32::MAX`).
pub(crate) fn read_rice(stream: &[u8], k: usize, r: u8, who: &str) -> Result<Vec<u32>> {
    if r > 31 {
        return Err(invalid(format!("{who}: Rice parameter {r} is above 31")));
    }
    let total = stream.len() * 8;
    let bit = |pos: usize| stream[pos / 8] >> (pos % 8) & 1 == 1;
    let short = || invalid(format!("{who}: the index stream ends before {k} indices"));
    // Every gap takes at least one bit, so `total` bounds `k` before anything is allocated.
    if k > total {
        return Err(short());
    }
    let mut indices = Vec::with_capacity(k);
    let (mut pos, mut next) = (0usize, 0u64);
    for _ in 0..k {
        let mut q = 0u64;
        loop {
            if pos >= total {
                return Err(short());
            }
            pos += 1;
            if !bit(pos - 1) {
                break;
            }
            q += 1;
        }
        if pos + r as usize > total {
            return Err(short());
        }
        let mut low = 0u64;
        for b in 0..r {
            low |= u64::from(bit(pos)) << b;
            pos += 1;
        }
        let j = next + (q << r) + low;
        let j = u32::try_from(j)
            .map_err(|_| invalid(format!("{who}: an index is above {}", u32::MAX)))?;
        indices.push(j);
        next = u64::from(j) + 1;
    }
    if total - pos >= 8 || (pos..total).any(bit) {
        return Err(invalid(format!(
            "{who}: the index stream has {} bits after its {k} indices",
            total - pos
        )));
    }
    Ok(indices)
}

/// Bytes of a packed sparse part after its kind byte: `u32 k`, coding, Rice parameter,
/// `u32` stream length, the stream, the values.
pub(crate) fn sparse_byte_len(indices: &[u32], values: &PackedValues) -> usize {
    let (_, bits) = rice_plan(indices);
    4 + 1 + 1 + 4 + bits.div_ceil(8) as usize + values.byte_len()
}

/// Writes a packed sparse part's body (see [`sparse_byte_len`]).
pub(crate) fn write_sparse(
    out: &mut Vec<u8>,
    indices: &[u32],
    values: &PackedValues,
) -> Result<()> {
    if indices.len() != values.len() {
        return Err(invalid(format!(
            "packed sparse part: {} indices but {} values",
            indices.len(),
            values.len()
        )));
    }
    if indices.windows(2).any(|w| w[0] >= w[1]) {
        return Err(invalid(
            "packed sparse part: indices are not strictly increasing",
        ));
    }
    let (r, bits) = rice_plan(indices);
    put_u32(out, indices.len(), "length")?;
    out.push(values.coding().code());
    out.push(r);
    put_u32(out, bits.div_ceil(8) as usize, "index stream length")?;
    write_rice(out, indices, r, bits);
    values.write(out);
    Ok(())
}

/// Reads a packed sparse part's body.
pub(crate) fn read_sparse(r: &mut Reader<'_>, who: &str) -> Result<(Vec<u32>, PackedValues)> {
    let k = r.len(who)?;
    let head = r.take(2, who)?;
    let (coding, rice) = (ValueCoding::from_code(head[0], who)?, head[1]);
    let len = r.len(who)?;
    let stream = r.take(len, who)?;
    let indices = read_rice(stream, k, rice, who)?;
    // The encoder writes the shortest stream of its parameter: refuse any other length, so
    // that a message has one byte form.
    let (best, bits) = rice_plan(&indices);
    if best != rice || bits.div_ceil(8) as usize != len {
        return Err(invalid(format!(
            "{who}: the index stream is not the canonical Rice code of its indices"
        )));
    }
    let values = PackedValues::read(r, coding, k, who)?;
    Ok((indices, values))
}

/// Bytes of a packed values part after its kind byte: `u32 n`, coding, the values.
pub(crate) fn values_byte_len(values: &PackedValues) -> usize {
    4 + 1 + values.byte_len()
}

/// Writes a packed values part's body.
pub(crate) fn write_values(out: &mut Vec<u8>, values: &PackedValues) -> Result<()> {
    put_u32(out, values.len(), "length")?;
    out.push(values.coding().code());
    values.write(out);
    Ok(())
}

/// Reads a packed values part's body.
pub(crate) fn read_values(r: &mut Reader<'_>, who: &str) -> Result<PackedValues> {
    let n = r.len(who)?;
    let coding = ValueCoding::from_code(r.take(1, who)?[0], who)?;
    PackedValues::read(r, coding, n, who)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rice_round_trips_and_is_short() {
        let cases: Vec<Vec<u32>> = vec![
            vec![],
            vec![0],
            vec![0, 1, 2, 3],
            vec![5, 900, 901, 70_000, u32::MAX],
            (0..1000u32).map(|i| i * 97 + (i * i) % 13).collect(),
        ];
        for idx in cases {
            let (r, bits) = rice_plan(&idx);
            let mut out = Vec::new();
            write_rice(&mut out, &idx, r, bits);
            assert_eq!(out.len() as u64, bits.div_ceil(8));
            assert_eq!(read_rice(&out, idx.len(), r, "t").unwrap(), idx);
            if !idx.is_empty() {
                let mut long = out.clone();
                long.push(0);
                assert!(read_rice(&long, idx.len(), r, "t").is_err());
            }
        }
        // 1000 indices with gaps ≈ 97 (p ≈ 1%): at most log₂(1/p) + 3 bits each.
        let idx: Vec<u32> = (0..1000u32).map(|i| i * 97 + (i * i) % 13).collect();
        let (_, bits) = rice_plan(&idx);
        let bound = 1000.0 * ((97.0f64).log2() + 3.0);
        assert!((bits as f64) <= bound, "{bits} > {bound}");
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(from_bf16(to_bf16(1.0)), 1.0);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        // 1 + 2⁻⁸ is halfway between bf16 1 and 1 + 2⁻⁷: ties to even (1).
        assert_eq!(from_bf16(to_bf16(1.0 + 1.0 / 256.0)), 1.0);
        assert_eq!(from_bf16(to_bf16(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0);
        assert!(from_bf16(to_bf16(f32::MAX)).is_infinite());
        let x = 0.123_456_f32;
        assert!((from_bf16(to_bf16(x)) - x).abs() <= x * 2f32.powi(-8));
    }

    #[test]
    fn sign_values_use_the_mean_magnitude_and_round_trip() {
        let v = [0.5f32, -1.5, 2.0, -0.0, 1.0, -3.0, 0.25, 0.75, -1.0];
        let p = PackedValues::encode(ValueCoding::Sign, &v);
        let mean = v.iter().map(|x| x.abs()).sum::<f32>() / 9.0;
        assert_eq!(p.get(0), mean);
        assert_eq!(p.get(1), -mean);
        assert_eq!(p.get(3), mean, "−0 is sent as +");
        let mut out = Vec::new();
        p.write(&mut out);
        assert_eq!(out.len(), p.byte_len());
        assert_eq!(out.len(), 4 + 2);
        let mut r = Reader::new(&out);
        assert_eq!(
            PackedValues::read(&mut r, ValueCoding::Sign, 9, "t").unwrap(),
            p
        );
        // A set padding bit is refused.
        out[5] |= 0x80;
        let mut r = Reader::new(&out);
        assert!(PackedValues::read(&mut r, ValueCoding::Sign, 9, "t").is_err());
    }
}

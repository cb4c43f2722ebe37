//! The little-endian byte reader and writer helpers shared by both wire formats
//! ([`CompressedGradients`](crate::CompressedGradients) and [`Message`](crate::Message)).

use crate::error::{Result, invalid};

/// Appends `v` as a `u32`; `what` names the field in the error.
pub(crate) fn put_u32(out: &mut Vec<u8>, v: usize, what: &str) -> Result<()> {
    let v = u32::try_from(v)
        .map_err(|_| invalid(format!("{what}: expected at most {}, got {v}", u32::MAX)))?;
    out.extend_from_slice(&v.to_le_bytes());
    Ok(())
}

/// Appends the f32 values little-endian.
pub(crate) fn put_f32s(out: &mut Vec<u8>, v: &[f32]) {
    out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
}

/// A bounds-checked cursor over a byte slice; every error names the field (`what`).
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at offset 0.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// The 8-byte header after checking its 4-byte `magic`: the 4 bytes that follow it.
    pub(crate) fn header(&mut self, magic: &[u8; 4]) -> Result<[u8; 4]> {
        let head = self.take(8, "header")?;
        if &head[..4] != magic {
            return Err(invalid(format!(
                "magic: expected {magic:?}, got {:?}",
                &head[..4]
            )));
        }
        Ok([head[4], head[5], head[6], head[7]])
    }

    /// Checks that every byte was read; `last` names the last item in the error.
    pub(crate) fn finish(&self, last: &str) -> Result<()> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(invalid(format!(
                "{} trailing bytes after the last {last}",
                self.bytes.len() - self.pos
            )))
        }
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| {
            invalid(format!(
                "{what}: needs {n} bytes at offset {}, only {} left",
                self.pos,
                self.bytes.len() - self.pos
            ))
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// A `u32` length or count, as `usize`.
    pub(crate) fn len(&mut self, what: &str) -> Result<usize> {
        let b = self.take(4, what)?;
        let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        usize::try_from(v).map_err(|_| invalid(format!("{what}: {v} does not fit in usize")))
    }

    /// A `u64`.
    pub(crate) fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// `n` f32 values, as stored (no finiteness check).
    pub(crate) fn f32s(&mut self, n: usize, what: &str) -> Result<Vec<f32>> {
        let len = n
            .checked_mul(4)
            .ok_or_else(|| invalid(format!("{what}: length overflow")))?;
        let b = self.take(len, what)?;
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// `n` f32 values, every one finite.
    pub(crate) fn finite_f32s(&mut self, n: usize, what: &str) -> Result<Vec<f32>> {
        let v = self.f32s(n, what)?;
        if v.iter().all(|x| x.is_finite()) {
            Ok(v)
        } else {
            Err(invalid(format!("{what}: a value is not finite")))
        }
    }

    /// `n` u32 values.
    pub(crate) fn u32s(&mut self, n: usize, what: &str) -> Result<Vec<u32>> {
        let len = n
            .checked_mul(4)
            .ok_or_else(|| invalid(format!("{what}: length overflow")))?;
        let b = self.take(len, what)?;
        Ok(b.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

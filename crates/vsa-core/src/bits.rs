//! Word-level kernels shared by the packed vector types. Everything works on whole `u64`
//! words, with fixed-width lane arrays so that LLVM vectorises the loops.

use rand_core::RngCore;

/// Number of `u64` words that hold `len` bits.
#[inline]
pub(crate) const fn words_for(len: usize) -> usize {
    len.div_ceil(64)
}

/// Mask of the valid bits of the last word of a `len`-bit vector (all ones when `len` is a
/// multiple of 64).
#[inline]
pub(crate) const fn last_mask(len: usize) -> u64 {
    match len % 64 {
        0 => u64::MAX,
        r => (1u64 << r) - 1,
    }
}

/// Clears the padding bits past `len`.
#[inline]
pub(crate) fn clear_padding(words: &mut [u64], len: usize) {
    if let Some(last) = words.last_mut() {
        *last &= last_mask(len);
    }
}

/// Lanes per block in the vectorised reductions.
const LANES: usize = 8;

/// `sum(popcount(f(a[i], b[i])))` with lane-parallel accumulators.
#[inline]
pub(crate) fn popcount_zip(a: &[u64], b: &[u64], f: impl Fn(u64, u64) -> u64) -> u64 {
    let mut acc = [0u64; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += u64::from(f(x[l], y[l]).count_ones());
        }
    }
    let mut total: u64 = acc.iter().sum();
    for (&x, &y) in ra.iter().zip(rb) {
        total += u64::from(f(x, y).count_ones());
    }
    total
}

/// Ternary dot product: `popcount(same) - popcount(opposite)` over planes `(ap, am)`,
/// `(bp, bm)`, with two Harley–Seal accumulators.
pub(crate) fn ternary_dot(ap: &[u64], am: &[u64], bp: &[u64], bm: &[u64]) -> i64 {
    // popcount(same) − popcount(diff) = popcount(same) + popcount(!diff) − 64·words, so one
    // accumulator (no register spills) counts both.
    let mut hs = HarleySeal::default();
    let (cap, cam) = (ap.chunks_exact(HS_BLOCK), am.chunks_exact(HS_BLOCK));
    let (cbp, cbm) = (bp.chunks_exact(HS_BLOCK), bm.chunks_exact(HS_BLOCK));
    let (rap, ram, rbp, rbm) = (
        cap.remainder(),
        cam.remainder(),
        cbp.remainder(),
        cbm.remainder(),
    );
    for ((xp, xm), (yp, ym)) in cap.zip(cam).zip(cbp.zip(cbm)) {
        hs.add(&gather(|k| (xp[k] & yp[k]) | (xm[k] & ym[k])));
        hs.add(&gather(|k| !((xp[k] & ym[k]) | (xm[k] & yp[k]))));
    }
    let full = (ap.len() - rap.len()) as u64 * 64;
    let mut s = hs.total();
    let mut d = full;
    for i in 0..rap.len() {
        s += u64::from(((rap[i] & rbp[i]) | (ram[i] & rbm[i])).count_ones());
        d += u64::from(((rap[i] & rbm[i]) | (ram[i] & rbp[i])).count_ones());
    }
    s as i64 - d as i64
}

/// 64 bits of `src` starting at bit `pos`; bits past the end of `src` read as zero.
#[inline]
fn extract(src: &[u64], pos: usize) -> u64 {
    let w = pos / 64;
    let r = pos % 64;
    let lo = src.get(w).copied().unwrap_or(0);
    if r == 0 {
        lo
    } else {
        let hi = src.get(w + 1).copied().unwrap_or(0);
        (lo >> r) | (hi << (64 - r))
    }
}

/// Cyclic rotation of a `len`-bit vector: bit `j` of `dst` is bit `(j - k) mod len` of `src`,
/// i.e. the element at position `i` moves to `(i + k) mod len`. Padding bits of `src` must be
/// zero; those of `dst` are left zero. `dst.len() == src.len() == words_for(len)`, `len > 0`.
pub(crate) fn rotate_into(src: &[u64], len: usize, k: usize, dst: &mut [u64]) {
    let k = k % len;
    if k == 0 {
        dst.copy_from_slice(src);
        return;
    }
    // Source position of destination bit 0.
    let off = len - k;
    // Destination bits [0, k) come from source [off, len): a contiguous run; destination bits
    // [k, len) come from source [0, len - k).
    // Part 1: the first k bits of dst, read with a constant shift from `off`.
    let nw = dst.len();
    let r = off % 64;
    let base = off / 64;
    let full_words_first = k / 64;
    if r == 0 {
        dst[..full_words_first].copy_from_slice(&src[base..base + full_words_first]);
    } else {
        for (w, d) in dst[..full_words_first].iter_mut().enumerate() {
            let lo = src[base + w];
            let hi = src.get(base + w + 1).copied().unwrap_or(0);
            *d = (lo >> r) | (hi << (64 - r));
        }
    }
    // The word that straddles k (if any), and part 2: dst bits [k, len) = src bits [0, len-k),
    // i.e. dst word w (w*64 >= k) = bits of src starting at w*64 - k.
    if full_words_first < nw {
        let w = full_words_first;
        let kr = k % 64;
        // Low kr bits from source [off + 64w, len), high bits from src[0..].
        let low = if kr == 0 {
            0
        } else {
            extract(src, off + 64 * w) & ((1u64 << kr) - 1)
        };
        let high = if kr == 0 { src[0] } else { src[0] << kr };
        dst[w] = low | high;
        // Words after w: dst word v starts at dst bit 64v, source bit 64v - k.
        // 64v - k = 64(v - w - 1) + (64 - kr) when kr != 0, and 64(v - w) when kr == 0.
        if kr == 0 {
            let n = nw - w - 1;
            dst[w + 1..].copy_from_slice(&src[1..1 + n]);
        } else {
            let s = 64 - kr;
            // Source words j, j+1 for j = v - w - 1.
            for (j, d) in dst[w + 1..].iter_mut().enumerate() {
                let lo = src[j];
                let hi = if j + 1 < nw { src[j + 1] } else { 0 };
                *d = (lo >> s) | (hi << (64 - s));
            }
        }
    }
    clear_padding(dst, len);
}

/// Fills `out` with consecutive `next_u64` outputs of `rng`.
#[inline]
pub(crate) fn fill_words(rng: &mut impl RngCore, out: &mut [u64]) {
    for w in out.iter_mut() {
        *w = rng.next_u64();
    }
}

/// Words per block in the bit-sliced bundling kernels.
pub(crate) const BLK: usize = 8;

/// Number of bits needed to hold the integer `m` (`0` for `m == 0`).
#[inline]
pub(crate) const fn bit_width(m: usize) -> usize {
    (usize::BITS - m.leading_zeros()) as usize
}

/// Bit-sliced vertical counters for one block of `BLK` words: plane `k` holds bit `k` of the
/// count of every one of the `64 * BLK` positions.
pub(crate) struct SlicedCounter {
    pub(crate) planes: [[u64; BLK]; 64],
}

impl SlicedCounter {
    pub(crate) fn new() -> Self {
        Self {
            planes: [[0; BLK]; 64],
        }
    }

    /// Zeroes the low `bits` planes.
    #[inline]
    pub(crate) fn reset(&mut self, bits: usize) {
        for p in &mut self.planes[..bits] {
            *p = [0; BLK];
        }
    }

    /// Adds one bit per position. `depth` planes must be enough to hold the new count.
    #[inline]
    pub(crate) fn add(&mut self, x: &[u64; BLK], depth: usize) {
        let mut carry = *x;
        for plane in &mut self.planes[..depth] {
            for l in 0..BLK {
                let t = plane[l] & carry[l];
                plane[l] ^= carry[l];
                carry[l] = t;
            }
        }
    }
}

/// Loads `BLK` words starting at `o`, zero-filled past the end. Full blocks compile to plain
/// fixed-size loads (no `memcpy` call).
#[inline(always)]
pub(crate) fn load_block(src: &[u64], o: usize) -> [u64; BLK] {
    match src.get(o..o + BLK) {
        Some(s) => <[u64; BLK]>::try_from(s).unwrap_or([0; BLK]),
        None => {
            let mut b = [0u64; BLK];
            for (d, &v) in b.iter_mut().zip(&src[o.min(src.len())..]) {
                *d = v;
            }
            b
        }
    }
}

/// Stores a block of `BLK` words at `o`, truncated at the end of `dst`.
#[inline(always)]
pub(crate) fn store_block(dst: &mut [u64], o: usize, b: &[u64; BLK]) {
    let len = dst.len();
    match dst.get_mut(o..o + BLK) {
        Some(d) => {
            if let Ok(d) = <&mut [u64; BLK]>::try_from(d) {
                *d = *b;
            }
        }
        None => {
            for (d, &v) in dst[o.min(len)..].iter_mut().zip(b) {
                *d = v;
            }
        }
    }
}

/// Adds one bit per position into `W` fixed counter planes (fully unrolled for small `W`).
#[inline(always)]
pub(crate) fn ripple<const W: usize>(c: &mut [[u64; BLK]; W], x: &[u64; BLK]) {
    let mut carry = *x;
    for plane in c.iter_mut() {
        for l in 0..BLK {
            let t = plane[l] & carry[l];
            plane[l] ^= carry[l];
            carry[l] = t;
        }
    }
}

/// Compares two bit-sliced counters (`W` planes, LSB first): returns `(a > b, a < b, a == b)`
/// masks per position.
#[inline(always)]
pub(crate) fn compare<const W: usize>(
    a: &[[u64; BLK]], // at least W planes
    b: &[[u64; BLK]],
) -> ([u64; BLK], [u64; BLK], [u64; BLK]) {
    let mut gt = [0u64; BLK];
    let mut lt = [0u64; BLK];
    let mut eq = [u64::MAX; BLK];
    for k in (0..W).rev() {
        let (p, q) = (&a[k], &b[k]);
        for l in 0..BLK {
            gt[l] |= eq[l] & p[l] & !q[l];
            lt[l] |= eq[l] & !p[l] & q[l];
            eq[l] &= !(p[l] ^ q[l]);
        }
    }
    (gt, lt, eq)
}

/// Lanes of the Harley–Seal popcount (one 256-bit vector, or two SSE2 registers).
const HL: usize = 4;
type Lanes = [u64; HL];
/// Words consumed per Harley–Seal step: 16 lane vectors.
pub(crate) const HS_BLOCK: usize = 16 * HL;

/// Carry-save adder on lane vectors: returns `(carry, sum)` of `a + b + c` per bit.
#[inline(always)]
fn csa(a: &Lanes, b: &Lanes, c: &Lanes) -> (Lanes, Lanes) {
    let mut h = [0u64; HL];
    let mut l = [0u64; HL];
    for i in 0..HL {
        let u = a[i] ^ b[i];
        h[i] = (a[i] & b[i]) | (u & c[i]);
        l[i] = u ^ c[i];
    }
    (h, l)
}

#[inline(always)]
fn pop(v: &Lanes) -> u64 {
    v.iter().map(|x| u64::from(x.count_ones())).sum()
}

/// Harley–Seal population count (Muła, Kurz & Lemire 2018): 16 input vectors are reduced by a
/// tree of carry-save adders into weight-1/2/4/8 accumulators, and only the weight-16 output is
/// popcounted, so the popcount cost is amortised over 16 words per lane.
#[derive(Default)]
pub(crate) struct HarleySeal {
    ones: Lanes,
    twos: Lanes,
    fours: Lanes,
    eights: Lanes,
    sixteens: u64,
}

impl HarleySeal {
    /// Adds the popcount of `HS_BLOCK` words given as 16 lane vectors.
    #[inline(always)]
    pub(crate) fn add(&mut self, d: &[Lanes; 16]) {
        let (twos_a, ones) = csa(&self.ones, &d[0], &d[1]);
        let (twos_b, ones) = csa(&ones, &d[2], &d[3]);
        let (fours_a, twos) = csa(&self.twos, &twos_a, &twos_b);
        let (twos_a, ones) = csa(&ones, &d[4], &d[5]);
        let (twos_b, ones) = csa(&ones, &d[6], &d[7]);
        let (fours_b, twos) = csa(&twos, &twos_a, &twos_b);
        let (eights_a, fours) = csa(&self.fours, &fours_a, &fours_b);
        let (twos_a, ones) = csa(&ones, &d[8], &d[9]);
        let (twos_b, ones) = csa(&ones, &d[10], &d[11]);
        let (fours_a, twos) = csa(&twos, &twos_a, &twos_b);
        let (twos_a, ones) = csa(&ones, &d[12], &d[13]);
        let (twos_b, ones) = csa(&ones, &d[14], &d[15]);
        let (fours_b, twos) = csa(&twos, &twos_a, &twos_b);
        let (eights_b, fours) = csa(&fours, &fours_a, &fours_b);
        let (sixteens, eights) = csa(&self.eights, &eights_a, &eights_b);
        self.ones = ones;
        self.twos = twos;
        self.fours = fours;
        self.eights = eights;
        self.sixteens += pop(&sixteens);
    }

    /// The total count.
    #[inline(always)]
    pub(crate) fn total(&self) -> u64 {
        16 * self.sixteens
            + 8 * pop(&self.eights)
            + 4 * pop(&self.fours)
            + 2 * pop(&self.twos)
            + pop(&self.ones)
    }
}

/// Packs `HS_BLOCK` words computed by `f(k)` into lane vectors.
#[inline(always)]
pub(crate) fn gather(f: impl Fn(usize) -> u64) -> [Lanes; 16] {
    let mut d = [[0u64; HL]; 16];
    for (k, v) in d.iter_mut().enumerate() {
        for (i, x) in v.iter_mut().enumerate() {
            *x = f(HL * k + i);
        }
    }
    d
}

/// `Σ popcount(a[i] ^ b[i])` (Harley–Seal on whole blocks, plain popcount on the rest).
pub(crate) fn hamming_words(a: &[u64], b: &[u64]) -> u64 {
    let mut hs = HarleySeal::default();
    let ca = a.chunks_exact(HS_BLOCK);
    let cb = b.chunks_exact(HS_BLOCK);
    let rest = popcount_zip(ca.remainder(), cb.remainder(), |x, y| x ^ y);
    for (x, y) in ca.zip(cb) {
        hs.add(&gather(|k| x[k] ^ y[k]));
    }
    hs.total() + rest
}

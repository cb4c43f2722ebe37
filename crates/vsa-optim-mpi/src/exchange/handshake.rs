//! The start-up [`Handshake`]: what every rank states, its bytes, and the check that every
//! rank agrees.

use super::*;

/// What every rank states at start-up. [`GradientExchange::new`] all-gathers it and refuses
/// to start unless every field matches rank 0's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// [`PROTOCOL_VERSION`].
    pub protocol: u64,
    /// The number of ranks the process believes it runs with.
    pub world: u64,
    /// [`ExchangeMode::tag`].
    pub mode: u64,
    /// The run's seed.
    pub seed: u64,
    /// Total gradient elements.
    pub elements: u64,
    /// Hash of the parameter names and shapes, in order.
    pub layout: u64,
    /// [`GradientCodec::fingerprint`].
    pub codec: u64,
    /// A hash of anything else the caller needs to agree (trainer and optimizer config).
    pub user: u64,
    /// [`Reduction::tag`]: summed, gathered or all-reduced.
    pub reduction: u64,
}

/// Bytes of an encoded [`Handshake`].
pub const HANDSHAKE_BYTES: usize = 72;

const FIELDS: [&str; 9] = [
    "protocol version",
    "world size",
    "mode",
    "seed",
    "total gradient elements",
    "parameter layout (names and shapes)",
    "codec configuration",
    "training configuration",
    "reduction (gather, sum or allreduce)",
];

impl Handshake {
    fn words(&self) -> [u64; 9] {
        [
            self.protocol,
            self.world,
            self.mode,
            self.seed,
            self.elements,
            self.layout,
            self.codec,
            self.user,
            self.reduction,
        ]
    }

    /// The [`HANDSHAKE_BYTES`]-byte little-endian encoding: the fields in declaration order.
    pub fn to_bytes(&self) -> [u8; HANDSHAKE_BYTES] {
        let mut out = [0u8; HANDSHAKE_BYTES];
        for (dst, w) in out.chunks_exact_mut(8).zip(self.words()) {
            dst.copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// Decodes [`to_bytes`](Handshake::to_bytes).
    ///
    /// # Errors
    /// [`Error::Decode`] unless `bytes` has [`HANDSHAKE_BYTES`] bytes.
    pub fn from_bytes(rank: usize, bytes: &[u8]) -> Result<Self> {
        if bytes.len() != HANDSHAKE_BYTES {
            return Err(Error::Decode {
                rank,
                reason: format!(
                    "handshake of {} bytes, expected {HANDSHAKE_BYTES}",
                    bytes.len()
                ),
            });
        }
        let w: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        Ok(Self {
            protocol: w[0],
            world: w[1],
            mode: w[2],
            seed: w[3],
            elements: w[4],
            layout: w[5],
            codec: w[6],
            user: w[7],
            reduction: w[8],
        })
    }
}

/// Compares every rank's handshake with rank 0's, field by field in declaration order.
///
/// # Errors
/// [`Error::ConfigMismatch`] naming the first differing field and the first rank that
/// differs in it; the same error on every rank, since every rank sees all handshakes.
pub fn check_handshakes(all: &[Handshake]) -> Result<()> {
    let Some(first) = all.first() else {
        return Err(config_error("handshakes", "at least one", 0));
    };
    let reference = first.words();
    for (f, field) in FIELDS.iter().enumerate() {
        for (r, h) in all.iter().enumerate().skip(1) {
            let w = h.words()[f];
            if w != reference[f] {
                let show = |v: u64| match f {
                    2 => mode_name(v),
                    8 => reduction_name(v),
                    0 | 1 | 3 | 4 => v.to_string(),
                    _ => format!("{v:#018x}"),
                };
                return Err(Error::ConfigMismatch {
                    field,
                    rank: r,
                    expected: show(reference[f]),
                    found: show(w),
                });
            }
        }
    }
    Ok(())
}

fn mode_name(tag: u64) -> String {
    ExchangeMode::ALL
        .into_iter()
        .find(|m| u64::from(m.tag()) == tag)
        .map_or_else(|| format!("unknown mode {tag}"), |m| m.name().to_string())
}

fn reduction_name(tag: u64) -> String {
    Reduction::ALL
        .into_iter()
        .find(|m| u64::from(m.tag()) == tag)
        .map_or_else(
            || format!("unknown reduction {tag}"),
            |m| m.name().to_string(),
        )
}

/// Hash of parameter names and shapes, in the given order.
pub fn layout_hash(params: &[(String, Vec<usize>)]) -> u64 {
    let mut words = Vec::new();
    for (name, shape) in params {
        words.push(name.len() as u64);
        words.extend(name.bytes().map(u64::from));
        words.push(shape.len() as u64);
        words.extend(shape.iter().map(|&d| d as u64));
    }
    fnv(words)
}

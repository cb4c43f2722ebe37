//! Ternary gradient accumulation (filled by issue 3).

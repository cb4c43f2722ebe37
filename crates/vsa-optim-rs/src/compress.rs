//! VSA gradient compression (filled by issue 6).

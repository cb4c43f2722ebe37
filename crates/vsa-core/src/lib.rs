//! `vsa-core`: placeholder, filled by its issue.

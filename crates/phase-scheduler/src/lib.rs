//! `phase-scheduler`: placeholder, filled by its issue.

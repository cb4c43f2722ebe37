//! `grad-predict`: placeholder, filled by its issue.

//! Image names: what `build` takes (`naming`) and registry references
//! (`reference`).

pub mod naming;
pub mod reference;

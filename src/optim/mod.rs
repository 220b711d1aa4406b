//! Optimization: AdamW (fused or per-tensor kernel) with saveable state, gradient clipping and
//! the learning-rate schedule.
mod adamw;
mod ema;
mod fused;
mod schedule;
mod state;

pub use adamw::AdamW;
pub use ema::{Ema, EmaError};
pub use schedule::LrSchedule;
pub use state::OptimError;

#[cfg(test)]
mod tests;

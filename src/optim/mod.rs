//! Optimization: AdamW with saveable state and the learning-rate schedule.
mod adamw;
mod schedule;

pub use adamw::{AdamW, OptimError};
pub use schedule::LrSchedule;

#[cfg(test)]
mod tests;

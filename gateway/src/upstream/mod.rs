//! Upstream pools: replica selection (`pool`) and active health checks (`health`).

pub mod discovery;
pub mod health;
pub mod pool;

pub use pool::Pool;

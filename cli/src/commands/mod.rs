//! One module per group of commands; each function takes the client and its parsed arguments.

pub mod checkpoints;
pub mod daemon;
pub mod follow;
pub mod jobs;
pub mod portability;
pub mod remotes;
pub mod schedules;
pub mod terminal;
pub mod top;

//! One module per command. Each has an `Args` struct (its flags, whose docs
//! are the `--help` text) and a `run` that writes to the given output.

pub mod cancel_task;
pub mod cells;
pub mod completions;
pub mod create;
pub mod debug_logs;
pub mod delete_task;
pub mod list;
pub mod list_tasks;
pub mod logs;
pub mod remove;
pub mod scale;
pub mod status;
pub mod submit_lrp;
pub mod submit_task;
pub mod target;
pub mod task;
pub mod update;
pub mod update_routes;
pub mod version;
pub mod visualize;

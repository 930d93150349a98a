//! One module per command. Each has an `Args` struct (its flags, whose docs
//! are the `--help` text) and a `run` that writes to the given output.

pub mod cancel_task;
pub mod cells;
pub mod completions;
pub mod delete_task;
pub mod list_tasks;
pub mod submit_task;
pub mod target;
pub mod task;
pub mod version;

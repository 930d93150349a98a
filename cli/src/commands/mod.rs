//! One module per command. Each has an `Args` struct (its flags, whose docs
//! are the `--help` text), its `EXAMPLES` (the end of its `--help`) and a
//! `run` that writes to the given output.

pub mod build_droplet;
pub mod cancel_task;
pub mod cells;
pub mod completion;
pub mod create;
pub mod debug_logs;
pub mod delete_task;
pub mod export_droplet;
pub mod import_droplet;
pub mod launch_droplet;
pub mod list;
pub mod list_droplets;
pub mod list_tasks;
pub mod logs;
pub mod remove;
pub mod remove_droplet;
pub mod scale;
pub mod ssh;
pub mod status;
pub mod submit_lrp;
pub mod submit_task;
pub mod sync;
pub mod target;
pub mod task;
pub mod test;
pub mod update;
pub mod update_routes;
pub mod version;
pub mod visualize;

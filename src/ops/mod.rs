//! What commands are made of: option merging and validation, user defaults, the doctor's
//! checks, reading logs, and shell completions.

pub mod apply;
pub mod attach;
pub mod clients;
pub mod completions;
pub mod doctor;
pub mod forwards;
pub mod logs;
pub mod options;
pub mod sessions;
pub mod start;
pub mod status;
pub mod update;
pub mod user_config;

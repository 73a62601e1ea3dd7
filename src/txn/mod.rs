//! Changes as transactions: a plan of steps with their undo, the undo log on disk for a
//! command that dies half-way, and the lock that lets one change run at a time.

pub mod journal;
pub mod lock;
pub mod plan;

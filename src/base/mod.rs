//! The bottom layer: what any part may use. Atomic writes, escaping for units and terminals,
//! sizes, the directories a change makes, bounded log files, standard output that ends
//! quietly on a closed pipe, fault points for tests, and the type of a path the sandbox can write.

pub mod agent_file;
pub mod atomic;
pub mod escape;
pub mod fault;
pub mod lexical;
pub mod log_file;
pub mod made_dirs;
pub mod output;
pub mod sizes;
pub mod terminal;
pub mod unit_text;

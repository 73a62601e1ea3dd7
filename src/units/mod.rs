//! sandboxctl's own units, however they are installed: the egress proxy's and the
//! notifier's template units, the private copy of the binary they run and each client's
//! proxy drop-in.

pub mod notify;
pub mod proxy;

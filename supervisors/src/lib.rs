//! # hodei-supervisors
//!
//! The supervision tree of Hodei: the order in which the actors of [`hodei_actors`] start, the
//! restart policy of each (backoff, at most N restarts in a window, then escalation to the parent),
//! and the counting and logging of restarts.
//!
//! The crate holds no supervisor yet; it exists so that the dependency direction
//! `domain <- actors <- supervisors <- api <- hodei` is fixed from the start.

//! The Docker provider against the real engine of this machine: no mocks, no registry. Each
//! scenario has its own provider instance and ends by checking that no container, network or
//! volume of that instance is left. Without a reachable engine every test fails, loudly.

mod files;
mod images;
mod reconcile;
mod services;
mod steps;
mod support;

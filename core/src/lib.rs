//! Doorstep's core: everything a phone does, as a Rust library. Household documents
//! (`model`), the sync wire types and state machine (`protocol`), the offline SQLite
//! store (`store`), photo intake (`media`) and the HTTP sync driver (`sync`).
//! Dependencies point one way: model <- protocol <- store, media <- sync.

pub mod error;
pub mod media;
pub mod model;
pub mod protocol;
pub mod store;
pub mod sync;

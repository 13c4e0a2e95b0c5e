//! Doorstep's core: everything a phone does, as a Rust library. Household and
//! organisation documents (`model`), the sync wire types and state machine
//! (`protocol`), the offline SQLite store (`store`), photos and signature images
//! (`media`), signed evidence (`evidence`) and the HTTP sync driver (`sync`).
//! Dependencies point one way: model <- protocol <- store, media, evidence <- sync.

pub mod directive;
pub mod error;
pub mod evidence;
pub mod ffi;
pub mod media;
pub mod model;
pub mod protocol;
pub mod sampling;
pub mod store;
pub mod sync;

uniffi::setup_scaffolding!();

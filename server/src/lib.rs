//! Doorstep's central server as a library: storage and sync logic (`db`), the HTTP
//! surface (`http`) and its TLS (`tls`), accounts (`auth`), the village roster reader (`roster`), the responsible-persons reader (`places`), the
//! evidence check (`verify`) and the demo (`demo`). The `doorstep-server` binary is a thin command line over these.

pub mod access;
pub mod api;
pub mod audit;
pub mod auth;
pub mod db;
pub mod demo;
pub mod error;
pub mod http;
pub mod places;
pub mod roster;
pub mod tls;
pub mod verify;
pub mod web;

//! ffcluster: run ffmpeg jobs on other machines' CPUs and GPUs.
//!
//! This crate is both the controller (binary `ffcluster`, behind the default
//! `controller` feature) and the vocabulary the three programs share. The shim and
//! the node agent depend on it with default features off, so they never link the
//! HTTP server.
//!
//! # Layout
//! * [`ffmpeg`]: the command-line model and the classifier (pure, no IO).
//! * [`protocol`]: the messages and binary frames the shim, the controller and the
//!   nodes exchange (pure data).
//! * [`remote`]: what a node needs to run a command line: the files it reads, the
//!   rewritten argument list, and when each output file may be published (pure).
//! * [`plan`]: the segment grid of a job and the chunks a split job is cut into
//!   (pure).
//! * [`split`]: whether a job can be split, each chunk's command line, and the
//!   local finisher that joins the chunks into the job's real outputs (pure).
//! * [`resume`]: where an HLS job the cluster lost picks up again (pure).
//! * [`priority`]: how urgently a job wants nodes, from its shape (pure).
//! * [`hardware`]: hardware families, node argument translations and the
//!   capability probes nodes answer for the cluster (pure).
//! * [`config`]: the daemons' layered settings (TOML file, environment, flags).
//! * `tls` (feature `tls`): the TLS configurations of the controller and of
//!   every client.
//! * `http` (feature `http`): the blocking HTTP client (ureq) of the admin
//!   commands and the shim's cluster probes, with that TLS.
//! * `controller` (feature `controller`): the daemon behind `ffcluster serve`
//!   (node and shim WebSockets, the scheduler, the input relay, the status
//!   document) and the small HTTP client behind `ffcluster status`.
//!
//! Dependency direction: `ffmpeg` ← `protocol` ← `remote` ← `controller`.

pub mod config;
#[cfg(feature = "controller")]
pub mod controller;
pub mod ffmpeg;
pub mod hardware;
#[cfg(feature = "http")]
pub mod http;
pub mod plan;
pub mod priority;
pub mod protocol;
pub mod remote;
pub mod resume;
pub mod split;
#[cfg(feature = "tls")]
pub mod tls;

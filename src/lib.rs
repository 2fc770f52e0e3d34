//! ffcluster: run ffmpeg jobs on other machines' CPUs and GPUs.
//!
//! This crate is both the controller (binary `ffcluster`, behind the default
//! `controller` feature) and the vocabulary the three programs share. The shim and
//! the node agent depend on it with default features off, so they never link the
//! HTTP server.
//!
//! # Layout
//! * [`ffmpeg`]: the command-line model and the classifier (pure, no IO).
//! * `explain` (binary only): `ffcluster explain`.
//!
//! Dependency direction: `ffmpeg` depends on nothing else in the crate.

pub mod ffmpeg;

//! The ffmpeg command line, modelled once and shared by the shim, the controller
//! and the nodes.
//!
//! * [`options`]: ffmpeg's option table as data (what takes a value, which group).
//! * [`cmdline`]: the argument list split into global, input and output groups,
//!   exactly as `split_commandline()` does, and rendered back identically.
//! * [`url`]: what an input or output URL names (file, pipe, network, `concat:`…).
//! * [`filtergraph`]: the filter names a `-vf`/`-af`/`-filter_complex` graph uses.
//! * [`decision`]: the pure classifier: probe, ffprobe, local, whole or split, with
//!   a stable reason code and the shape of every output.
//!
//! Not modelled: what an option's value means beyond what placement needs, stream
//! selection against real streams (that needs the media), and ffprobe's own
//! option syntax (ffprobe always runs locally).

pub mod cmdline;
pub mod decision;
pub mod filtergraph;
pub mod options;
pub mod url;

pub use cmdline::{CmdlineError, CommandLine, Dialect, Input, Opt, Output, Program};
pub use decision::{Decision, OutputShape, Reason, Verdict, classify, classify_with};

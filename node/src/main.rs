//! `ffcluster-node`: the node agent. Not built yet; see the README's status table.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("ffcluster-node: the node agent is not implemented yet; every job runs locally through the shim");
    ExitCode::from(2)
}

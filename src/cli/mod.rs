//! The `quorate` command-line inspector (feature `cli`): who holds this
//! lock, what a semaphore, latch or barrier looks like on every node, a
//! forced release of a stuck lock, a live view, and a quick benchmark.
//!
//! It reads the nodes directly, with plain connections, rather than
//! through a [`Quorum`](crate::Quorum): an inspector must not record a
//! `max_ttl` on the nodes (that would lengthen the deployment's restart
//! quarantine), and it shows what each node holds, which a quorum's votes
//! hide. Only `bench` runs the library.
//!
//! Modules: `args` (the command line), `nodes` (connections), `state`
//! (one resource on one node, read and classified), `report` (a resource
//! over every node, as text or JSON), then one module per command.

mod args;
mod bench;
mod list;
mod nodes;
mod release;
mod report;
mod state;
mod status;
mod watch;

use std::fmt;
use std::process::ExitCode;

use clap::Parser;

use crate::config::Config;
use args::{Args, Command};

/// Runs the `quorate` command line with the process's arguments and
/// environment, and returns its exit status: 0 ok, 1 not found or not
/// held, 2 usage, 3 nodes unreachable (see `quorate --help`).
///
/// This is the whole of the `quorate` binary, which calls it from `main`.
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     quorate::cli::main()
/// }
/// ```
pub fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::usage(format!("cannot start a runtime: {e}")))
        .and_then(|rt| rt.block_on(run(args)));
    match outcome {
        Ok(status) => ExitCode::from(status as u8),
        Err(failure) => {
            eprintln!("quorate: {failure}");
            ExitCode::from(failure.status as u8)
        }
    }
}

/// How a command ended, as the process's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok = 0,
    /// The resource is not there, or not held.
    Absent = 1,
    Usage = 2,
    /// Too few nodes answered to tell.
    Unreachable = 3,
}

/// A command that could not do its work: one line for the person, and
/// the exit status.
#[derive(Debug)]
struct Failure {
    status: Status,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            status: Status::Usage,
            message: message.into(),
        }
    }

    fn unreachable(message: impl Into<String>) -> Failure {
        Failure {
            status: Status::Unreachable,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<crate::Error> for Failure {
    fn from(e: crate::Error) -> Failure {
        let status = match &e {
            crate::Error::Connect { .. } | crate::Error::Quorum(_) => Status::Unreachable,
            crate::Error::NotHeld | crate::Error::LeaseLost => Status::Absent,
            _ => Status::Usage,
        };
        Failure {
            status,
            message: e.to_string(),
        }
    }
}

type Outcome = Result<Status, Failure>;

async fn run(args: Args) -> Outcome {
    let config = settings(&args)?;
    let out = report::Output { json: args.json };
    let connect = || nodes::Nodes::connect(&config, args.timeout);
    match &args.command {
        Command::Status { name } => status::run(&connect().await?, name, out).await,
        Command::List(list) => list::run(&connect().await?, list, out).await,
        Command::Release(release) => release::run(&connect().await?, release, out).await,
        Command::Watch(watch) => watch::run(&connect().await?, watch, out).await,
        Command::Bench(bench) => bench::run(&config, bench, out).await,
    }
}

/// The settings: the file, then the `QUORATE_*` variables, then the
/// command line.
fn settings(args: &Args) -> Result<Config, Failure> {
    let base = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let mut config = base.with_env()?;
    if !args.nodes.is_empty() {
        config.nodes.clone_from(&args.nodes);
    }
    if let Some(prefix) = &args.key_prefix {
        config.key_prefix.clone_from(prefix);
    }
    if config.nodes.is_empty() {
        return Err(Failure::usage(
            "no nodes: give --nodes URL,... or set QUORATE_NODES",
        ));
    }
    Ok(config)
}

//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

const EXIT_CODES: &str = "\
Nodes come from --nodes, QUORATE_NODES or the settings file (--config,
QUORATE_CONFIG); the other QUORATE_* variables apply as they do to the
library (QUORATE_KEY_PREFIX, QUORATE_CONNECT_TIMEOUT, ...).

Exit status:
  0  ok
  1  not found or not held (or a release declined)
  2  usage: bad arguments or settings
  3  nodes unreachable: fewer than a majority answered";

/// Inspect quorate's locks, semaphores, latches and barriers on Redis.
#[derive(Debug, Parser)]
#[command(name = "quorate", version, after_help = EXIT_CODES)]
pub(super) struct Args {
    /// The nodes' URLs, comma-separated.
    #[arg(long, global = true, value_delimiter = ',', value_name = "URLS")]
    pub(super) nodes: Vec<String>,
    /// A TOML settings file, as the library reads it.
    #[arg(long, global = true, env = "QUORATE_CONFIG", value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// Prefix of every key (the library's key_prefix).
    #[arg(long, global = true, value_name = "PREFIX")]
    pub(super) key_prefix: Option<String>,
    /// Print JSON (one object per line for watch).
    #[arg(long, global = true)]
    pub(super) json: bool,
    /// How long each node may take to connect and to answer.
    #[arg(long, global = true, default_value = "1s", value_parser = duration)]
    pub(super) timeout: Duration,
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
    /// Show a resource on every node: its kind, holders, fencing counter,
    /// time left, and whether each node counts toward the quorum.
    Status {
        /// The resource name (without the key prefix).
        name: String,
    },
    /// List resources with their kind and holder (SCAN, page by page).
    List(List),
    /// Delete a stuck lock (mutex, semaphore, reentrant lock) on every node.
    Release(Release),
    /// Show a resource live, refreshed on its notifications; Ctrl-C ends.
    Watch(Watch),
    /// Measure lock + release against the nodes: latency of one task (W1)
    /// and throughput of many (W2).
    Bench(Bench),
}

#[derive(Debug, clap::Args)]
pub(super) struct List {
    /// Only names starting with this.
    pub(super) prefix: Option<String>,
    /// Keys asked of each node per SCAN page.
    #[arg(long, default_value_t = 100)]
    pub(super) page: usize,
    /// Stop after this many resources.
    #[arg(long)]
    pub(super) limit: Option<usize>,
}

#[derive(Debug, clap::Args)]
pub(super) struct Release {
    /// The resource name (without the key prefix).
    pub(super) name: String,
    /// Required: a forced release takes the lock away from a holder that
    /// may still be running.
    #[arg(long)]
    pub(super) force: bool,
    /// Do not ask for confirmation.
    #[arg(long, short)]
    pub(super) yes: bool,
}

#[derive(Debug, clap::Args)]
pub(super) struct Watch {
    /// The resource name (without the key prefix).
    pub(super) name: String,
    /// Refresh at least this often, even without a notification (leases
    /// expire silently).
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub(super) interval: Duration,
    /// Exit after this many views.
    #[arg(long, value_name = "N")]
    pub(super) updates: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub(super) struct Bench {
    /// How long each workload runs.
    #[arg(long, default_value = "3s", value_parser = duration)]
    pub(super) duration: Duration,
    /// Tasks of the throughput workload (W2), each on its own key.
    #[arg(long, default_value_t = 64)]
    pub(super) tasks: usize,
    /// Lease TTL of the benchmark's locks.
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub(super) ttl: Duration,
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(text).map_err(|e| e.to_string())
}

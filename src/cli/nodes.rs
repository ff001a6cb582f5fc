//! Plain connections to every node, opened in parallel; a node that cannot
//! be reached is kept with the reason, and shown as such.

use std::time::Duration;

use futures::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};

use super::Failure;
use crate::config::Config;

/// One node: its address, and a connection or why there is none.
pub(super) struct Node {
    pub(super) addr: String,
    pub(super) client: Client,
    pub(super) conn: Result<MultiplexedConnection, String>,
}

/// The nodes of the deployment, in the order given.
pub(super) struct Nodes {
    pub(super) nodes: Vec<Node>,
    pub(super) key_prefix: String,
    pub(super) timeout: Duration,
}

impl Nodes {
    /// Connects to every node of `config`. Fails only for a URL that does
    /// not parse; unreachable nodes are kept, with the cause.
    pub(super) async fn connect(config: &Config, timeout: Duration) -> Result<Nodes, Failure> {
        let clients = config
            .nodes
            .iter()
            .map(|url| {
                Client::open(url.as_str())
                    .map_err(|e| Failure::usage(format!("bad node url {url:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let nodes = join_all(clients.into_iter().map(|client| open(client, timeout))).await;
        Ok(Nodes {
            nodes,
            key_prefix: config.key_prefix.clone(),
            timeout,
        })
    }

    /// A majority of the nodes.
    pub(super) fn majority(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    /// Fails when fewer than a majority of `answered` nodes answered: what
    /// the rest hold could change the answer.
    pub(super) fn enough(&self, answered: usize) -> Result<(), Failure> {
        if answered >= self.majority() {
            return Ok(());
        }
        let down: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.conn.as_ref().err().map(|e| format!("{}: {e}", n.addr)))
            .collect();
        let why = if down.is_empty() {
            "too few nodes answered".to_owned()
        } else {
            down.join("; ")
        };
        Err(Failure::unreachable(format!(
            "{answered} of {} nodes answered, {} needed: {why}",
            self.nodes.len(),
            self.majority()
        )))
    }
}

async fn open(client: Client, timeout: Duration) -> Node {
    let info = client.get_connection_info();
    let addr = match info.redis_settings().db() {
        0 => info.addr().to_string(),
        db => format!("{}/{db}", info.addr()),
    };
    let settings = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let conn = client
        .get_multiplexed_async_connection_with_config(&settings)
        .await
        .map_err(|e| one_line(&e));
    Node { addr, client, conn }
}

/// A Redis error on one line.
pub(super) fn one_line(e: &redis::RedisError) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

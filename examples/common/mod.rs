//! Where the examples find Redis: the nodes listed in `QUORATE_NODES`
//! (comma-separated URLs), or throwaway local servers started for the run.

use quorate::Quorum;
use quorate::testkit::ServerGroup;

/// A quorum, and the local servers behind it when the example started them.
pub struct Nodes {
    pub quorum: Quorum,
    /// Kept to keep the servers alive; only the tour reaches into it.
    #[allow(dead_code)]
    pub local: Option<ServerGroup>,
}

/// Connects to `QUORATE_NODES`, or starts `n` local servers when it is unset.
pub async fn nodes(n: usize) -> Result<Nodes, Box<dyn std::error::Error>> {
    if let Ok(list) = std::env::var("QUORATE_NODES") {
        let urls: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        println!("using {} node(s) from QUORATE_NODES", urls.len());
        let quorum = Quorum::connect(urls).await?;
        return Ok(Nodes {
            quorum,
            local: None,
        });
    }
    let servers = ServerGroup::start(n)?;
    println!(
        "started {n} throwaway redis-server(s): {}",
        servers.urls().join(", ")
    );
    let quorum = Quorum::connect(servers.urls()).await?;
    Ok(Nodes {
        quorum,
        local: Some(servers),
    })
}

//! The scripts as quorate loads them, for tests that stage a node's script
//! cache (load one script and not another, say).

use crate::engine::scripts::ALL;

/// The source quorate sends for the script of `lua/<name>.lua` (its
/// prelude folded onto the first line), or `None` for an unknown name.
/// Loading it with `SCRIPT LOAD` gives the hash quorate calls.
///
/// ```
/// let source = quorate::testkit::script_source("mutex_release").unwrap();
/// assert!(source.contains("redis.call('DEL', KEYS[1])"));
/// assert!(quorate::testkit::script_source("nope").is_none());
/// ```
pub fn script_source(name: &str) -> Option<String> {
    ALL.iter()
        .find(|lua| lua.name() == name)
        .map(|lua| lua.source().to_owned())
}

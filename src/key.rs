//! Key names of one resource, kept in one cluster hash slot.

use crate::error::{Error, Result};

/// Longest key quorate will build, prefix included.
pub(crate) const MAX_KEY_LEN: usize = 1024;

/// Suffixes of the keys a resource keeps beside its main key.
pub(crate) const SUFFIXES: [&str; 6] = ["fence", "ready", "owners", "count", "queue", "waiters"];

/// The key, after the prefix, of each node's own record: the deployment's
/// longest lease TTL and a restart quarantine (see `node.rs`).
pub(crate) const NODE_RECORD: &str = "quorate:node";

/// The keys of one named resource: its main key and `{name}:suffix` siblings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    /// The name the caller gave.
    pub(crate) resource: String,
    /// The main key: the prefix and the name.
    pub(crate) main: String,
    tagged: bool,
}

impl Keys {
    /// Checks a resource name (before any I/O) and names its keys.
    pub(crate) fn new(prefix: &str, name: &str) -> Result<Keys> {
        if name.is_empty() {
            return Err(Error::argument("name", "must not be empty"));
        }
        let keys = Keys::raw(name, format!("{prefix}{name}"))?;
        if name == NODE_RECORD {
            return Err(Error::argument(
                "name",
                format!(
                    "{:?} is the key of quorate's record on each node",
                    keys.main
                ),
            ));
        }
        if let Some(owner) = keys.sibling_of() {
            return Err(Error::argument(
                "name",
                format!(
                    "{:?} is a key that {owner:?} keeps beside its own",
                    keys.main
                ),
            ));
        }
        Ok(keys)
    }

    /// Names the keys of a resource whose main key is `main` exactly.
    fn raw(resource: &str, main: String) -> Result<Keys> {
        if main.len() > MAX_KEY_LEN {
            return Err(Error::argument(
                "name",
                format!("key is {} bytes, more than {MAX_KEY_LEN}", main.len()),
            ));
        }
        let tagged = hash_tag(&main).is_some();
        Ok(Keys {
            resource: resource.to_owned(),
            main,
            tagged,
        })
    }

    /// The main key of the resource whose sibling this main key would be
    /// (`{x}:fence` is mutex `x`'s fencing counter), if any.
    fn sibling_of(&self) -> Option<&str> {
        SUFFIXES.iter().find_map(|suffix| {
            let owner = self.main.strip_suffix(suffix)?.strip_suffix(':')?;
            hash_tag(owner).is_some().then_some(owner)
        })
    }

    /// A sibling key in the main key's hash slot.
    ///
    /// Fails with [`Error::CrossSlot`] for names whose braces would move the
    /// sibling to another slot (`a{}{b}`), which a Redis Cluster would refuse
    /// to run in one script.
    pub(crate) fn sibling(&self, suffix: &str) -> Result<String> {
        let key = if self.tagged {
            format!("{}:{suffix}", self.main)
        } else {
            format!("{{{}}}:{suffix}", self.main)
        };
        if slot(&key) != slot(&self.main) {
            return Err(Error::CrossSlot {
                resource: self.resource.clone(),
            });
        }
        Ok(key)
    }
}

/// The part of a key Redis Cluster hashes: the first non-empty `{...}`.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}

/// The Redis Cluster hash slot of a key (CRC16/XMODEM mod 16384).
pub(crate) fn slot(key: &str) -> u16 {
    let hashed = hash_tag(key).unwrap_or(key);
    crc16(hashed.as_bytes()) % 16384
}

fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |mut crc, &b| {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
        crc
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        // Values from CLUSTER KEYSLOT.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"));
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
    }

    #[test]
    fn siblings_share_the_main_keys_slot() {
        for name in ["orders:42", "orders:{42}", "x{y}z", "{a}"] {
            let keys = Keys::new("", name).unwrap();
            let fence = keys.sibling("fence").unwrap();
            assert_eq!(slot(&fence), slot(&keys.main), "{name}");
        }
        assert_eq!(
            Keys::new("", "a").unwrap().sibling("fence").unwrap(),
            "{a}:fence"
        );
        assert_eq!(
            Keys::new("", "a{t}").unwrap().sibling("fence").unwrap(),
            "a{t}:fence"
        );
    }

    #[test]
    fn ambiguous_braces_are_refused() {
        let keys = Keys::new("", "foo{}{bar}").unwrap();
        assert!(matches!(
            keys.sibling("fence"),
            Err(Error::CrossSlot { .. })
        ));
    }

    #[test]
    fn names_of_other_resources_keys_are_refused() {
        for name in ["{x}:fence", "orders:{42}:owners", "{a}:count", NODE_RECORD] {
            assert!(Keys::new("", name).is_err(), "{name}");
        }
        for name in ["job:count", "fence", "x:fence", "{x}:fences"] {
            assert!(Keys::new("", name).is_ok(), "{name}");
        }
        assert!(Keys::new("{app}:", "fence").is_err(), "the prefix counts");
    }

    #[test]
    fn empty_and_huge_names_are_refused() {
        assert!(Keys::new("", "").is_err());
        assert!(Keys::new("", &"x".repeat(MAX_KEY_LEN + 1)).is_err());
        assert!(Keys::new("p:", &"x".repeat(MAX_KEY_LEN - 1)).is_err());
    }
}

//! The Lua scripts, one per file in `lua/`, each hashed once.
//!
//! [`redis::Script`] sends EVALSHA and, on NOSCRIPT (after `SCRIPT FLUSH` or a
//! restart), loads the script on that connection and retries once.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($name:ident, $file:literal) => {
        pub(crate) static $name: LazyLock<Script> =
            LazyLock::new(|| Script::new(include_str!(concat!("../lua/", $file))));
    };
}

script!(MUTEX_ACQUIRE, "mutex_acquire.lua");
script!(MUTEX_EXTEND, "mutex_extend.lua");
script!(MUTEX_RELEASE, "mutex_release.lua");
script!(FENCE_COMMIT, "fence_commit.lua");

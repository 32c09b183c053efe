//! Mapping MCP tool names to names every LLM provider accepts.
//!
//! MCP allows names like `orders.lookup/v2` (up to 128 characters, with `.` and `/` seen in the wild); OpenAI wants
//! `^[a-zA-Z0-9_-]{1,64}$` and Gemini also a leading letter or underscore. One bad name makes the provider reject the
//! whole request, so every name is made safe here, and the bridge keeps the reverse map to the real name.
//!
//! Prefixing: a tool keeps its own name (the LLM reads `lookup_order`), so prompts and evaluation scenarios that name
//! tools keep working when servers are added. A server's tools are prefixed `<prefix>__tool` only when its
//! configuration sets `prefix`, and a single tool is prefixed `<server>__tool` only when an earlier configured server
//! has a tool of the same name: the earlier server keeps the plain name, so adding a server at the end of the list
//! never renames another server's tools. A server's tool names are remembered while it is down, so a server dropping
//! out and coming back does not rename anything either; only a server not yet reached since start-up can claim a
//! name late (set `prefix` to rule that out).

use std::collections::HashSet;

use sha2::{Digest, Sha256};

/// Longest name providers accept.
pub const MAX_NAME_LEN: usize = 64;
/// Between the server prefix and the tool name.
pub const PREFIX_SEPARATOR: &str = "__";
const HASH_HEX_LEN: usize = 8;

/// Whether `name` is already acceptable to every provider Parley supports.
pub fn is_safe(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else { return false };
    name.len() <= MAX_NAME_LEN
        && (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Replaces every character outside `[A-Za-z0-9_-]` with `_` and makes the name start with a letter or underscore.
/// Does not shorten.
pub fn sanitize(name: &str) -> String {
    let mut out: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    if out.is_empty() {
        out.push_str("tool");
    }
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

/// A short, stable hash of the real (server, tool) pair, to tell apart names that sanitize or truncate alike.
fn short_hash(server: &str, tool: &str) -> String {
    let digest =
        Sha256::new().chain_update(server.as_bytes()).chain_update([0u8]).chain_update(tool.as_bytes()).finalize();
    hex::encode(digest)[..HASH_HEX_LEN].to_string()
}

/// `base` cut to fit, with `_` and the hash appended. `base` is ASCII (it was sanitized).
fn with_hash(base: &str, server: &str, tool: &str) -> String {
    let keep = MAX_NAME_LEN - HASH_HEX_LEN - 1;
    let cut = &base[..base.len().min(keep)];
    format!("{cut}_{}", short_hash(server, tool))
}

/// One configured server, as the prefixing rule sees it.
#[derive(Debug, Clone, Copy)]
pub struct ConfiguredServer<'a> {
    pub name: &'a str,
    /// The configured `prefix`, if any.
    pub prefix: Option<&'a str>,
    /// The real names of the tools it listed last (kept while it is down).
    pub listed: &'a [String],
}

/// The prefix a tool of `servers[index]` is offered under: the server's configured `prefix`; else the server's name
/// when an earlier configured server without a `prefix` lists a tool that sanitizes to the same name; else none.
pub fn prefix_for<'a>(servers: &[ConfiguredServer<'a>], index: usize, tool: &str) -> Option<&'a str> {
    let server = servers.get(index)?;
    if server.prefix.is_some() {
        return server.prefix;
    }
    let plain = sanitize(tool);
    let taken = servers[..index]
        .iter()
        .filter(|earlier| earlier.prefix.is_none())
        .any(|earlier| earlier.listed.iter().any(|other| sanitize(other) == plain));
    taken.then_some(server.name)
}

/// A tool to name: its server, the prefix [`prefix_for`] chose, and its real MCP name.
#[derive(Debug, Clone, Copy)]
pub struct Offered<'a> {
    pub server: &'a str,
    pub prefix: Option<&'a str>,
    pub tool: &'a str,
}

/// Assigns a safe, unique name to each offered tool, in order.
///
/// A name that is already safe (after its prefix, if any) is kept as is; a sanitized name is kept unless it collides
/// with an earlier one; a name that is too long, or collides, is cut and gets a hash suffix of the real (server,
/// tool) pair. Earlier tools win, so callers pass tools in a stable order (configured server order, then the
/// server's own tool order) to keep names stable across refreshes.
pub fn assign(tools: &[Offered<'_>]) -> Vec<String> {
    let mut used = HashSet::with_capacity(tools.len());
    let mut names = Vec::with_capacity(tools.len());
    for Offered { server, prefix, tool } in tools {
        let joined = match prefix {
            Some(prefix) => format!("{prefix}{PREFIX_SEPARATOR}{tool}"),
            None => tool.to_string(),
        };
        let base = sanitize(&joined);
        let mut name = if base.len() <= MAX_NAME_LEN && !used.contains(&base) {
            base.clone()
        } else {
            with_hash(&base, server, tool)
        };
        // Two different pairs with equal hashes (or a real name that looks like a hashed one): count up.
        let mut attempt = 1u32;
        while used.contains(&name) {
            let suffix = format!("_{attempt}");
            let stem = with_hash(&base, server, tool);
            name = format!("{}{suffix}", &stem[..stem.len().min(MAX_NAME_LEN - suffix.len())]);
            attempt += 1;
        }
        used.insert(name.clone());
        names.push(name);
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `assign` without prefixes, for the rules that do not depend on them.
    fn plain(tools: &[(&str, &str)]) -> Vec<String> {
        let offered: Vec<Offered> = tools.iter().map(|(server, tool)| Offered { server, prefix: None, tool }).collect();
        assign(&offered)
    }

    fn listed(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn safe_names_pass_through_unprefixed() {
        assert_eq!(plain(&[("shop", "lookup_order"), ("shop", "cancel-order")]), ["lookup_order", "cancel-order"]);
    }

    #[test]
    fn prefixes_are_applied_as_given() {
        let tools = [
            Offered { server: "shop", prefix: None, tool: "lookup_order" },
            Offered { server: "clinic", prefix: Some("clinic"), tool: "lookup_order" },
        ];
        assert_eq!(assign(&tools), ["lookup_order", "clinic__lookup_order"]);
    }

    #[test]
    fn distinct_names_of_two_servers_stay_unprefixed() {
        let (shop, clinic) = (listed(&["lookup_order"]), listed(&["book_appointment"]));
        let servers = [
            ConfiguredServer { name: "shop", prefix: None, listed: &shop },
            ConfiguredServer { name: "clinic", prefix: None, listed: &clinic },
        ];
        assert_eq!(prefix_for(&servers, 0, "lookup_order"), None);
        assert_eq!(prefix_for(&servers, 1, "book_appointment"), None);
    }

    #[test]
    fn only_the_later_of_two_equal_names_is_prefixed() {
        let (shop, other) = (listed(&["lookup_order", "cancel_order"]), listed(&["lookup.order", "refund"]));
        let servers = [
            ConfiguredServer { name: "shop", prefix: None, listed: &shop },
            ConfiguredServer { name: "other", prefix: None, listed: &other },
        ];
        assert_eq!(prefix_for(&servers, 0, "lookup_order"), None, "the earlier server keeps its names");
        assert_eq!(prefix_for(&servers, 1, "lookup.order"), Some("other"), "sanitizes to the same name");
        assert_eq!(prefix_for(&servers, 1, "refund"), None);
    }

    #[test]
    fn a_configured_prefix_applies_to_every_tool_and_frees_the_names() {
        let (shop, other) = (listed(&["lookup_order"]), listed(&["lookup_order"]));
        let servers = [
            ConfiguredServer { name: "shop", prefix: Some("s"), listed: &shop },
            ConfiguredServer { name: "other", prefix: None, listed: &other },
        ];
        assert_eq!(prefix_for(&servers, 0, "lookup_order"), Some("s"));
        assert_eq!(prefix_for(&servers, 1, "lookup_order"), None, "shop's names are prefixed, so no collision");
    }

    #[test]
    fn unsafe_characters_become_underscores() {
        let names = plain(&[("s", "orders.lookup/v2"), ("s", "größe"), ("s", "9lives"), ("s", "")]);
        assert_eq!(names, ["orders_lookup_v2", "gr__e", "_9lives", "tool"]);
        assert!(names.iter().all(|n| is_safe(n)), "{names:?}");
    }

    #[test]
    fn collisions_after_sanitizing_get_distinct_hashed_names() {
        let names = plain(&[("s", "a.b"), ("s", "a/b"), ("s", "a_b")]);
        assert_eq!(names[0], "a_b");
        assert!(names[1].starts_with("a_b_") && names[1].len() == 3 + 1 + HASH_HEX_LEN, "{}", names[1]);
        assert!(names[2].starts_with("a_b_"));
        assert_ne!(names[1], names[2]);
        assert!(names.iter().all(|n| is_safe(n)));
    }

    #[test]
    fn long_names_are_cut_with_a_stable_hash() {
        let long = "x".repeat(100);
        let other = format!("{}y", "x".repeat(99));
        let names = plain(&[("s", &long), ("s", &other)]);
        assert_eq!(names[0].len(), MAX_NAME_LEN);
        assert_eq!(names[1].len(), MAX_NAME_LEN);
        assert_ne!(names[0], names[1]);
        assert_eq!(plain(&[("s", &long)]), names[..1], "same input, same name");
        assert!(names.iter().all(|n| is_safe(n)));
    }

    #[test]
    fn hash_depends_on_the_server_too() {
        let names = plain(&[("a", "t.x"), ("b", "t.x")]);
        assert_eq!(names[0], "t_x");
        assert_ne!(names[1], with_hash("t_x", "a", "t.x"));
    }

    #[test]
    fn is_safe_checks_the_provider_rules() {
        assert!(is_safe("lookup_order"));
        assert!(is_safe("_x"));
        assert!(!is_safe("9x"));
        assert!(!is_safe("a.b"));
        assert!(!is_safe(""));
        assert!(!is_safe(&"a".repeat(65)));
    }
}

//! Stable object names and SQL identifier quoting.

/// PostgreSQL's identifier length limit (NAMEDATALEN - 1).
const MAX_IDENTIFIER_LEN: usize = 63;

/// Replication slot name for a hub: `lynq_<namespace>_<name>_<hash>`, `[a-z0-9_]`, ≤ 63 chars.
pub fn derive_slot_name(namespace: &str, name: &str) -> String {
    derive_name(namespace, name)
}

/// Publication name for a hub; the same shape as [`derive_slot_name`].
pub fn derive_publication_name(namespace: &str, name: &str) -> String {
    derive_name(namespace, name)
}

/// True when `name` is usable unquoted as a replication slot name.
pub fn is_valid_slot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IDENTIFIER_LEN
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Quote an SQL identifier: `my "t"` becomes `"my ""t"""`.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `"schema"."table"`.
pub fn qualified_table(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

fn derive_name(namespace: &str, name: &str) -> String {
    // The hash of the exact input keeps names unique when sanitising or truncating merges two.
    let hash = format!("{:016x}", fnv1a64(format!("{namespace}/{name}").as_bytes()));
    let readable = format!("{}_{}", sanitize(namespace), sanitize(name));
    // "lynq_" + readable + "_" + 16 hex digits must fit in 63 bytes.
    let room = MAX_IDENTIFIER_LEN - "lynq_".len() - 1 - hash.len();
    let readable: String = readable.chars().take(room).collect();
    format!("lynq_{readable}_{hash}")
}

fn sanitize(part: &str) -> String {
    part.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '_',
        })
        .collect()
}

/// FNV-1a: a fixed, documented hash, so names never change with the Rust version.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_valid_stable_and_distinct() {
        let a = derive_slot_name("team-a", "tenants.hub");
        assert_eq!(a, derive_slot_name("team-a", "tenants.hub"));
        assert!(a.starts_with("lynq_team_a_tenants_hub_"), "{a}");
        assert!(is_valid_slot_name(&a), "{a}");
        // Sanitising maps both to the same readable part; the hash keeps them apart.
        assert_ne!(a, derive_slot_name("team_a", "tenants-hub"));
        assert_ne!(a, derive_slot_name("team-a", "other"));
    }

    #[test]
    fn long_and_odd_names_fit_the_identifier_limit() {
        let long = "x".repeat(300);
        for (ns, name) in [(long.as_str(), long.as_str()), ("ÄÖ", "Ünïcode"), ("", "")] {
            let slot = derive_slot_name(ns, name);
            assert!(slot.len() <= 63, "{slot}");
            assert!(is_valid_slot_name(&slot), "{slot}");
            assert!(is_valid_slot_name(&derive_publication_name(ns, name)));
        }
    }

    #[test]
    fn known_hash_value_is_fixed() {
        // FNV-1a test vector: "a" hashes to af63dc4c8601ec8c.
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn quoting_doubles_embedded_quotes() {
        assert_eq!(quote_ident("my \"t\""), "\"my \"\"t\"\"\"");
        assert_eq!(qualified_table("app", "Tenants"), "\"app\".\"Tenants\"");
        assert!(!is_valid_slot_name("Bad-Name"));
        assert!(!is_valid_slot_name(&"a".repeat(64)));
    }
}

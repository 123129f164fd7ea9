//! What a run tells the server about itself: its configuration flattened into params, a
//! hash of that configuration, and the tags that say which code produced it.

use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Every leaf of a configuration as a param, nested keys joined with `.`
/// (`model.dropout = 0.25`); lists are kept whole as JSON (`class_weights = [0.2,1.0,2.5]`),
/// strings without quotes. Sorted by key.
pub fn flatten_params(config: &Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&key, child, out);
                }
            }
            Value::String(s) => out.push((prefix.to_owned(), s.clone())),
            other => out.push((prefix.to_owned(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    walk("", config, &mut out);
    out.sort();
    out
}

/// SHA-256 (hex) of the configuration in a canonical form (keys sorted at every level, no
/// whitespace), so equal configurations hash equal whatever their field order.
pub fn config_hash(config: &Value) -> String {
    fn canonical(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), canonical(v))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
            other => other.clone(),
        }
    }
    // serde_json writes object entries in map order; with `preserve_order` on, the map keeps
    // insertion order, which `canonical` made sorted.
    let text = serde_json::to_string(&canonical(config)).expect("JSON values serialise");
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// The commit checked out in the git work tree holding `dir`, if there is one.
pub fn git_commit(dir: &Path) -> Option<String> {
    let out = std::process::Command::new("git").arg("-C").arg(dir).args(["rev-parse", "HEAD"]).output().ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && commit.len() >= 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())).then_some(commit)
}

/// Tags every lits run carries: lits version, config hash and, when known, the git commit
/// (under MLflow's own tag names where it has them, so its UI shows them).
pub fn standard_tags(git_commit: Option<&str>, config_hash: &str) -> Vec<(String, String)> {
    let mut tags = vec![
        ("lits.version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ("lits.config_hash".to_owned(), config_hash.to_owned()),
        ("mlflow.source.name".to_owned(), "lits".to_owned()),
        ("mlflow.source.type".to_owned(), "LOCAL".to_owned()),
    ];
    if let Some(c) = git_commit {
        tags.push(("mlflow.source.git.commit".to_owned(), c.to_owned()));
    }
    if let Some(user) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        tags.push(("mlflow.user".to_owned(), user));
    }
    tags
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nested_config_flattens_to_dotted_params() {
        let cfg = json!({"seed": 0, "model": {"dropout": 0.25, "name": "unet"}, "class_weights": [0.2, 1.0, 2.5], "resume": null});
        let flat = flatten_params(&cfg);
        let get = |k: &str| flat.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("seed"), Some("0"));
        assert_eq!(get("model.dropout"), Some("0.25"));
        assert_eq!(get("model.name"), Some("unet"));
        assert_eq!(get("class_weights"), Some("[0.2,1.0,2.5]"));
        assert_eq!(get("resume"), Some("null"));
        assert_eq!(flat.len(), 5);
    }

    #[test]
    fn config_hash_ignores_field_order_but_not_values() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":{"x":1,"y":2}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b":{"y":2,"x":1},"a":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"a":1,"b":{"x":1,"y":3}}"#).unwrap();
        assert_eq!(config_hash(&a), config_hash(&b));
        assert_ne!(config_hash(&a), config_hash(&c));
        assert_eq!(config_hash(&a).len(), 64);
    }

    #[test]
    fn standard_tags_carry_version_hash_and_commit() {
        let tags = standard_tags(Some("0123456789abcdef0123456789abcdef01234567"), "h");
        assert!(tags.contains(&("lits.config_hash".into(), "h".into())));
        assert!(tags.iter().any(|(k, _)| k == "mlflow.source.git.commit"));
        assert!(!standard_tags(None, "h").iter().any(|(k, _)| k == "mlflow.source.git.commit"));
    }
}

//! Credentials for the tracking server, read the way MLflow's own client reads them.
//!
//! A bearer token (`MLFLOW_TRACKING_TOKEN`) wins over basic authentication
//! (`MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`). Secrets never appear in
//! `Debug` output, errors or warnings.

use std::fmt;

/// How requests to the tracking server authenticate.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// No `Authorization` header.
    #[default]
    None,
    /// `Authorization: Bearer TOKEN`.
    Bearer(String),
    /// HTTP basic authentication.
    Basic {
        /// User name (not secret, shown in `Debug`).
        username: String,
        /// Password (never shown).
        password: String,
    },
}

impl Auth {
    /// Reads `MLFLOW_TRACKING_TOKEN`, else `MLFLOW_TRACKING_USERNAME` with
    /// `MLFLOW_TRACKING_PASSWORD`; empty variables count as unset.
    pub fn from_env() -> Auth {
        Auth::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Auth::from_env`] over any variable lookup (tests pass a map).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Auth {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        if let Some(token) = get("MLFLOW_TRACKING_TOKEN") {
            return Auth::Bearer(token);
        }
        match (get("MLFLOW_TRACKING_USERNAME"), get("MLFLOW_TRACKING_PASSWORD")) {
            (Some(username), Some(password)) => Auth::Basic { username, password },
            _ => Auth::None,
        }
    }

    /// Adds the `Authorization` header, if any, to a request.
    pub(crate) fn apply(&self, req: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        match self {
            Auth::None => req,
            Auth::Bearer(token) => req.bearer_auth(token),
            Auth::Basic { username, password } => req.basic_auth(username, Some(password)),
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Auth::Basic { username, .. } => f.debug_struct("Basic").field("username", username).field("password", &"<redacted>").finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Auth {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Auth::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn token_wins_over_basic_and_empty_is_unset() {
        let all = [("MLFLOW_TRACKING_TOKEN", "tok"), ("MLFLOW_TRACKING_USERNAME", "u"), ("MLFLOW_TRACKING_PASSWORD", "p")];
        assert_eq!(from(&all), Auth::Bearer("tok".into()));
        assert_eq!(from(&all[1..]), Auth::Basic { username: "u".into(), password: "p".into() });
        assert_eq!(from(&[("MLFLOW_TRACKING_TOKEN", ""), ("MLFLOW_TRACKING_USERNAME", "u")]), Auth::None);
        assert_eq!(from(&[]), Auth::None);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let bearer = format!("{:?}", Auth::Bearer("s3cret-token".into()));
        let basic = format!("{:?}", Auth::Basic { username: "ann".into(), password: "s3cret-pw".into() });
        assert!(!bearer.contains("s3cret"), "{bearer}");
        assert!(!basic.contains("s3cret") && basic.contains("ann"), "{basic}");
    }
}

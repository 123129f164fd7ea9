//! A small blocking client for the MLflow tracking server's REST API (`/api/2.0/mlflow/...`)
//! and its artifact proxy (`/api/2.0/mlflow-artifacts/artifacts/...`).
//!
//! Every answer is classified once, here: transport failures, timeouts, HTTP 5xx and 429 are
//! [`Error::Unavailable`] (worth retrying), 401/403 are [`Error::Auth`], anything else the
//! server refuses is [`Error::Rejected`].

use std::time::Duration;

use reqwest::blocking::{RequestBuilder, Response};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Auth;
use super::error::{Error, Result};
use super::journal::{de_i64, Num};

/// MLflow's documented limits of one `runs/log-batch` call.
pub(crate) const MAX_METRICS_PER_BATCH: usize = 1000;
/// At most this many params, and as many tags, in one batch.
pub(crate) const MAX_PARAMS_TAGS_PER_BATCH: usize = 100;
/// Longest param value MLflow stores.
pub(crate) const MAX_PARAM_VALUE_LEN: usize = 6000;
/// Longest tag value MLflow stores.
pub(crate) const MAX_TAG_VALUE_LEN: usize = 8000;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
// Generous: a busy server takes seconds for a full batch, and waiting costs the trainer
// nothing (calls run on the sender's thread).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const ARTIFACT_ROUTE: &str = "api/2.0/mlflow-artifacts/artifacts";

/// A key-value pair as MLflow sends params and tags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct KeyValue {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// One metric point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Metric {
    pub key: String,
    pub value: Num,
    #[serde(deserialize_with = "de_i64")]
    pub timestamp: i64,
    #[serde(default, deserialize_with = "de_i64")]
    pub step: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Experiment {
    pub experiment_id: String,
    #[serde(default)]
    pub lifecycle_stage: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RunInfo {
    pub run_id: String,
    pub experiment_id: String,
    #[serde(default)]
    pub artifact_uri: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub lifecycle_stage: String,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub end_time: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RunData {
    #[serde(default)]
    pub params: Vec<KeyValue>,
    #[serde(default)]
    pub tags: Vec<KeyValue>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Run {
    pub info: RunInfo,
    #[serde(default)]
    pub data: RunData,
}

/// An entry of an artifact folder listing.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct FileInfo {
    pub path: String,
    #[serde(default)]
    pub is_dir: bool,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub file_size: Option<i64>,
}

fn de_opt_i64<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap(#[serde(deserialize_with = "de_i64")] i64);
    Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
}

/// Where a run's artifacts are uploaded: the server's artifact route and the run's folder
/// below it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ArtifactRoot {
    route: Url,
    prefix: String,
}

/// Splits a tracking URI into the server address and credentials written into it
/// (`http://user:pass@host`), so neither the credentials nor a query end up in messages.
pub(crate) fn parse_uri(uri: &str) -> Result<(Url, Option<Auth>)> {
    let bad = |reason: &str| Error::Uri { uri: redact_userinfo(uri), reason: reason.to_owned() };
    let mut url = Url::parse(uri.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("lits talks to MLflow tracking servers over http:// or https:// only"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    let auth = if url.username().is_empty() {
        None
    } else {
        let decode = |s: &str| percent_decode(s);
        Some(Auth::Basic { username: decode(url.username()), password: decode(url.password().unwrap_or("")) })
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok((url, auth))
}

fn redact_userinfo(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}<redacted>{}", &uri[..s + 3], &uri[at..]),
        _ => uri.to_owned(),
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Client of one tracking server (cheap to clone: the connection pool is shared).
#[derive(Clone)]
pub(crate) struct Client {
    base: Url,
    shown: String,
    auth: Auth,
    http: reqwest::blocking::Client,
}

impl Client {
    /// Credentials in the URI are used only when `auth` is [`Auth::None`].
    pub fn new(uri: &str, auth: Auth) -> Result<Client> {
        let (base, url_auth) = parse_uri(uri)?;
        let auth = match (auth, url_auth) {
            (Auth::None, Some(a)) => a,
            (a, _) => a,
        };
        let shown = base.as_str().trim_end_matches('/').to_owned();
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .user_agent(concat!("lits/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Uri { uri: shown.clone(), reason: format!("cannot set up an HTTP client: {e}") })?;
        Ok(Client { base, shown, auth, http })
    }

    /// The server address, without credentials.
    pub fn uri(&self) -> &str {
        &self.shown
    }

    fn api(&self, endpoint: &str) -> Url {
        self.base.join("api/2.0/mlflow/").and_then(|u| u.join(endpoint)).expect("static endpoint joins")
    }

    fn unavailable(&self, what: &str, message: String) -> Error {
        Error::Unavailable { uri: self.shown.clone(), what: what.to_owned(), message }
    }

    fn rejected(&self, what: &str, message: String) -> Error {
        Error::Rejected { uri: self.shown.clone(), what: what.to_owned(), message }
    }

    /// Sends a request; `Ok(None)` when MLflow says the resource does not exist.
    fn call_opt<T: DeserializeOwned>(&self, what: &str, req: RequestBuilder) -> Result<Option<T>> {
        let resp: Response = self.auth.apply(req).send().map_err(|e| self.unavailable(what, transport_message(&e)))?;
        let status = resp.status();
        let body = resp.text().map_err(|e| self.unavailable(what, transport_message(&e)))?;
        if status.is_success() {
            let text = if body.trim().is_empty() { "{}" } else { body.as_str() };
            return serde_json::from_str(text)
                .map(Some)
                .map_err(|e| self.rejected(what, format!("the answer is not MLflow's ({e}): {}", snippet(&body))));
        }
        let (code, message) = api_error(&body);
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(Error::Auth { uri: self.shown.clone(), what: what.to_owned(), status: status.as_u16() })
            }
            StatusCode::NOT_FOUND if code == "RESOURCE_DOES_NOT_EXIST" => Ok(None),
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::REQUEST_TIMEOUT => {
                Err(self.unavailable(what, format!("HTTP {}: {message}", s.as_u16())))
            }
            s => Err(self.rejected(what, format!("HTTP {}: {code}{}{message}", s.as_u16(), if code.is_empty() { "" } else { ": " }))),
        }
    }

    fn call<T: DeserializeOwned>(&self, what: &str, req: RequestBuilder) -> Result<T> {
        self.call_opt(what, req)?.ok_or_else(|| self.rejected(what, "not found".to_owned()))
    }

    fn get_api<T: DeserializeOwned>(&self, endpoint: &str, query: &[(&str, &str)]) -> Result<Option<T>> {
        let mut url = self.api(endpoint);
        url.query_pairs_mut().extend_pairs(query);
        self.call_opt(endpoint, self.http.get(url))
    }

    fn post_api<T: DeserializeOwned>(&self, endpoint: &str, body: &serde_json::Value) -> Result<T> {
        self.call(endpoint, self.http.post(self.api(endpoint)).json(body))
    }

    /// The experiment's id, created when missing.
    pub fn ensure_experiment(&self, name: &str) -> Result<String> {
        #[derive(Deserialize)]
        struct Got {
            experiment: Experiment,
        }
        #[derive(Deserialize)]
        struct Created {
            experiment_id: String,
        }
        let get = || self.get_api::<Got>("experiments/get-by-name", &[("experiment_name", name)]);
        if let Some(Got { experiment }) = get()? {
            if experiment.lifecycle_stage == "deleted" {
                return Err(self.rejected(
                    "experiments/get-by-name",
                    format!("experiment {name:?} is deleted; restore it or set another MLFLOW_EXPERIMENT_NAME"),
                ));
            }
            return Ok(experiment.experiment_id);
        }
        match self.post_api::<Created>("experiments/create", &json!({ "name": name })) {
            Ok(c) => Ok(c.experiment_id),
            // Another client may have created it between our two calls.
            Err(e @ Error::Rejected { .. }) => get()?.map(|g| g.experiment.experiment_id).ok_or(e),
            Err(e) => Err(e),
        }
    }

    pub fn create_run(&self, experiment_id: &str, run_name: &str, start_time: i64, tags: &[KeyValue]) -> Result<RunInfo> {
        #[derive(Deserialize)]
        struct Created {
            run: Run,
        }
        let body = json!({ "experiment_id": experiment_id, "run_name": run_name, "start_time": start_time, "tags": tags });
        Ok(self.post_api::<Created>("runs/create", &body)?.run.info)
    }

    pub fn get_run(&self, run_id: &str) -> Result<Option<Run>> {
        #[derive(Deserialize)]
        struct Got {
            run: Run,
        }
        Ok(self.get_api::<Got>("runs/get", &[("run_id", run_id)])?.map(|g| g.run))
    }

    /// One `runs/log-batch` call; the caller keeps within MLflow's limits.
    pub fn log_batch(&self, run_id: &str, metrics: &[Metric], params: &[KeyValue], tags: &[KeyValue]) -> Result<()> {
        debug_assert!(metrics.len() <= MAX_METRICS_PER_BATCH);
        debug_assert!(params.len() <= MAX_PARAMS_TAGS_PER_BATCH && tags.len() <= MAX_PARAMS_TAGS_PER_BATCH);
        let body = json!({ "run_id": run_id, "metrics": metrics, "params": params, "tags": tags });
        self.post_api::<serde_json::Value>("runs/log-batch", &body).map(drop)
    }

    pub fn update_run(&self, run_id: &str, status: &str, end_time: Option<i64>) -> Result<()> {
        let mut body = json!({ "run_id": run_id, "status": status });
        if let Some(t) = end_time {
            body["end_time"] = json!(t);
        }
        self.post_api::<serde_json::Value>("runs/update", &body).map(drop)
    }

    /// Every point the server holds for one metric of a run, following the pages.
    pub fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Metric>> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            metrics: Vec<Metric>,
            #[serde(default)]
            next_page_token: Option<String>,
        }
        let mut all = Vec::new();
        let mut token = None::<String>;
        loop {
            let mut query = vec![("run_id", run_id), ("metric_key", key), ("max_results", "25000")];
            if let Some(t) = token.as_deref() {
                query.push(("page_token", t));
            }
            let Some(page) = self.get_api::<Page>("metrics/get-history", &query)? else { return Ok(all) };
            all.extend(page.metrics);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(all),
            }
        }
    }

    /// Resolves a run's artifact root to the server's artifact proxy. Roots the server does
    /// not proxy (`s3://`, a local path) are refused: lits only uploads through the server.
    pub fn artifact_root(&self, artifact_uri: &str) -> Result<ArtifactRoot> {
        let refuse = || {
            self.rejected(
                "artifact upload",
                format!(
                    "the run's artifact location {artifact_uri:?} is not served by the tracking server \
                     (start it with --serve-artifacts)"
                ),
            )
        };
        let (server, prefix) = if let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") {
            match rest.strip_prefix("//") {
                Some(hosted) => {
                    let (authority, path) = hosted.split_once('/').unwrap_or((hosted, ""));
                    let server = Url::parse(&format!("{}://{authority}/", self.base.scheme())).map_err(|_| refuse())?;
                    (server, path.to_owned())
                }
                None => (self.base.clone(), rest.trim_start_matches('/').to_owned()),
            }
        } else if artifact_uri.starts_with("http://") || artifact_uri.starts_with("https://") {
            let anchor = format!("/{ARTIFACT_ROUTE}/");
            let (server, path) = artifact_uri.split_once(&anchor).ok_or_else(refuse)?;
            (Url::parse(&format!("{server}/")).map_err(|_| refuse())?, path.to_owned())
        } else {
            return Err(refuse());
        };
        let route = server.join(ARTIFACT_ROUTE).map_err(|_| refuse())?;
        Ok(ArtifactRoot { route, prefix: prefix.trim_matches('/').to_owned() })
    }

    /// Uploads one file's bytes to `rel_path` below the run's artifact root.
    pub fn upload_artifact(&self, root: &ArtifactRoot, rel_path: &str, bytes: Vec<u8>) -> Result<()> {
        let mut url = root.route.clone();
        url.path_segments_mut().expect("http url").extend(root.prefix.split('/').chain(rel_path.split('/')).filter(|s| !s.is_empty()));
        // Big weights on a slow link need longer than a JSON call.
        let timeout = CALL_TIMEOUT + Duration::from_secs(bytes.len() as u64 / 1_000_000);
        self.call::<serde_json::Value>("artifact upload", self.http.put(url).timeout(timeout).body(bytes)).map(drop)
    }

    /// The files directly in `rel_dir` below the run's artifact root (empty when missing).
    pub fn list_artifacts(&self, root: &ArtifactRoot, rel_dir: &str) -> Result<Vec<FileInfo>> {
        #[derive(Deserialize)]
        struct Listing {
            #[serde(default)]
            files: Vec<FileInfo>,
        }
        let path: Vec<&str> = root.prefix.split('/').chain(rel_dir.split('/')).filter(|s| !s.is_empty()).collect();
        let mut url = root.route.clone();
        url.query_pairs_mut().append_pair("path", &path.join("/"));
        Ok(self.call_opt::<Listing>("artifact listing", self.http.get(url))?.map_or_else(Vec::new, |l| l.files))
    }
}

/// The transport error with its causes ("connection refused", "operation timed out").
fn transport_message(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "no answer in time".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

/// MLflow's `{error_code, message}` body, or the start of whatever else came back.
fn api_error(body: &str) -> (String, String) {
    #[derive(Deserialize)]
    struct ApiError {
        #[serde(default)]
        error_code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_str::<ApiError>(body) {
        Ok(e) if !e.error_code.is_empty() || !e.message.is_empty() => (e.error_code, e.message),
        _ => (String::new(), snippet(body)),
    }
}

fn snippet(body: &str) -> String {
    let one_line = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &one_line[..i]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_credentials_move_out_of_the_address() {
        let (url, auth) = parse_uri("https://ann:p%40ss@mlflow.example.org/prefix?x=1").unwrap();
        assert_eq!(url.as_str(), "https://mlflow.example.org/prefix/");
        assert_eq!(auth, Some(Auth::Basic { username: "ann".into(), password: "p@ss".into() }));
        let (url, auth) = parse_uri("http://127.0.0.1:5000").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:5000/");
        assert_eq!(auth, None);
    }

    #[test]
    fn unusable_uris_are_refused_without_their_secrets() {
        for uri in ["file:///tmp/mlruns", "databricks", "not a uri", "http://"] {
            assert!(matches!(parse_uri(uri), Err(Error::Uri { .. })), "{uri}");
        }
        let err = parse_uri("ftp://ann:s3cret@host/").unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn artifact_roots_map_to_the_proxy_route() {
        let c = Client::new("http://127.0.0.1:5000/base", Auth::None).unwrap();
        let root = c.artifact_root("mlflow-artifacts:/1/abc/artifacts").unwrap();
        assert_eq!(root.route.as_str(), "http://127.0.0.1:5000/base/api/2.0/mlflow-artifacts/artifacts");
        assert_eq!(root.prefix, "1/abc/artifacts");
        let root = c.artifact_root("mlflow-artifacts://other:81/2/r/artifacts").unwrap();
        assert_eq!(root.route.as_str(), "http://other:81/api/2.0/mlflow-artifacts/artifacts");
        assert_eq!(root.prefix, "2/r/artifacts");
        let root = c.artifact_root("https://h/x/api/2.0/mlflow-artifacts/artifacts/3/r/artifacts").unwrap();
        assert_eq!(root.route.as_str(), "https://h/x/api/2.0/mlflow-artifacts/artifacts");
        assert_eq!(root.prefix, "3/r/artifacts");
        assert!(c.artifact_root("s3://bucket/3/r/artifacts").is_err());
    }

    #[test]
    fn int64_fields_read_from_numbers_or_strings() {
        let m: Metric = serde_json::from_str(r#"{"key":"a","value":"NaN","timestamp":"17","step":3}"#).unwrap();
        assert_eq!((m.timestamp, m.step), (17, 3));
        assert!(m.value.0.is_nan());
        let m: Metric = serde_json::from_str(r#"{"key":"a","value":1.5,"timestamp":17}"#).unwrap();
        assert_eq!(m.step, 0);
    }
}

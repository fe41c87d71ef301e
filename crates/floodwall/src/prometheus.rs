//! A small client of the Prometheus HTTP API (`/api/v1/query` and
//! `/api/v1/query_range`) over the hyper client the proxy already uses: two
//! GET endpoints and their JSON do not justify another HTTP stack. Used by
//! `floodwall report` (the period's tax) and `floodwall tune --prometheus`
//! (the in-use history).

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long one API call may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// One series: its labels and its (unix seconds, value) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The series' labels.
    pub labels: BTreeMap<String, String>,
    /// Its points, oldest first; an instant query has one.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// The value of label `name`, or "" when it has none.
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// A Prometheus server's HTTP API.
#[derive(Debug, Clone)]
pub struct Prometheus {
    base: String,
    client: Client<HttpConnector, Empty<Bytes>>,
}

/// Percent-encodes `s` as a URL query value (RFC 3986's unreserved
/// characters pass; a PromQL expression is full of the others).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn number(v: &Value) -> f64 {
    match v.as_str() {
        Some("NaN") | None => f64::NAN,
        Some("+Inf") => f64::INFINITY,
        Some("-Inf") => f64::NEG_INFINITY,
        Some(s) => s.parse().unwrap_or(f64::NAN),
    }
}

fn point(v: &Value) -> (f64, f64) {
    (v[0].as_f64().unwrap_or(f64::NAN), number(&v[1]))
}

impl Prometheus {
    /// The API of the server at `url` (`http://host:port`, optionally with
    /// a path prefix such as `/prometheus`). Only `http://`: a Prometheus
    /// behind TLS is reached through a local port-forward or proxy.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("--prometheus {url:?}: not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => anyhow::bail!(
                "--prometheus {url:?}: only http:// is supported, not {other}:// (use a port-forward)"
            ),
            None => anyhow::bail!("--prometheus {url:?}: needs http://host:port"),
        }
        if uri.authority().is_none() {
            anyhow::bail!("--prometheus {url:?}: needs a host");
        }
        if uri.query().is_some() {
            anyhow::bail!("--prometheus {url:?}: no query string, please");
        }
        Ok(Self {
            base: url.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    async fn get(&self, path_and_query: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path_and_query}", self.base);
        let req = Request::get(&url).body(Empty::new())?;
        let call = async {
            let resp = self.client.request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(TIMEOUT, call)
            .await
            .map_err(|_| anyhow::anyhow!("{}: no answer within {TIMEOUT:?}", self.base))?
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.base))?;
        let doc: Value = serde_json::from_slice(&body).map_err(|_| {
            anyhow::anyhow!(
                "{}: HTTP {status}, not the Prometheus API: {}",
                self.base,
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )
        })?;
        if doc["status"] != "success" || status != StatusCode::OK {
            anyhow::bail!(
                "Prometheus refused the query ({}): {}",
                doc["errorType"].as_str().unwrap_or("HTTP error"),
                doc["error"].as_str().unwrap_or("no message")
            );
        }
        Ok(doc["data"].clone())
    }

    /// An instant query at unix time `at`.
    pub async fn query(&self, expr: &str, at: f64) -> anyhow::Result<Vec<Series>> {
        let data = self
            .get(&format!(
                "/api/v1/query?query={}&time={at:.3}",
                encode(expr)
            ))
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n  query: {expr}"))?;
        Ok(series(&data, |s| vec![point(&s["value"])]))
    }

    /// A range query from `start` to `end` (unix seconds) every `step`.
    pub async fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> anyhow::Result<Vec<Series>> {
        let data = self
            .get(&format!(
                "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={}",
                encode(expr),
                step.as_secs_f64()
            ))
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n  query: {expr}"))?;
        Ok(series(&data, |s| {
            s["values"]
                .as_array()
                .map(|v| v.iter().map(point).collect())
                .unwrap_or_default()
        }))
    }
}

fn series(data: &Value, points: impl Fn(&Value) -> Vec<(f64, f64)>) -> Vec<Series> {
    data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| Series {
            labels: s["metric"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect(),
            points: points(s),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_are_taken() {
        assert!(Prometheus::new("http://127.0.0.1:9090").is_ok());
        assert!(Prometheus::new("http://prom.monitoring:9090/prometheus/").is_ok());
        for bad in [
            "https://p:9090",
            "p:9090",
            "http://",
            "not a url",
            "http://p:9090/?x=1",
        ] {
            assert!(Prometheus::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            encode(r#"sum(rate(x{a="b"}[5m])) > 1"#),
            "sum%28rate%28x%7Ba%3D%22b%22%7D%5B5m%5D%29%29%20%3E%201"
        );
    }
}

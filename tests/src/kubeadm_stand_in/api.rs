//! A minimal JSON client for the test API server: get, create, update,
//! merge-patch and delete, as the admin, a kubelet, or anonymously without
//! trusting the server (the first `cluster-info` fetch of discovery).

use anyhow::{Context as _, bail};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::StandInConfig;
use super::pki::Credential;

/// A client bound to one identity.
pub struct Api {
    http: reqwest::Client,
    base: String,
}

/// A failed request: the HTTP status and the server's message.
#[derive(Debug, thiserror::Error)]
#[error("{method} {path}: {status}: {message}")]
pub struct ApiFailure {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Status.
    pub status: StatusCode,
    /// The `Status` message.
    pub message: String,
}

impl Api {
    /// A client authenticating with `cred`, trusting only the cluster CA.
    pub fn new(config: &StandInConfig, cred: &Credential) -> anyhow::Result<Self> {
        let identity =
            reqwest::Identity::from_pem(format!("{}{}", cred.cert_pem, cred.key_pem).as_bytes())
                .context("loading the client credential")?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(
                config.ca_cert_pem.as_bytes(),
            )?)
            .identity(identity)
            .build()
            .context("building the API client")?;
        Ok(Self {
            http,
            base: config.api_url.clone(),
        })
    }

    /// An anonymous client that does not verify the server: discovery
    /// trusts `cluster-info` only once its JWS and CA pin check out.
    pub fn insecure_anonymous(config: &StandInConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .danger_accept_invalid_certs(true)
            .build()
            .context("building the discovery client")?;
        Ok(Self {
            http,
            base: config.api_url.clone(),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&Value, &str)>,
    ) -> Result<Value, anyhow::Error> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some((b, content_type)) = body {
            req = req
                .header("Content-Type", content_type)
                .body(serde_json::to_vec(b)?);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {}{path}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(String::from))
                .unwrap_or(text);
            return Err(ApiFailure {
                method: method.to_string(),
                path: path.to_string(),
                status,
                message,
            }
            .into());
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .with_context(|| format!("{method} {path}: response is not JSON"))
    }

    /// GET; `None` on 404.
    pub async fn get(&self, path: &str) -> anyhow::Result<Option<Value>> {
        match self.call(Method::GET, path, None).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if status_of(&e) == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// POST to a collection.
    pub async fn create(&self, collection: &str, obj: &Value) -> anyhow::Result<Value> {
        self.call(Method::POST, collection, Some((obj, "application/json")))
            .await
    }

    /// PUT an object.
    pub async fn update(&self, path: &str, obj: &Value) -> anyhow::Result<Value> {
        self.call(Method::PUT, path, Some((obj, "application/json")))
            .await
    }

    /// JSON merge patch.
    pub async fn merge_patch(&self, path: &str, patch: &Value) -> anyhow::Result<Value> {
        self.call(
            Method::PATCH,
            path,
            Some((patch, "application/merge-patch+json")),
        )
        .await
    }

    /// DELETE; `false` when it was not there.
    pub async fn delete(&self, path: &str) -> anyhow::Result<bool> {
        match self.call(Method::DELETE, path, None).await {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(StatusCode::NOT_FOUND) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates `obj` in `collection`, or replaces it at `path` when it
    /// exists.
    pub async fn create_or_replace(
        &self,
        collection: &str,
        path: &str,
        obj: &Value,
    ) -> anyhow::Result<Value> {
        match self.create(collection, obj).await {
            Err(e) if status_of(&e) == Some(StatusCode::CONFLICT) => {
                let Some(mut current) = self.get(path).await? else {
                    bail!("{path} vanished while being replaced");
                };
                let mut obj = obj.clone();
                obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].take();
                self.update(path, &obj).await
            }
            other => other,
        }
    }
}

/// The HTTP status of a failed call, if it got one.
pub fn status_of(e: &anyhow::Error) -> Option<StatusCode> {
    e.downcast_ref::<ApiFailure>().map(|f| f.status)
}

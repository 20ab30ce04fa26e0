//! Reading from the network (and `file://` mirrors) with bounds: small
//! files (checksums, IMDS answers) are read up to a limit, never whole
//! whatever their size; binaries stream to a temporary file on disk while
//! being hashed, so a large or hostile download never sits in memory and
//! nothing is installed unless its digest matches.
//!
//! Errors never carry the URL (it may hold credentials): callers name it,
//! redacted.

use std::io::{self, Read as _, Write as _};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Connection time-out for every request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-request time-out for small files.
pub const SMALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Whole-request time-out for binaries (a kubelet is ~100 MiB).
pub const LARGE_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// 404, or no such `file://` file.
    NotFound,
    /// Another non-success HTTP status.
    Status(u16),
    /// More than the limit (in bytes).
    TooLarge(u64),
    /// No answer at all (connection, TLS, time-out, local I/O).
    Unreachable(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::NotFound => f.write_str("not found"),
            FetchError::Status(s) => write!(f, "HTTP {s}"),
            FetchError::TooLarge(limit) => write!(f, "larger than {limit} bytes"),
            FetchError::Unreachable(why) => f.write_str(why),
        }
    }
}

/// An error and its causes on one line (reqwest's own message alone is
/// often just "error sending request").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
    }
    parts.join(": ")
}

fn unreachable(e: reqwest::Error) -> FetchError {
    FetchError::Unreachable(error_chain(&e.without_url()))
}

/// The body of `response`, read up to `limit` bytes (a longer one is
/// refused as soon as it passes the limit).
pub async fn body_limited(
    mut response: reqwest::Response,
    limit: u64,
) -> Result<Vec<u8>, FetchError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        if u64::try_from(body.len() + chunk.len()).unwrap_or(u64::MAX) > limit {
            return Err(FetchError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn client(timeout: Duration) -> Result<reqwest::Client, FetchError> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .build()
        .map_err(unreachable)
}

async fn get(url: &str, timeout: Duration) -> Result<reqwest::Response, FetchError> {
    let resp = client(timeout)?
        .get(url)
        .send()
        .await
        .map_err(unreachable)?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(FetchError::NotFound);
    }
    if !status.is_success() {
        return Err(FetchError::Status(status.as_u16()));
    }
    Ok(resp)
}

/// A small file over `http(s)://` or `file://`, at most `limit` bytes.
pub async fn fetch_limited(url: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
    if let Some(local) = url.strip_prefix("file://") {
        let local = local.to_string();
        return tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&local).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => FetchError::NotFound,
                _ => FetchError::Unreachable(e.to_string()),
            })?;
            let mut body = Vec::new();
            file.take(limit.saturating_add(1))
                .read_to_end(&mut body)
                .map_err(|e| FetchError::Unreachable(e.to_string()))?;
            if u64::try_from(body.len()).unwrap_or(u64::MAX) > limit {
                return Err(FetchError::TooLarge(limit));
            }
            Ok(body)
        })
        .await
        .map_err(|e| FetchError::Unreachable(e.to_string()))?;
    }
    body_limited(get(url, SMALL_TIMEOUT).await?, limit).await
}

/// A downloaded file, streamed to a private temporary file while hashed.
#[derive(Debug)]
pub struct Downloaded {
    /// The temporary file (removed when dropped).
    pub file: tempfile::NamedTempFile,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
}

/// Streams `url` (`http(s)://` or `file://`) into a temporary file in the
/// system's temp directory (not the host root: a failed or rejected
/// download leaves the host untouched), hashing as it goes.
pub async fn download(url: &str) -> Result<Downloaded, FetchError> {
    let mut file = tempfile::Builder::new()
        .prefix(".hpk8s-download-")
        .tempfile()
        .map_err(|e| FetchError::Unreachable(format!("temporary file: {e}")))?;
    let mut hasher = Sha256::new();
    let write_err = |e: io::Error| FetchError::Unreachable(format!("temporary file: {e}"));
    if let Some(local) = url.strip_prefix("file://") {
        let local = local.to_string();
        let (file, hasher) = tokio::task::spawn_blocking(move || {
            let mut src = std::fs::File::open(&local).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => FetchError::NotFound,
                _ => FetchError::Unreachable(e.to_string()),
            })?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = src
                    .read(&mut buf)
                    .map_err(|e| FetchError::Unreachable(e.to_string()))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n]).map_err(write_err)?;
            }
            Ok::<_, FetchError>((file, hasher))
        })
        .await
        .map_err(|e| FetchError::Unreachable(e.to_string()))??;
        return finish(file, hasher);
    }
    let mut resp = get(url, LARGE_TIMEOUT).await?;
    while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(write_err)?;
    }
    finish(file, hasher)
}

fn finish(file: tempfile::NamedTempFile, hasher: Sha256) -> Result<Downloaded, FetchError> {
    file.as_file()
        .sync_all()
        .map_err(|e| FetchError::Unreachable(format!("temporary file: {e}")))?;
    Ok(Downloaded {
        file,
        sha256: hex::encode(hasher.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_files_are_bounded_and_streamed() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("a.sha256");
        std::fs::write(&small, "x".repeat(100)).unwrap();
        let url = format!("file://{}", small.display());
        assert_eq!(fetch_limited(&url, 100).await.unwrap().len(), 100);
        assert_eq!(fetch_limited(&url, 99).await, Err(FetchError::TooLarge(99)));
        let missing = format!("file://{}", dir.path().join("nope").display());
        assert_eq!(fetch_limited(&missing, 10).await, Err(FetchError::NotFound));
        let got = download(&url).await.unwrap();
        assert_eq!(got.sha256, hex::encode(Sha256::digest("x".repeat(100))));
        assert_eq!(std::fs::read(got.file.path()).unwrap().len(), 100);
    }
}

//! URLs that may carry credentials (`https://user:password@mirror/…`).

/// Removes `user:password@` from a URL so that credentials never reach a
/// plan or a log.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://<redacted>@{host}{path}"),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

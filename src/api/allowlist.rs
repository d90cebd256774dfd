//! Where result files may be downloaded from: `https` (or `http` when the
//! API itself is `http`) on an allowed host. A refused URL is never fetched.

use url::Url;

use super::error::ApiError;
use crate::config::ApiConfig;

/// Which hosts result files may come from.
#[derive(Debug, Clone)]
pub(crate) struct DownloadPolicy {
    allowed: Vec<String>,
    allow_http: bool,
}

impl DownloadPolicy {
    /// The policy for a config: the allowlist (default: the API host and
    /// `*.amazonaws.com`); plain http only when `base_url` is http.
    pub(crate) fn new(cfg: &ApiConfig, base: &Url) -> Self {
        let allowed = if cfg.download_allowed_hosts.is_empty() {
            vec![
                base.host_str().unwrap_or_default().to_ascii_lowercase(),
                "*.amazonaws.com".into(),
            ]
        } else {
            cfg.download_allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect()
        };
        Self {
            allowed,
            allow_http: base.scheme() == "http",
        }
    }

    /// Checks a URL; the error names the host, never the query (which holds
    /// the pre-signed credentials).
    pub(crate) fn check(&self, url: &str) -> Result<Url, ApiError> {
        let u = Url::parse(url).map_err(|_| ApiError::RefusedUrl("not an absolute URL".into()))?;
        let host = u.host_str().unwrap_or_default().to_ascii_lowercase();
        match u.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => return Err(ApiError::RefusedUrl(format!("scheme {other} on host {host}"))),
        }
        let ok = self.allowed.iter().any(|a| match a.strip_prefix("*.") {
            Some(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix) && host[..host.len() - suffix.len()].ends_with('.')
            }
            None => host == *a,
        });
        if ok {
            Ok(u)
        } else {
            Err(ApiError::RefusedUrl(format!(
                "host {host} is not in api.download_allowed_hosts"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(base: &str, hosts: &[&str]) -> DownloadPolicy {
        let cfg = ApiConfig {
            base_url: base.into(),
            download_allowed_hosts: hosts.iter().map(|s| s.to_string()).collect(),
            ..ApiConfig::default()
        };
        DownloadPolicy::new(&cfg, &Url::parse(base).unwrap())
    }

    #[test]
    fn download_allowlist() {
        let p = policy("https://api.crustdata.com", &[]);
        assert!(p.check("https://bucket.s3.amazonaws.com/x.gz?sig=1").is_ok());
        assert!(p.check("https://api.crustdata.com/files/x").is_ok());
        assert!(p.check("http://bucket.s3.amazonaws.com/x.gz").is_err());
        assert!(p.check("https://evil.com/x").is_err());
        assert!(p.check("https://amazonaws.com.evil.com/x").is_err());
        assert!(p.check("https://evilamazonaws.com/x").is_err());
        assert!(p.check("file:///etc/passwd").is_err());
        let local = policy("http://127.0.0.1:9000", &[]);
        assert!(local.check("http://127.0.0.1:9000/_files/a").is_ok());
        assert!(local.check("http://169.254.169.254/latest").is_err());
        let custom = policy("https://api.crustdata.com", &["files.example.com"]);
        assert!(custom.check("https://files.example.com/a").is_ok());
        assert!(custom.check("https://bucket.s3.amazonaws.com/a").is_err());
        let err = p.check("https://evil.com/x?X-Amz-Signature=secret").unwrap_err();
        assert!(!err.to_string().contains("secret"));
    }
}

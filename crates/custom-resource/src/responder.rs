//! The PUT of the response document to CloudFormation's pre-signed `ResponseURL`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use std::time::Duration;
use tokio::{sync::OnceCell, time::Instant};

#[derive(Debug, Clone)]
pub struct ResponderConfig {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    /// Bound on one attempt, from sending the request to reading the status and body.
    pub attempt_timeout: Duration,
}

impl Default for ResponderConfig {
    fn default() -> Self {
        Self {
            attempts: 5,
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error("the ResponseURL is not a valid http(s) URL")]
    BadUrl,
    #[error("no TLS root certificates could be loaded: {0}")]
    Tls(String),
    #[error("CloudFormation's ResponseURL refused the response with HTTP {status}: {body}")]
    Rejected { status: u16, body: String },
    #[error("gave up after {attempts} attempts; last error: {last}")]
    Exhausted { attempts: u32, last: String },
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Sends response documents. Built once per process; the TLS client is created on first use
/// so that loading the root store does not lengthen cold start.
#[derive(Debug)]
pub struct HttpResponder {
    config: ResponderConfig,
    client: OnceCell<HttpsClient>,
}

impl HttpResponder {
    pub fn new(config: ResponderConfig) -> Self {
        Self {
            config,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<&HttpsClient, ResponseError> {
        self.client
            .get_or_try_init(|| async {
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                http.set_connect_timeout(Some(self.config.connect_timeout));
                http.set_nodelay(true);
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
                    .map_err(|e| ResponseError::Tls(e.to_string()))?
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http);
                Ok(Client::builder(TokioExecutor::new()).build(https))
            })
            .await
    }

    /// PUT `body` to `url`, retrying transient failures with exponential backoff, never past
    /// `deadline`. A 4xx other than 408/429 is final: a pre-signed URL that was refused once
    /// (expired, bad signature) will be refused again.
    pub async fn send(
        &self,
        url: &str,
        body: Vec<u8>,
        deadline: Instant,
    ) -> Result<u32, ResponseError> {
        let uri: http::Uri = url.parse().map_err(|_| ResponseError::BadUrl)?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(ResponseError::BadUrl);
        }
        let client = self.client().await?;
        let body = Bytes::from(body);
        let mut backoff = self.config.first_backoff;
        let mut last = String::from("no attempt made before the deadline");
        for attempt in 1..=self.config.attempts {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            // An empty Content-Type: the URL was pre-signed without one.
            let request = http::Request::put(uri.clone())
                .header(http::header::CONTENT_TYPE, "")
                .header(http::header::CONTENT_LENGTH, body.len())
                .body(Full::new(body.clone()))
                .map_err(|_| ResponseError::BadUrl)?;
            let timeout = self.config.attempt_timeout.min(remaining);
            let result = tokio::time::timeout(timeout, async {
                let response = client
                    .request(request)
                    .await
                    .map_err(|e| format!("{e:?}"))?;
                let status = response.status();
                let text = response
                    .into_body()
                    .collect()
                    .await
                    .map(|b| {
                        String::from_utf8_lossy(&b.to_bytes())
                            .chars()
                            .take(512)
                            .collect::<String>()
                    })
                    .unwrap_or_default();
                Ok::<_, String>((status, text))
            })
            .await;
            match result {
                Ok(Ok((status, _))) if status.is_success() => {
                    tracing::info!(
                        attempt,
                        status = status.as_u16(),
                        "response delivered to CloudFormation"
                    );
                    return Ok(attempt);
                }
                Ok(Ok((status, text)))
                    if status.is_client_error()
                        && status != http::StatusCode::REQUEST_TIMEOUT
                        && status != http::StatusCode::TOO_MANY_REQUESTS =>
                {
                    return Err(ResponseError::Rejected {
                        status: status.as_u16(),
                        body: text,
                    });
                }
                Ok(Ok((status, text))) => last = format!("HTTP {}: {text}", status.as_u16()),
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("no answer within {} ms", timeout.as_millis()),
            }
            tracing::warn!(attempt, error = %last, "response PUT failed; will retry");
            if attempt < self.config.attempts {
                let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
                backoff = (backoff * 2).min(self.config.max_backoff);
            }
        }
        Err(ResponseError::Exhausted {
            attempts: self.config.attempts,
            last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    /// A one-purpose HTTP server: answers the n-th request with `statuses[n]` (a status of 0
    /// means "accept and never answer") and records every request it read.
    async fn server(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/cfn/response?X-Amz-Signature=abc",
            listener.local_addr().unwrap()
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            for status in statuses {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 16384];
                let mut read = 0;
                // Read headers and the body announced by Content-Length.
                loop {
                    let n = sock.read(&mut buf[read..]).await.unwrap();
                    read += n;
                    let text = String::from_utf8_lossy(&buf[..read]).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if read >= end + 4 + len || n == 0 {
                            log.lock().unwrap().push(text);
                            break;
                        }
                    }
                }
                if status == 0 {
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        drop(sock);
                    });
                    continue;
                }
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
                sock.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        (url, seen)
    }

    fn fast() -> ResponderConfig {
        ResponderConfig {
            attempts: 4,
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            connect_timeout: Duration::from_millis(500),
            attempt_timeout: Duration::from_millis(300),
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn put_with_empty_content_type_and_exact_body() {
        let (url, seen) = server(vec![200]).await;
        let attempts = HttpResponder::new(fast())
            .send(&url, b"{\"Status\":\"SUCCESS\"}".to_vec(), soon())
            .await
            .unwrap();
        assert_eq!(attempts, 1);
        let req = seen.lock().unwrap()[0].clone();
        assert!(
            req.starts_with("PUT /cfn/response?X-Amz-Signature=abc HTTP/1.1"),
            "{req}"
        );
        assert!(
            req.to_ascii_lowercase().contains("content-type: \r\n"),
            "{req}"
        );
        assert!(req.ends_with("{\"Status\":\"SUCCESS\"}"), "{req}");
    }

    #[tokio::test]
    async fn retries_server_errors_and_timeouts_then_succeeds() {
        let (url, seen) = server(vec![500, 0, 503, 200]).await;
        let attempts = HttpResponder::new(fast())
            .send(&url, b"{}".to_vec(), soon())
            .await
            .unwrap();
        assert_eq!(attempts, 4);
        assert_eq!(seen.lock().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn a_refusal_is_final() {
        let (url, seen) = server(vec![403, 200]).await;
        let err = HttpResponder::new(fast())
            .send(&url, b"{}".to_vec(), soon())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ResponseError::Rejected { status: 403, .. }),
            "{err}"
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn gives_up_after_the_bounded_attempts() {
        let (url, _) = server(vec![500, 500, 500, 500, 500]).await;
        let err = HttpResponder::new(fast())
            .send(&url, b"{}".to_vec(), soon())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ResponseError::Exhausted { attempts: 4, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("HTTP 500"), "{err}");
    }

    #[tokio::test]
    async fn connection_refused_is_retried_and_reported() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        drop(listener);
        let err = HttpResponder::new(fast())
            .send(&url, b"{}".to_vec(), soon())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ResponseError::Exhausted { attempts: 4, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn never_runs_past_the_deadline() {
        let (url, _) = server(vec![0, 0, 0, 0]).await;
        let start = Instant::now();
        let err = HttpResponder::new(fast())
            .send(&url, b"{}".to_vec(), start + Duration::from_millis(350))
            .await
            .unwrap_err();
        assert!(matches!(err, ResponseError::Exhausted { .. }), "{err}");
        // The server would hold each attempt for 60 s; the deadline must cut that short.
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn rejects_non_http_urls() {
        let err = HttpResponder::new(fast())
            .send("ftp://x/y", vec![], soon())
            .await
            .unwrap_err();
        assert!(matches!(err, ResponseError::BadUrl));
    }
}

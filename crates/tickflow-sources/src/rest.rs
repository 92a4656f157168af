//! What every vendor REST client shares: one token bucket per API key, 429 and `Retry-After`
//! honoured by every caller of that key at once (no retry storm), capped backoff with jitter on
//! server and connection errors, refusals (bad key, no entitlement) told apart from failures
//! worth retrying, and paging that neither drops nor doubles a row on a page edge.
//!
//! Each retry is counted in `tickflow_rest_retries_total{source, reason}` with `reason` one of
//! `rate_limited`, `server`, `connection`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tickflow_core::retry::backoff;
use tickflow_model::{Event, UnixNanos};
use tokio::time::Instant;

/// Requests allowed per minute for one key, with a burst of the same size.
#[derive(Debug)]
pub struct Limiter {
    per_minute: u32,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// A 429 told every caller of the key to wait until then.
    held_until: Option<Instant>,
}

impl Limiter {
    /// A full bucket of `per_minute` tokens refilled evenly over the minute.
    pub fn new(per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        Self {
            per_minute,
            state: Mutex::new(Bucket {
                tokens: f64::from(per_minute),
                at: Instant::now(),
                held_until: None,
            }),
        }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut b = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let rate = f64::from(self.per_minute) / 60.0;
                b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate)
                    .min(f64::from(self.per_minute));
                b.at = now;
                match b.held_until {
                    Some(until) if until > now => until - now,
                    _ if b.tokens >= 1.0 => {
                        b.tokens -= 1.0;
                        return;
                    }
                    _ => Duration::from_secs_f64((1.0 - b.tokens) / rate),
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Makes every caller wait until `until`, and empties the bucket: the vendor said so.
    pub fn hold(&self, until: Instant) {
        let mut b = self.state.lock().unwrap_or_else(|e| e.into_inner());
        b.held_until = Some(b.held_until.map_or(until, |h| h.max(until)));
        b.tokens = 0.0;
        b.at = until;
    }
}

/// The limiter of `key` at `host`: sources sharing a key share its bucket, as the vendor
/// counts them together. The first caller's rate sets it.
pub fn limiter(host: &str, key: &str, per_minute: u32) -> Arc<Limiter> {
    static LIMITERS: OnceLock<Mutex<HashMap<u64, Arc<Limiter>>>> = OnceLock::new();
    let id = tickflow_core::hash::stable_hash(&[host.as_bytes(), key.as_bytes()], &[]);
    let mut all = LIMITERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    Arc::clone(
        all.entry(id)
            .or_insert_with(|| Arc::new(Limiter::new(per_minute))),
    )
}

/// How a client retries.
#[derive(Clone, Debug)]
pub struct Retry {
    /// Tries per request on server or connection errors before giving up on it.
    pub attempts: u32,
    /// The longest backoff between those tries.
    pub max_backoff: Duration,
    /// The wait after a 429 that says nothing of when to come back (Polygon sends no header).
    pub rate_limited_wait: Duration,
    /// The longest wait a 429 may ask for; a longer one fails the request.
    pub max_rate_limited_wait: Duration,
    /// 429s in a row a request takes before it fails.
    pub rate_limited_attempts: u32,
    /// How long one request may take, answer included, before it counts as a connection
    /// error: a network partition that holds every byte is noticed then.
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 5,
            max_backoff: Duration::from_secs(30),
            rate_limited_wait: Duration::from_secs(60),
            max_rate_limited_wait: Duration::from_secs(15 * 60),
            rate_limited_attempts: 20,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Why a request gave no body.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The vendor refused the key or the plan (401, 403): retrying cannot help.
    #[error("{url} refused the request ({status}): {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    /// The vendor answered that the request is wrong (another 4xx).
    #[error("{url} answered {status}: {message}")]
    Failed {
        url: String,
        status: u16,
        message: String,
    },
    /// Server or connection errors outlasted the retries.
    #[error("{url}: gave up after {attempts} tries: {last}")]
    Exhausted {
        url: String,
        attempts: u32,
        last: String,
    },
    /// The body is not what the vendor documents.
    #[error("{url}: unreadable answer: {error}")]
    Unreadable { url: String, error: String },
}

impl RestError {
    /// Whether the configuration is at fault (a bad key or plan), so the source should stop.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }

    /// Whether asking again later may succeed: server or connection errors, or a rate
    /// limit, that outlasted the retries.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Exhausted { .. })
    }
}

/// An HTTP client for one vendor key: its headers, its limiter and its retries.
#[derive(Clone, Debug)]
pub struct Rest {
    client: reqwest::Client,
    headers: HeaderMap,
    limiter: Arc<Limiter>,
    retry: Retry,
    source: Arc<str>,
}

impl Rest {
    /// A client sending `headers` (keys included: they never appear in URLs or logs) on
    /// every request, paced by `limiter`.
    ///
    /// # Errors
    /// A header is not valid HTTP, or the TLS set-up failed.
    pub fn new(
        source: &str,
        headers: &[(&str, &str)],
        limiter: Arc<Limiter>,
        retry: Retry,
    ) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let mut value =
                HeaderValue::from_str(value).map_err(|_| format!("header {name}: not valid"))?;
            value.set_sensitive(true);
            map.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .timeout(retry.timeout)
            .user_agent(concat!("tickflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            headers: map,
            limiter,
            retry,
            source: Arc::from(source),
        })
    }

    /// GETs `url` and returns its body, retrying as the module docs say.
    ///
    /// # Errors
    /// See [`RestError`].
    pub async fn get(&self, url: &str) -> Result<String, RestError> {
        let mut delays = backoff(self.retry.max_backoff);
        let (mut failures, mut limited) = (0u32, 0u32);
        loop {
            self.limiter.acquire().await;
            let sent = self
                .client
                .get(url)
                .headers(self.headers.clone())
                .send()
                .await;
            let (reason, error) = match sent {
                Err(e) => ("connection", e.without_url().to_string()),
                Ok(response) => {
                    let status = response.status();
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        limited += 1;
                        let wait = rate_limit_wait(response.headers())
                            .unwrap_or(self.retry.rate_limited_wait);
                        if wait > self.retry.max_rate_limited_wait
                            || limited > self.retry.rate_limited_attempts
                        {
                            return Err(RestError::Exhausted {
                                url: redact(url),
                                attempts: limited,
                                last: format!("429, asked to wait {wait:?}"),
                            });
                        }
                        self.count("rate_limited");
                        tracing::warn!(source = %self.source, url = redact(url), wait = ?wait, "rate limited; every request with this key waits");
                        self.limiter.hold(Instant::now() + wait);
                        continue;
                    }
                    let body = response.text().await;
                    match body {
                        Ok(body) if status.is_success() => return Ok(body),
                        Ok(body) if retried(status) => ("server", format!("{status}: {body}")),
                        Ok(body) => {
                            let message = vendor_message(&body);
                            let url = redact(url);
                            let status = status.as_u16();
                            return Err(if matches!(status, 401 | 403) {
                                RestError::Refused {
                                    url,
                                    status,
                                    message,
                                }
                            } else {
                                RestError::Failed {
                                    url,
                                    status,
                                    message,
                                }
                            });
                        }
                        Err(e) => ("connection", e.without_url().to_string()),
                    }
                }
            };
            failures += 1;
            if failures >= self.retry.attempts {
                return Err(RestError::Exhausted {
                    url: redact(url),
                    attempts: failures,
                    last: error,
                });
            }
            self.count(reason);
            tracing::warn!(source = %self.source, url = redact(url), reason, error, "request failed; retrying");
            tokio::time::sleep(delays.next().unwrap_or(self.retry.max_backoff)).await;
        }
    }

    fn count(&self, reason: &'static str) {
        metrics::counter!("tickflow_rest_retries_total", "source" => self.source.to_string(), "reason" => reason)
            .increment(1);
    }
}

/// `url` with the values of query parameters that look like credentials (`apikey`, `token`,
/// `secret`, `signature`) replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((name, _))
                if ["key", "token", "secret", "sig", "password"]
                    .iter()
                    .any(|s| name.to_ascii_lowercase().contains(s)) =>
            {
                format!("{name}=***")
            }
            _ => p.to_string(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

/// Statuses the vendors' own clients retry.
fn retried(status: StatusCode) -> bool {
    status.is_server_error() || matches!(status.as_u16(), 408 | 413 | 499)
}

/// How long a 429 asks to wait: `Retry-After` in seconds or as an HTTP date, else Alpaca's
/// `X-RateLimit-Reset` (Unix seconds).
fn rate_limit_wait(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let until = |t: SystemTime| t.duration_since(SystemTime::now()).unwrap_or_default();
    if let Some(after) = text("retry-after") {
        return match after.trim().parse::<u64>() {
            Ok(secs) => Some(Duration::from_secs(secs)),
            Err(_) => httpdate::parse_http_date(after).ok().map(until),
        };
    }
    let reset = text("x-ratelimit-reset")?.trim().parse::<u64>().ok()?;
    Some(until(SystemTime::UNIX_EPOCH + Duration::from_secs(reset)))
}

/// The vendor's explanation in an error body: `error` (Polygon), `message` (Alpaca,
/// Coinbase), `msg` (Binance), or the body itself, shortened.
fn vendor_message(body: &str) -> String {
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    json.as_ref()
        .and_then(|j| {
            j.get("error")
                .or_else(|| j.get("message"))
                .or_else(|| j.get("msg"))
        })
        .and_then(|m| m.as_str())
        .map_or_else(
            || body.chars().take(300).collect(),
            std::string::ToString::to_string,
        )
}

/// One page of a vendor's answer: its events in time order, and the URL of the next page.
#[derive(Debug, Default)]
pub struct Page {
    pub events: Vec<Event>,
    pub next: Option<String>,
}

/// Drops what a page repeats from the page before: vendors' cursors are meant to be
/// exclusive, but a row on the edge must never be stored twice, and several trades can share
/// a timestamp, so the keys seen at the latest time are kept.
#[derive(Debug, Default)]
pub struct Edge {
    latest: HashMap<tickflow_model::Symbol, (UnixNanos, Vec<String>)>,
}

impl Edge {
    /// Keeps the events of `page` not already passed; returns how many were repeats.
    pub fn keep_new(&mut self, events: &mut Vec<Event>) -> usize {
        let before = events.len();
        events.retain(|e| {
            let key = match e {
                Event::Trade(t) => t
                    .trade_id
                    .as_ref()
                    .map_or_else(|| t.price.to_string(), |id| id.to_string()),
                Event::Quote(q) => format!("{}/{}", q.bid, q.ask),
                Event::Bar(b) => b.bar.interval.as_str().to_string(),
            };
            let ts = e.ts_event();
            match self.latest.get_mut(e.symbol()) {
                Some((at, _)) if ts < *at => false,
                Some((at, keys)) if ts == *at => {
                    if keys.contains(&key) {
                        false
                    } else {
                        keys.push(key);
                        true
                    }
                }
                _ => {
                    self.latest.insert(e.symbol().clone(), (ts, vec![key]));
                    true
                }
            }
        });
        before - events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bucket_paces_a_key_and_a_429_holds_every_caller() {
        let limiter = Limiter::new(5);
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the burst is the minute's worth"
        );
        limiter.acquire().await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(12),
            "then one every 12 s"
        );
        limiter.hold(Instant::now() + Duration::from_secs(60));
        limiter.acquire().await;
        assert!(
            start.elapsed() >= Duration::from_secs(72),
            "held for the vendor's minute: {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_429_says_how_long_in_seconds_a_date_or_a_reset_time() {
        let mut h = HeaderMap::new();
        assert_eq!(rate_limit_wait(&h), None);
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(rate_limit_wait(&h), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(90));
        h.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let wait = rate_limit_wait(&h).unwrap();
        assert!((Duration::from_secs(85)..=Duration::from_secs(90)).contains(&wait));
        h.remove("retry-after");
        let reset = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 30;
        h.insert(
            "x-ratelimit-reset",
            HeaderValue::from_str(&reset.to_string()).unwrap(),
        );
        let wait = rate_limit_wait(&h).unwrap();
        assert!((Duration::from_secs(28)..=Duration::from_secs(30)).contains(&wait));
    }

    #[test]
    fn keys_in_a_query_never_show() {
        assert_eq!(
            redact("https://h/query?function=GLOBAL_QUOTE&symbol=IBM&apikey=SECRET&x_token=T"),
            "https://h/query?function=GLOBAL_QUOTE&symbol=IBM&apikey=***&x_token=***"
        );
        assert_eq!(redact("https://h/v2/aggs"), "https://h/v2/aggs");
    }

    #[test]
    fn vendor_messages_come_from_their_error_fields() {
        assert_eq!(
            vendor_message(r#"{"status":"ERROR","request_id":"x","error":"Unknown API Key"}"#),
            "Unknown API Key"
        );
        assert_eq!(
            vendor_message(r#"{"code":40310000,"message":"access key verification failed"}"#),
            "access key verification failed"
        );
        assert_eq!(vendor_message("Forbidden"), "Forbidden");
    }
}

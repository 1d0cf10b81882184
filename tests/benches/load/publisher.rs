//! The backends: a few HTTP/1.1 keep-alive connections sending `POST /v1/publish` on a
//! fixed schedule, publish `i` due at `start + i / rate`, and noting the instant each
//! request was written.
//!
//! Publish `i` goes over connection `i % publishers`, one request at a time per connection
//! (no pipelining, as a backend's HTTP client would do). A connection that falls behind
//! sends its late publishes at once, so the achieved rate says whether the server kept up.
//! Since each connection waits for an answer before its next request, the rate a few
//! connections can offer is bounded by the answer time: 4 of them reached about 2,400/s
//! against a busy floor. Raise `--publishers` to offer more.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::workload::{to_index, Workload};

/// Failure messages kept for the report; the rest are only counted.
const KEPT_FAILURES: usize = 5;

/// Largest response accepted: `/v1/publish` echoes the tags, a few hundred bytes.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// What the publish phase did.
#[derive(Debug, Default)]
pub struct PublishLog {
    /// For each publish, when its request was written if the server answered 200;
    /// `None` if it failed (it may or may not have been routed).
    pub sent: Vec<Option<Instant>>,
    /// Publishes that got no 200 answer.
    pub failed: u64,
    /// The first few failures.
    pub failures: Vec<String>,
    /// From the first request written to the last answer read.
    pub elapsed: Duration,
}

/// Sends every publish of `workload` to `addr` on schedule and returns once all have been
/// answered.
pub async fn run(addr: SocketAddr, workload: Arc<Workload>) -> Result<PublishLog> {
    let shape = workload.shape;
    let total = workload.publishes.len();
    let interval = Duration::from_secs(1) / shape.rate.max(1);
    let publishers = to_index(shape.publishers);

    // The schedule starts a little ahead so that every connection is open by its first slot.
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(publishers);
    for lane in 0..publishers {
        let workload = Arc::clone(&workload);
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            let mut conn: Option<HttpConn> = None;
            for i in (lane..total).step_by(publishers) {
                let due = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
                tokio::time::sleep_until(due.into()).await;
                let result = publish_one(addr, &mut conn, &workload, i).await;
                if result.is_err() {
                    // The connection may be half-way through a response: start afresh.
                    conn = None;
                }
                results.push((i, result, Instant::now()));
            }
            results
        }));
    }

    let mut log = PublishLog {
        sent: vec![None; total],
        ..PublishLog::default()
    };
    let mut first_sent: Option<Instant> = None;
    let mut last_answer = start;
    for task in tasks {
        for (i, result, answered) in task.await.context("a publisher task panicked")? {
            last_answer = last_answer.max(answered);
            match result {
                Ok(sent) => {
                    first_sent = Some(first_sent.map_or(sent, |f| f.min(sent)));
                    log.sent[i] = Some(sent);
                }
                Err(err) => {
                    log.failed += 1;
                    if log.failures.len() < KEPT_FAILURES {
                        log.failures.push(format!("publish {i}: {err:#}"));
                    }
                }
            }
        }
    }
    log.elapsed = last_answer.saturating_duration_since(first_sent.unwrap_or(start));
    Ok(log)
}

/// Sends publish `i`, opening the connection if needed; returns when the request was
/// written.
async fn publish_one(
    addr: SocketAddr,
    conn: &mut Option<HttpConn>,
    workload: &Workload,
    i: usize,
) -> Result<Instant> {
    let publish = &workload.publishes[i];
    let tags: Vec<&str> = publish
        .tags
        .iter()
        .map(|&t| workload.tag_names[to_index(t)].as_str())
        .collect();
    let body = json!({"author": Workload::user_name(publish.author), "tags": tags}).to_string();

    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(HttpConn::open(addr).await?),
    };
    let (sent, status, response) = conn.post("/v1/publish", &body).await?;
    if status != 200 {
        bail!("status {status}: {response}");
    }
    Ok(sent)
}

/// One HTTP/1.1 keep-alive connection.
pub struct HttpConn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    host: String,
}

impl HttpConn {
    /// Opens a connection to `addr`.
    pub async fn open(addr: SocketAddr) -> Result<HttpConn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true).context("set TCP_NODELAY")?;
        let (read, writer) = stream.into_split();
        Ok(HttpConn {
            reader: BufReader::new(read),
            writer,
            host: addr.to_string(),
        })
    }

    /// Posts a JSON body and reads the answer: the instant the request was written (the
    /// publish cannot have been routed before it), the status and the body.
    pub async fn post(&mut self, path: &str, body: &str) -> Result<(Instant, u16, String)> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        let sent = Instant::now();
        self.writer
            .write_all(request.as_bytes())
            .await
            .context("write request")?;

        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .await
            .context("read status line")?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .with_context(|| format!("bad status line {line:?}"))?;

        let mut length = None;
        loop {
            line.clear();
            if self
                .reader
                .read_line(&mut line)
                .await
                .context("read header")?
                == 0
            {
                bail!("connection closed inside the response head");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                bail!("bad header line {header:?}");
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .with_context(|| format!("bad length {value}"))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // Limitation: chunked answers are not read; tagcast and the floor both send
                // a length for their small JSON bodies.
                bail!("unsupported transfer-encoding {value}");
            }
        }
        let length = length.context("response without content-length")?;
        if length > MAX_RESPONSE_BYTES {
            bail!("response of {length} bytes is over the {MAX_RESPONSE_BYTES} limit");
        }
        let mut body = vec![0; length];
        self.reader
            .read_exact(&mut body)
            .await
            .context("read body")?;
        Ok((sent, status, String::from_utf8_lossy(&body).into_owned()))
    }
}

//! Runs the real `tagcast` binary for end-to-end tests, and talks to it as users do: a
//! WebSocket client and plain HTTP/1.1 requests.
//!
//! The engine is started with `--log-format json` on `127.0.0.1:0`; the harness reads its
//! stderr and takes the address from the `listening` log line, so no port is fixed and
//! nothing sleeps for a guessed time.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expected event may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The cargo profile directory the tests were built into: `target/<profile>`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps")
        .to_owned()
}

/// The path of a binary built by `cargo build --workspace`, checked to exist.
pub fn built(file: &str) -> PathBuf {
    let path = profile_dir().join(file);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` before the tests (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the repository root")
        .to_owned()
}

/// A fresh temporary directory, unique per call.
pub fn temp_dir(label: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tagcast-{label}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir can be created");
    dir
}

/// The bundled generators, as in the default config, for tests to extend.
pub const BUNDLED_PLUGINS: &str = r#"
[chain]
generators = ["entity-tags", "simple-tags"]
[plugins.entity-tags]
[plugins.simple-tags]
"#;

/// A running engine process; killed when dropped.
pub struct Engine {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Every stderr line so far.
    logs: Arc<Mutex<Vec<String>>>,
}

impl Engine {
    /// Starts `tagcast serve` with `config` (TOML; `[server] listen` defaults to
    /// `127.0.0.1:0` when the text has no `[server]` table) and waits until it listens.
    pub fn start(config: &str) -> Engine {
        let config = if config.contains("[server]") {
            config.to_owned()
        } else {
            format!("[server]\nlisten = \"127.0.0.1:0\"\n{config}")
        };
        let dir = temp_dir("engine");
        let path = dir.join("tagcast.toml");
        std::fs::write(&path, config).expect("config can be written");
        Engine::start_with_file(&path)
    }

    /// Starts `tagcast serve --config path` and waits until it listens.
    pub fn start_with_file(path: &Path) -> Engine {
        let mut child = Command::new(built("tagcast"))
            .args(["serve", "--log-format", "json", "--config"])
            .arg(path)
            .env(
                "RUST_LOG",
                std::env::var("TAGCAST_TEST_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tagcast starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = listening_address(&line) {
                        let _ = tx.send(addr);
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let addr = match rx.recv_timeout(PATIENCE) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "tagcast did not start listening; its log:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Engine { child, addr, logs }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the engine process, in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the engine process is alive");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("/proc/<pid>/status has VmRSS")
    }

    /// Every stderr line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(self) -> ExitStatus {
        self.stop().0
    }

    /// Sends SIGTERM, waits for the process to exit, and returns its status and every line
    /// it wrote to stderr.
    pub fn stop(mut self) -> (ExitStatus, Vec<String>) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
        let (tx, rx) = mpsc::channel();
        let mut child = std::mem::replace(&mut self.child, dummy_child());
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx
            .recv_timeout(PATIENCE)
            .expect("tagcast exits after SIGTERM")
            .expect("wait works");
        // The process has exited, so stderr is at its end; the reader thread may still be
        // appending the last lines it read.
        let deadline = std::time::Instant::now() + PATIENCE;
        while Arc::strong_count(&self.logs) > 1 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        (status, self.logs())
    }

    /// The WebSocket URL for `user` (anonymous when `None`).
    pub fn ws_url(&self, user: Option<&str>) -> String {
        match user {
            Some(u) => format!("ws://{}/ws?user={u}", self.addr),
            None => format!("ws://{}/ws", self.addr),
        }
    }

    /// POSTs JSON to `path`; returns the status and the parsed body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let text = body.to_string();
        self.request("POST", path, "application/json", text.as_bytes())
            .await
    }

    /// GETs `path`; returns the status and the body text.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let (status, body) = self.raw_request("GET", path, None, b"").await;
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Sends one HTTP/1.1 request; returns the status and the body parsed as JSON.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> (u16, Value) {
        let (status, body) = self
            .raw_request(method, path, Some(content_type), body)
            .await;
        let value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: body is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        (status, value)
    }

    async fn raw_request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        let run = async {
            let mut stream = TcpStream::connect(self.addr).await.expect("engine accepts");
            let mut head = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
                self.addr,
                body.len()
            );
            if let Some(ct) = content_type {
                head.push_str(&format!("Content-Type: {ct}\r\n"));
            }
            head.push_str("\r\n");
            stream
                .write_all(head.as_bytes())
                .await
                .expect("request written");
            stream.write_all(body).await.expect("body written");
            let mut response = Vec::new();
            stream
                .read_to_end(&mut response)
                .await
                .expect("response read");
            parse_response(&response)
        };
        tokio::time::timeout(PATIENCE, run)
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no response"))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A placeholder child for `terminate`, which moves the real one out.
fn dummy_child() -> Child {
    Command::new("true").spawn().expect("`true` runs")
}

fn listening_address(line: &str) -> Option<SocketAddr> {
    let value: Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    if fields.get("message")?.as_str()? != "listening" {
        return None;
    }
    fields.get("address")?.as_str()?.parse().ok()
}

/// Splits a `Connection: close` HTTP/1.1 response (with a Content-Length or chunked body).
fn parse_response(raw: &[u8]) -> (u16, Vec<u8>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response has a header");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("response has a status");
    let body = &raw[split + 4..];
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    if !chunked {
        return (status, body.to_vec());
    }
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest = &rest[eol + 2 + size + 2..];
    }
    (status, out)
}

/// A WebSocket client speaking the tagcast protocol.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a client saw when it expected a frame.
#[derive(Debug)]
pub enum Event {
    /// A text frame, parsed.
    Frame(Value),
    /// A close frame.
    Closed(Option<CloseFrame>),
}

impl Client {
    /// Connects as `user` (anonymous when `None`).
    pub async fn connect(engine: &Engine, user: Option<&str>) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(engine.ws_url(user))
            .await
            .expect("WebSocket connects");
        Client { ws }
    }

    /// Connects over a socket with a small receive buffer, so that a client that stops
    /// reading soon stops the server's writes.
    pub async fn connect_with_small_buffer(engine: &Engine, user: Option<&str>) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = socket.connect(engine.addr).await.expect("engine accepts");
        let (ws, _) =
            tokio_tungstenite::client_async(engine.ws_url(user), MaybeTlsStream::Plain(stream))
                .await
                .expect("WebSocket handshake");
        Client { ws }
    }

    /// Closes the connection normally and waits for the server's reply.
    pub async fn close(&mut self) {
        self.ws.close(None).await.expect("close sent");
        while let Some(Ok(_)) = self.ws.next().await {}
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("frame sent");
    }

    /// Sends a raw message.
    pub async fn send(&mut self, message: Message) {
        self.ws.send(message).await.expect("message sent");
    }

    /// The next text frame or close, skipping pings and pongs.
    pub async fn next_event(&mut self) -> Event {
        let next = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        return Event::Frame(
                            serde_json::from_str(&t).expect("server frames are JSON"),
                        )
                    }
                    Some(Ok(Message::Close(frame))) => return Event::Closed(frame),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => panic!("WebSocket error: {e}"),
                    None => return Event::Closed(None),
                }
            }
        };
        tokio::time::timeout(PATIENCE, next)
            .await
            .expect("a frame arrives in time")
    }

    /// The next text frame, parsed; panics on close.
    pub async fn next_frame(&mut self) -> Value {
        match self.next_event().await {
            Event::Frame(v) => v,
            Event::Closed(f) => panic!("connection closed: {f:?}"),
        }
    }

    /// Subscribes and waits for the ack.
    pub async fn subscribe(&mut self, tags: &[&str]) {
        let frame = serde_json::json!({"type": "subscribe", "tags": tags});
        self.send_text(&frame.to_string()).await;
        let ack = self.next_frame().await;
        assert_eq!(ack, serde_json::json!({"type": "subscribed", "tags": tags}));
    }

    /// Unsubscribes and waits for the ack.
    pub async fn unsubscribe(&mut self, tags: &[&str]) {
        let frame = serde_json::json!({"type": "unsubscribe", "tags": tags});
        self.send_text(&frame.to_string()).await;
        let ack = self.next_frame().await;
        assert_eq!(
            ack,
            serde_json::json!({"type": "unsubscribed", "tags": tags})
        );
    }

    /// The tags of the next frame, which must be `outdated`.
    pub async fn next_outdated(&mut self) -> Vec<String> {
        let frame = self.next_frame().await;
        assert_eq!(
            frame["type"], "outdated",
            "expected an outdated frame, got {frame}"
        );
        frame["tags"]
            .as_array()
            .expect("outdated has tags")
            .iter()
            .map(|t| t.as_str().expect("tags are strings").to_owned())
            .collect()
    }
}

//! What the binary does under `cargo test --all-targets` (cargo passes `--bench` only
//! under `cargo bench`): a few seconds of checks that the tool itself measures right,
//! instead of minutes of load.
//!
//! 1. The matching of frames to publishes, on scripted cases.
//! 2. The floor answers frames as docs/protocol.md says, so it is a fair baseline.
//! 3. A small run against the floor delivers everything, once, to the right connections.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::analysis;
use crate::clients::{next_text, open};
use crate::publisher::HttpConn;
use crate::run;
use crate::server::{ServerKind, ServerProcess};
use crate::workload::{Shape, Workload};

/// Runs the checks in order, printing one line each; the first failure ends the run.
pub async fn run() -> Result<()> {
    analysis::self_check().map_err(anyhow::Error::msg)?;
    eprintln!("load smoke: frame matching ok");

    floor_protocol().await.context("floor protocol check")?;
    eprintln!("load smoke: floor protocol ok");

    small_run().await.context("small run against the floor")?;
    eprintln!("load smoke: small run ok");
    Ok(())
}

async fn floor_protocol() -> Result<()> {
    let server = ServerProcess::start(ServerKind::Floor, std::path::Path::new("")).await?;
    let mut alice = open(server.addr, "/ws?user=alice").await?;
    let mut bob = open(server.addr, "/ws?user=bob").await?;

    ask(
        &mut alice,
        Message::text("nope"),
        json!({"type": "error", "code": "invalid_json"}),
    )
    .await?;
    ask(
        &mut alice,
        Message::text("[]"),
        json!({"type": "error", "code": "invalid_frame"}),
    )
    .await?;
    ask(
        &mut alice,
        Message::text(r#"{"type":"x","tags":[]}"#),
        json!({"type": "error", "code": "unknown_type"}),
    )
    .await?;
    ask(
        &mut alice,
        Message::text(r#"{"type":"subscribe","tags":[""]}"#),
        json!({"type": "error", "code": "invalid_tag"}),
    )
    .await?;
    let long = "t".repeat(300);
    ask(
        &mut alice,
        Message::text(json!({"type":"subscribe","tags":[long]}).to_string()),
        json!({"type": "error", "code": "tag_too_long"}),
    )
    .await?;
    ask(
        &mut alice,
        Message::binary(vec![1, 2]),
        json!({"type": "error", "code": "binary_not_supported"}),
    )
    .await?;
    let subscribe = json!({"type": "subscribe", "tags": ["a", "b"]});
    for ws in [&mut alice, &mut bob] {
        ask(
            ws,
            Message::text(subscribe.to_string()),
            json!({"type": "subscribed", "tags": ["a", "b"]}),
        )
        .await?;
    }
    ask(
        &mut bob,
        Message::text(r#"{"type":"unsubscribe","tags":["b"]}"#),
        json!({"type": "unsubscribed", "tags": ["b"]}),
    )
    .await?;

    // alice's change reaches bob with the tags bob still tracks, and not alice.
    let mut http = HttpConn::open(server.addr).await?;
    let (_, status, body) = http
        .post("/v1/publish", r#"{"author":"alice","tags":["a","b","c"]}"#)
        .await?;
    ensure!(status == 200, "publish answered {status}: {body}");
    let got: Value = serde_json::from_str(&next_text(&mut bob).await?)?;
    ensure!(
        got == json!({"type": "outdated", "tags": ["a"]}),
        "bob got {got}"
    );
    // An anonymous change reaches alice; had she got her own change, it would come first.
    let (_, status, body) = http.post("/v1/publish", r#"{"tags":["b"]}"#).await?;
    ensure!(status == 200, "publish answered {status}: {body}");
    let got: Value = serde_json::from_str(&next_text(&mut alice).await?)?;
    ensure!(
        got == json!({"type": "outdated", "tags": ["b"]}),
        "alice got {got}"
    );
    Ok(())
}

/// Sends `frame` and checks the reply; error replies are compared by code only, since
/// their messages are prose and the code is the contract.
async fn ask(ws: &mut WebSocketStream<TcpStream>, frame: Message, expected: Value) -> Result<()> {
    ws.send(frame).await.context("send")?;
    let reply: Value = serde_json::from_str(&next_text(ws).await?)?;
    let reply = if reply["type"] == "error" {
        json!({"type": "error", "code": reply["code"]})
    } else {
        reply
    };
    ensure!(reply == expected, "expected {expected}, got {reply}");
    Ok(())
}

async fn small_run() -> Result<()> {
    let shape = Shape {
        connections: 60,
        conns_per_user: 3,
        tags_per_conn: 3,
        tag_pool: 20,
        rate: 200,
        duration: Duration::from_secs(1),
        tags_per_publish: 2,
        publishers: 2,
        seed: 7,
    };
    let workload = Arc::new(Workload::draw(shape));
    let figures = run::measure(ServerKind::Floor, &workload, std::path::Path::new("")).await?;
    let publish = figures
        .publish
        .context("the small run had no publish phase")?;
    let outcome = &publish.outcome;
    if outcome.expected == 0
        || outcome.missing > 0
        || outcome.unexpected_frames > 0
        || publish.log.failed > 0
    {
        bail!(
            "expected {}, delivered {}, missing {}, unexpected {}, publish failures {}: {:?}",
            outcome.expected,
            outcome.delivered(),
            outcome.missing,
            outcome.unexpected_frames,
            publish.log.failed,
            outcome.examples
        );
    }
    ensure!(
        figures.client_failures.0 == 0,
        "clients failed: {:?}",
        figures.client_failures.1
    );
    Ok(())
}

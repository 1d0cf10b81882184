//! End-to-end tests of event-source supervision: a source plugin loaded through the ABI into
//! the real engine, misbehaving on purpose (the `idle-source` fixture), with its changes
//! turned into tags by the `echo-tags` fixture generator.

use serde_json::{json, Value};
use tagcast_tests::engine::{Client, Engine};
use tagcast_tests::plugin_fixtures::{fixtures, Fixture};

fn config(panic_runs: u32) -> String {
    let f = fixtures();
    format!(
        "[sources]\nrestart_initial_ms = 50\nrestart_max_ms = 1000\nshutdown_deadline_ms = 2000\n\
         [chain]\ngenerators = [\"echo-tags\"]\n\
         [plugins.echo-tags]\nlibrary = {:?}\n\
         [plugins.idle-source]\nlibrary = {:?}\n\
         [plugins.idle-source.settings]\npanic_runs = {panic_runs}\nemit = \"from_source\"\n",
        f.library(Fixture::EchoTags),
        f.library(Fixture::SourceOnly),
    )
}

/// The `fields` of every JSON log line whose message is `message`.
fn log_fields(engine: &Engine, message: &str) -> Vec<Value> {
    engine
        .logs()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["fields"]["message"] == message)
        .map(|v| v["fields"].clone())
        .collect()
}

#[tokio::test]
async fn panicking_source_is_restarted_with_backoff_and_the_engine_keeps_serving() {
    let engine = Engine::start(&config(3));
    let mut client = Client::connect(&engine, Some("bob")).await;
    client.subscribe(&["from_source", "from_http"]).await;

    // The source panics three times, then emits every 50 ms: its tag arrives.
    assert_eq!(client.next_outdated().await, ["from_source"]);

    let restarts = log_fields(&engine, "source failed; restarting after backoff");
    assert_eq!(restarts.len(), 3, "{restarts:?}");
    let delays: Vec<u64> = restarts
        .iter()
        .map(|f| f["retry_in_ms"].as_u64().expect("retry_in_ms is a number"))
        .collect();
    assert_eq!(delays, [50, 100, 200], "exponential backoff");
    for fields in &restarts {
        let error = fields["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("idle-source") && error.contains("panicked"),
            "{error}"
        );
    }
    let (_, metrics) = engine.get("/metrics").await;
    assert!(
        metrics.contains("tagcast_source_restarts_total{source=\"idle-source\"} 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tagcast_source_up{source=\"idle-source\"} 1\n"),
        "{metrics}"
    );

    // The engine kept serving throughout.
    assert_eq!(engine.get("/readyz").await.0, 200);
    let (status, _) = engine
        .post(
            "/v1/changes",
            &json!({"changes": [{"op": "update", "data": {"echo": ["from_http"]}}]}),
        )
        .await;
    assert_eq!(status, 200);
    loop {
        // The source keeps emitting its own tag; wait for ours among them.
        if client
            .next_outdated()
            .await
            .iter()
            .any(|t| t == "from_http")
        {
            break;
        }
    }
}

#[tokio::test]
async fn shutdown_stops_a_running_source_within_the_deadline() {
    let engine = Engine::start(&config(0));
    let mut client = Client::connect(&engine, None).await;
    client.subscribe(&["from_source"]).await;
    assert_eq!(client.next_outdated().await, ["from_source"]);

    let (status, logs) = tokio::task::spawn_blocking(move || engine.stop())
        .await
        .expect("stop runs");
    assert!(status.success(), "exit status {status}");
    let fields: Vec<Value> = logs
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|v| v["fields"].clone())
        .collect();
    // The source returned when asked (its thread logged it), and the supervisor did not
    // have to give up on it at the deadline.
    assert!(
        fields
            .iter()
            .any(|f| f["message"] == "source stopped" && f["source"] == "idle-source"),
        "{logs:#?}"
    );
    assert!(
        fields.iter().any(|f| f["message"] == "sources stopped"),
        "{logs:#?}"
    );
    assert!(
        !fields.iter().any(|f| f["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not stop within the deadline"))),
        "{logs:#?}"
    );
}

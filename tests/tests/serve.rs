//! End-to-end tests of serving: real WebSocket clients and real HTTP against the engine
//! binary, with the bundled generators.
//!
//! "Never arrives" is checked with a barrier, not a wait: after the change under test, a
//! sentinel tag the client tracks is published; frames to one connection keep their order,
//! so the next frame must be the sentinel's and nothing else.

use serde_json::json;
use tagcast_tests::engine::{Client, Engine, Event, BUNDLED_PLUGINS};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const TASK_42: &str = "App_Entity_Task_42";
const TASKS: &str = "App_Entity_Task_type_collection";
const SENTINEL: &str = "sentinel";

fn engine() -> Engine {
    Engine::start(BUNDLED_PLUGINS)
}

async fn change(engine: &Engine, author: Option<&str>, op: &str, id: u64) -> Vec<String> {
    let body = json!({
        "author": author,
        "changes": [{"op": op, "data": {"class": "App\\Entity\\Task", "id": id}}],
    });
    let (status, reply) = engine.post("/v1/changes", &body).await;
    assert_eq!(status, 200, "{reply}");
    serde_json::from_value(reply["tags"].clone()).expect("tags are strings")
}

/// Publishes the sentinel and checks it is the next (and only) thing `client` receives.
async fn assert_nothing_before_sentinel(engine: &Engine, client: &mut Client) {
    let (status, _) = engine
        .post("/v1/publish", &json!({"tags": [SENTINEL]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(client.next_outdated().await, [SENTINEL]);
}

#[tokio::test]
async fn change_by_alice_reaches_bob_and_none_of_alices_connections() {
    let engine = engine();
    let mut alice_tab1 = Client::connect(&engine, Some("alice")).await;
    let mut alice_tab2 = Client::connect(&engine, Some("alice")).await;
    let mut bob = Client::connect(&engine, Some("bob")).await;
    for client in [&mut alice_tab1, &mut alice_tab2, &mut bob] {
        client.subscribe(&[TASK_42, SENTINEL]).await;
    }

    let tags = change(&engine, Some("alice"), "update", 42).await;
    assert_eq!(tags, [TASK_42]);

    assert_eq!(bob.next_outdated().await, [TASK_42]);
    assert_nothing_before_sentinel(&engine, &mut alice_tab1).await;
    assert_eq!(alice_tab2.next_outdated().await, [SENTINEL]);
}

#[tokio::test]
async fn untracked_tags_never_arrive() {
    let engine = engine();
    let mut bob = Client::connect(&engine, Some("bob")).await;
    bob.subscribe(&[TASK_42, SENTINEL]).await;

    change(&engine, Some("alice"), "update", 43).await;
    let (status, _) = engine
        .post(
            "/v1/publish",
            &json!({"author": "carol", "tags": ["user_tasks_9", "other"]}),
        )
        .await;
    assert_eq!(status, 200);

    assert_nothing_before_sentinel(&engine, &mut bob).await;
}

#[tokio::test]
async fn insert_reaches_collection_subscribers_in_one_frame() {
    let engine = engine();
    let mut list_page = Client::connect(&engine, Some("bob")).await;
    list_page.subscribe(&[TASKS]).await;
    let mut both = Client::connect(&engine, None).await;
    both.subscribe(&["App_Entity_Task_77", TASKS]).await;

    let tags = change(&engine, Some("alice"), "insert", 77).await;
    assert_eq!(tags, ["App_Entity_Task_77", TASKS]);

    assert_eq!(list_page.next_outdated().await, [TASKS]);
    // One change, one frame, listing every tracked tag of it.
    assert_eq!(both.next_outdated().await, ["App_Entity_Task_77", TASKS]);
}

#[tokio::test]
async fn update_does_not_touch_the_collection_tag() {
    let engine = engine();
    let mut list_page = Client::connect(&engine, None).await;
    list_page.subscribe(&[TASKS, SENTINEL]).await;
    change(&engine, Some("alice"), "update", 42).await;
    assert_nothing_before_sentinel(&engine, &mut list_page).await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let engine = engine();
    let mut bob = Client::connect(&engine, Some("bob")).await;
    bob.subscribe(&[TASK_42, SENTINEL]).await;
    change(&engine, Some("alice"), "update", 42).await;
    assert_eq!(bob.next_outdated().await, [TASK_42]);

    bob.unsubscribe(&[TASK_42]).await;
    change(&engine, Some("alice"), "update", 42).await;
    assert_nothing_before_sentinel(&engine, &mut bob).await;
}

#[tokio::test]
async fn anonymous_publish_reaches_everyone_tracking() {
    let engine = engine();
    let mut alice = Client::connect(&engine, Some("alice")).await;
    alice.subscribe(&["user_tasks_7"]).await;
    let (status, reply) = engine
        .post(
            "/v1/publish",
            &json!({"author": null, "tags": ["user_tasks_7"]}),
        )
        .await;
    assert_eq!((status, reply), (200, json!({"tags": ["user_tasks_7"]})));
    assert_eq!(alice.next_outdated().await, ["user_tasks_7"]);
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_connection_keeps_working() {
    let engine = Engine::start(&format!(
        "[limits]\nmax_tags_per_connection = 3\nmax_tag_bytes = 20\n{BUNDLED_PLUGINS}"
    ));
    let mut bad = Client::connect(&engine, Some("mallory")).await;
    let mut good = Client::connect(&engine, Some("bob")).await;
    good.subscribe(&[TASK_42]).await;

    let cases = [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_frame"),
        (r#"{"tags": ["a"]}"#, "invalid_frame"),
        (r#"{"type": "subscribe"}"#, "invalid_frame"),
        (r#"{"type": "subscribe", "tags": "a"}"#, "invalid_frame"),
        (r#"{"type": "dance", "tags": ["a"]}"#, "unknown_type"),
        (r#"{"type": "subscribe", "tags": ["a", 7]}"#, "invalid_tag"),
        (r#"{"type": "subscribe", "tags": [""]}"#, "invalid_tag"),
        (
            r#"{"type": "subscribe", "tags": ["a-tag-that-is-far-too-long"]}"#,
            "tag_too_long",
        ),
        (
            r#"{"type": "subscribe", "tags": ["a", "b", "c", "d"]}"#,
            "too_many_tags",
        ),
    ];
    for (frame, code) in cases {
        bad.send_text(frame).await;
        let reply = bad.next_frame().await;
        assert_eq!(reply["type"], "error", "{frame} → {reply}");
        assert_eq!(reply["code"], code, "{frame} → {reply}");
        assert!(
            reply["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{reply}"
        );
    }
    bad.send(Message::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(bad.next_frame().await["code"], "binary_not_supported");

    // A rejected frame had no effect: none of "a", "b", "c", "d" is tracked, so three fit.
    bad.subscribe(&["a", "b", "c"]).await;
    let (status, _) = engine.post("/v1/publish", &json!({"tags": ["c"]})).await;
    assert_eq!(status, 200);
    assert_eq!(bad.next_outdated().await, ["c"]);

    // Others were served throughout.
    change(&engine, Some("alice"), "update", 42).await;
    assert_eq!(good.next_outdated().await, [TASK_42]);
}

#[tokio::test]
async fn frame_over_the_size_limit_closes_with_1009() {
    let engine = Engine::start(&format!(
        "[limits]\nmax_frame_bytes = 1024\n{BUNDLED_PLUGINS}"
    ));
    let mut client = Client::connect(&engine, None).await;
    let big = format!(r#"{{"type":"subscribe","tags":["{}"]}}"#, "x".repeat(2000));
    client.send_text(&big).await;
    match client.next_event().await {
        Event::Closed(Some(frame)) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected a 1009 close, got {other:?}"),
    }
    // The server goes on.
    let mut other = Client::connect(&engine, None).await;
    other.subscribe(&[TASK_42]).await;
}

#[tokio::test]
async fn connections_beyond_the_per_user_limit_are_closed_with_1008() {
    let engine = Engine::start(&format!(
        "[limits]\nmax_connections_per_user = 2\n{BUNDLED_PLUGINS}"
    ));
    let mut first = Client::connect(&engine, Some("alice")).await;
    let _second = Client::connect(&engine, Some("alice")).await;
    let mut third = Client::connect(&engine, Some("alice")).await;
    match third.next_event().await {
        Event::Closed(Some(frame)) => assert_eq!(frame.code, CloseCode::Policy),
        other => panic!("expected a 1008 close, got {other:?}"),
    }
    first.subscribe(&[TASK_42]).await;
    let mut bob = Client::connect(&engine, Some("bob")).await;
    bob.subscribe(&[TASK_42]).await;
}

#[tokio::test]
async fn http_errors_are_json_with_fitting_statuses() {
    let engine = Engine::start(&format!(
        "[limits]\nmax_body_bytes = 100\n{BUNDLED_PLUGINS}"
    ));
    /// Method, path, content type, body, expected status and error code.
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [u8], u16, &'a str);
    let cases: [Case; 6] = [
        (
            "POST",
            "/v1/changes",
            "application/json",
            b"{nope",
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/changes",
            "application/json",
            br#"{"changes": [{"op": "explode", "data": {}}]}"#,
            422,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/tags",
            "text/plain",
            b"{}",
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/v1/publish",
            "application/json",
            &[b' '; 200],
            413,
            "payload_too_large",
        ),
        (
            "GET",
            "/v1/changes",
            "application/json",
            b"",
            405,
            "method_not_allowed",
        ),
        ("GET", "/nowhere", "application/json", b"", 404, "not_found"),
    ];
    for (method, path, content_type, body, status, code) in cases {
        let (got, reply) = engine.request(method, path, content_type, body).await;
        assert_eq!(got, status, "{method} {path}: {reply}");
        assert_eq!(reply["error"]["code"], code, "{method} {path}: {reply}");
    }
}

#[tokio::test]
async fn tags_endpoint_gives_the_tags_a_page_tracks() {
    let engine = engine();
    let data = json!({"class": "App\\Entity\\Task", "id": 42,
        "owner": {"class": "App\\Entity\\User", "id": 7}});
    let (status, reply) = engine
        .post(
            "/v1/tags",
            &json!({"data": data, "collection": true, "nested": true}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(reply["tags"], json!([TASK_42, TASKS, "App_Entity_User_7"]));
    let (_, reply) = engine.post("/v1/tags", &json!({"data": data})).await;
    assert_eq!(reply["tags"], json!([TASK_42]));
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let engine = engine();
    let mut bob = Client::connect(&engine, Some("bob")).await;
    bob.subscribe(&[TASK_42]).await;
    change(&engine, Some("alice"), "update", 42).await;
    bob.next_outdated().await;

    assert_eq!(engine.get("/healthz").await.0, 200);
    assert_eq!(engine.get("/readyz").await.0, 200);
    let (status, text) = engine.get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "tagcast_connections 1",
        "tagcast_subscriptions 1",
        "tagcast_tags 1",
        "tagcast_changes_received_total 1",
        "tagcast_tags_published_total 1",
        "tagcast_notifications_delivered_total 1",
        "tagcast_delivery_latency_seconds_count 1",
        "tagcast_generation_errors_total{plugin=\"entity-tags\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
}

/// The value of an unlabelled metric.
async fn metric(engine: &Engine, name: &str) -> i64 {
    let (_, text) = engine.get("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

#[tokio::test]
async fn closed_connections_leave_no_subscription_behind() {
    let engine = engine();
    let mut alice = Client::connect(&engine, Some("alice")).await;
    alice.subscribe(&[TASK_42, TASKS]).await;
    let mut bob = Client::connect(&engine, Some("bob")).await;
    bob.subscribe(&[TASK_42]).await;
    assert_eq!(metric(&engine, "tagcast_subscriptions").await, 3);

    alice.close().await;
    // The server finishes the close on its own schedule: wait for the gauge, bounded.
    let deadline = std::time::Instant::now() + tagcast_tests::engine::PATIENCE;
    while metric(&engine, "tagcast_connections").await != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "alice's connection was never removed"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(metric(&engine, "tagcast_subscriptions").await, 1);
    assert_eq!(metric(&engine, "tagcast_tags").await, 1);
    change(&engine, Some("carol"), "update", 42).await;
    assert_eq!(bob.next_outdated().await, [TASK_42]);
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001_and_exits_0() {
    let engine = engine();
    let mut clients = Vec::new();
    for user in ["alice", "bob"] {
        let mut c = Client::connect(&engine, Some(user)).await;
        c.subscribe(&[TASK_42]).await;
        clients.push(c);
    }
    let status = tokio::task::spawn_blocking(move || engine.terminate())
        .await
        .expect("terminate runs");
    for mut c in clients {
        match c.next_event().await {
            Event::Closed(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected a 1001 close, got {other:?}"),
        }
    }
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn slow_reader_gets_a_few_merged_frames_and_server_memory_stays_flat() {
    // Long tags make a queue of frames expensive: 10,000 queued frames of these three tags
    // would take over 6 MB.
    let class = format!("App\\Entity\\{}", "VeryLongEntityName".repeat(9));
    let tag = |id: u64| format!("App_Entity_{}_{id}", "VeryLongEntityName".repeat(9));
    let tags: Vec<String> = (1..=3).map(tag).collect();
    let refs: Vec<&str> = tags.iter().map(String::as_str).collect();
    let engine = engine();

    let burst = |count: usize| {
        let changes: Vec<_> = (0..count)
            .map(|i| json!({"op": "update", "data": {"class": class, "id": (i % 3) as u64 + 1}}))
            .collect();
        json!({"author": "alice", "changes": changes})
    };
    let publish = |n_batches: usize| {
        let engine = &engine;
        let body = burst(1_000);
        async move {
            for _ in 0..n_batches {
                let (status, reply) = engine.post("/v1/changes", &body).await;
                assert_eq!(status, 200, "{reply}");
            }
        }
    };

    // Warm up: the same bursts with a reading client, so that allocator pools are in place.
    let mut reader = Client::connect(&engine, Some("carol")).await;
    reader.subscribe(&refs).await;
    publish(10).await;
    drop(reader);
    let rss_before = engine.rss_kib();

    let mut slow = Client::connect_with_small_buffer(&engine, Some("bob")).await;
    slow.subscribe(&refs).await;
    slow.subscribe(&[SENTINEL]).await;
    publish(10).await;
    let rss_after_10k = engine.rss_kib();
    publish(10).await;
    let rss_after_20k = engine.rss_kib();

    // Now read: a few frames, together naming every changed tag, then the sentinel.
    let (status, _) = engine
        .post("/v1/publish", &json!({"tags": [SENTINEL]}))
        .await;
    assert_eq!(status, 200);
    let mut frames = 0;
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let got = slow.next_outdated().await;
        frames += 1;
        let done = got.iter().any(|t| t == SENTINEL);
        seen.extend(got.into_iter().filter(|t| t != SENTINEL));
        if done {
            break;
        }
    }
    let expected: std::collections::BTreeSet<String> = tags.iter().cloned().collect();
    assert_eq!(seen, expected);
    // What the kernel's socket buffers took before the server saw the reader stall comes
    // as separate frames; everything after that is merged.
    assert!(
        frames < 1_000,
        "{frames} frames for 20,000 changes: not coalesced"
    );
    let growth = rss_after_20k.saturating_sub(rss_before);
    assert!(
        growth < 3 * 1024,
        "server RSS grew by {growth} KiB over 20,000 changes to a stalled reader \
         ({rss_before} → {rss_after_10k} → {rss_after_20k} KiB)"
    );
}

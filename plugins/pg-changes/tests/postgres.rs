//! pg-changes against a real PostgreSQL: the source runs on a thread with a recording
//! emitter, as the engine runs it, while the tests write to watched tables. Each test works
//! in a schema of its own. See `common` for where the database comes from.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{unique_name, Received, RunningSource, TestDb};
use pg_changes::feed::{position, sql};
use pg_changes::{PgChangesConfig, PgChangesSource};
use serde_json::json;
use tagcast_plugin_api::Op;

/// Installs the outbox in the test's schema, as `psql -v schema=... -f install.sql` would.
fn install(db: &TestDb) {
    db.exec(&sql::render(sql::INSTALL_SQL, &[("schema", &db.schema)]));
}

/// A source reading the test's schema, connecting as `application`; `tables` is the TOML of
/// its `[[tables]]` entries and any further settings.
fn source(db: &TestDb, application: &str, rest: &str) -> PgChangesSource {
    let settings = format!(
        "url = \"{}\"\nschema = \"{}\"\n{rest}",
        db.source_url(application),
        db.schema
    );
    let config: PgChangesConfig =
        tagcast_plugin_api::parse_settings(&settings).expect("test settings parse");
    PgChangesSource::new(config).expect("test settings are valid")
}

fn ids(changes: &[Received]) -> Vec<i64> {
    changes
        .iter()
        .map(|c| c.data["id"].as_i64().expect("an integer id"))
        .collect()
}

/// Installs the outbox and creates and watches the table `items (id, name)`.
fn watch_items(db: &TestDb) {
    let s = &db.schema;
    install(db);
    db.exec(&format!(
        "CREATE TABLE {s}.items (id bigserial PRIMARY KEY, name text);
         SELECT {s}.watch('{s}.items')"
    ));
}

/// Starts a source on `items` as `App\Entity\Item`, with `settings` (TOML) added.
fn start_items_source(db: &TestDb, settings: &str) -> RunningSource {
    let tables = format!(
        "{settings}[[tables]]\ntable = \"{}.items\"\nclass = 'App\\Entity\\Item'\n",
        db.schema
    );
    RunningSource::start(source(db, &unique_name("src"), &tables), None)
}

#[test]
fn row_changes_arrive_as_entity_changes_with_their_author() {
    let Some(db) = TestDb::connect("row_changes") else {
        return;
    };
    let s = &db.schema;
    db.exec(&format!(
        "CREATE TABLE {s}.tasks (id bigserial PRIMARY KEY, title text, project_id int, updated_by text)"
    ));
    // A long poll interval: the changes must come by notification.
    let running = RunningSource::start(
        source(
            &db,
            &unique_name("src"),
            &format!(
                r#"install_schema = true
poll_interval_ms = 600000
[[tables]]
table = "{s}.tasks"
class = 'App\Entity\Task'
author_column = "updated_by"
columns = ["project_id"]
"#
            ),
        ),
        None,
    );
    db.wait_until(&format!(
        "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = '{s}.tasks'::regclass)"
    ));

    db.exec(&format!(
        "INSERT INTO {s}.tasks (title, project_id, updated_by) VALUES ('a', 3, 'alice')"
    ));
    db.exec(&format!(
        "UPDATE {s}.tasks SET title = 'b', updated_by = 'bob' WHERE id = 1"
    ));
    db.exec(&format!(
        "BEGIN; SET LOCAL tagcast.author = 'carol'; DELETE FROM {s}.tasks WHERE id = 1; COMMIT"
    ));
    db.exec(&format!(
        "BEGIN; SET LOCAL tagcast.author = 'dave'; INSERT INTO {s}.tasks (title) VALUES ('c'); COMMIT"
    ));
    db.exec(&format!("INSERT INTO {s}.tasks (title) VALUES ('d')"));

    let class = "App\\Entity\\Task";
    let expected = [
        (
            Op::Insert,
            json!({"class": class, "id": 1, "project_id": 3}),
            Some("alice"),
        ),
        (
            Op::Update,
            json!({"class": class, "id": 1, "project_id": 3}),
            Some("bob"),
        ),
        (
            Op::Delete,
            json!({"class": class, "id": 1, "project_id": 3}),
            Some("carol"),
        ),
        (
            Op::Insert,
            json!({"class": class, "id": 2, "project_id": null}),
            Some("dave"),
        ),
        (
            Op::Insert,
            json!({"class": class, "id": 3, "project_id": null}),
            None,
        ),
    ];
    let received = running.take(expected.len());
    for (got, (op, data, author)) in received.iter().zip(expected) {
        assert_eq!(
            (got.op, &got.data, got.author.as_deref()),
            (op, &data, author)
        );
    }
    assert_eq!(running.stop(), Ok(()));
}

#[test]
fn composite_keys_arrive_as_an_array_in_key_column_order() {
    let Some(db) = TestDb::connect("composite_keys") else {
        return;
    };
    let s = &db.schema;
    install(&db);
    db.exec(&format!(
        "CREATE TABLE {s}.lines (num int, tenant text, qty int, PRIMARY KEY (num, tenant));
         SELECT {s}.watch('{s}.lines', '{{tenant,num}}')"
    ));
    let running = RunningSource::start(
        source(
            &db,
            &unique_name("src"),
            &format!(
                "[[tables]]\ntable = \"{s}.lines\"\nclass = 'App\\Entity\\Line'\nkey_columns = [\"tenant\", \"num\"]\n"
            ),
        ),
        None,
    );

    db.exec(&format!("INSERT INTO {s}.lines VALUES (7, 'eu', 1)"));
    db.exec(&format!("UPDATE {s}.lines SET qty = 2"));
    db.exec(&format!("DELETE FROM {s}.lines"));

    let received = running.take(3);
    let ops: Vec<Op> = received.iter().map(|c| c.op).collect();
    assert_eq!(ops, [Op::Insert, Op::Update, Op::Delete]);
    for change in &received {
        assert_eq!(
            change.data,
            json!({"class": "App\\Entity\\Line", "id": ["eu", 7]})
        );
    }
    assert_eq!(running.stop(), Ok(()));
}

#[test]
fn a_restarted_source_resumes_at_its_cursor_without_loss_or_repeat() {
    let Some(db) = TestDb::connect("resume") else {
        return;
    };
    let s = &db.schema;
    install(&db);
    db.exec(&format!(
        "CREATE TABLE {s}.notes (id bigserial PRIMARY KEY, body text);
         SELECT {s}.watch('{s}.notes')"
    ));
    let app = unique_name("src");
    let tables = format!("[[tables]]\ntable = \"{s}.notes\"\nclass = 'App\\Entity\\Note'\n");

    let first = RunningSource::start(source(&db, &app, &tables), None);
    for _ in 0..3 {
        db.exec(&format!("INSERT INTO {s}.notes (body) VALUES ('before')"));
    }
    assert_eq!(ids(&first.take(3)), [1, 2, 3]);
    assert_eq!(first.stop(), Ok(()));

    // The cursor table records the last row handed on, whole.
    let cursor = db.query(
        &format!("SELECT last_id, last_part FROM {s}.cursor WHERE consumer = 'tagcast'"),
        &[],
    );
    let last_outbox_id =
        db.query(&format!("SELECT max(id) FROM {s}.outbox"), &[])[0].get::<_, i64>(0);
    assert_eq!(cursor[0].get::<_, i64>(0), last_outbox_id);
    assert_eq!(cursor[0].get::<_, Option<i32>>(1), None);

    // Changes made while no source runs wait in the outbox. Forgetting the process's memory
    // of the position makes the new source rely on the cursor table alone, as after a
    // restart of the engine.
    for _ in 0..3 {
        db.exec(&format!(
            "INSERT INTO {s}.notes (body) VALUES ('while stopped')"
        ));
    }
    db.exec(&format!("INSERT INTO {s}.notes (body) VALUES ('marker')"));
    position::forget(&db.source_url(&app), s, "tagcast");

    let second = RunningSource::start(source(&db, &app, &tables), None);
    let received = second.until(|c| c.data["id"] == json!(7));
    assert_eq!(ids(&received), [4, 5, 6, 7]);
    assert_eq!(second.stop(), Ok(()));
}

#[test]
fn a_killed_connection_loses_and_repeats_nothing_of_a_thousand_rows() {
    let Some(db) = TestDb::connect("kill") else {
        return;
    };
    let s = db.schema.clone();
    install(&db);
    db.exec(&format!(
        "CREATE TABLE {s}.events (id bigserial PRIMARY KEY, writer int, n int);
         SELECT {s}.watch('{s}.events')"
    ));
    let app = unique_name("src");

    // Right after the engine accepted some changes, and before the source saves its cursor,
    // its connection is terminated: the save fails, and the source must neither repeat the
    // change after reconnecting nor skip any other.
    const KILL_AT: [usize; 4] = [100, 300, 550, 800];
    let killer = Mutex::new(db.another());
    let kills = Arc::new(AtomicUsize::new(0));
    let hook: common::Hook = {
        let app = app.clone();
        let kills = Arc::clone(&kills);
        Arc::new(move |n, _stop| {
            if KILL_AT.contains(&n) {
                let killer = killer.lock().unwrap_or_else(|e| e.into_inner());
                kills.fetch_add(killer.kill(&app), Ordering::SeqCst);
            }
        })
    };
    let running = RunningSource::start(
        source(
            &db,
            &app,
            &format!("batch_size = 64\n[[tables]]\ntable = \"{s}.events\"\nclass = 'App\\Entity\\Event'\n"),
        ),
        Some(hook),
    );

    // Four writers, 250 rows each, in transactions of one to three rows, so that commits
    // interleave and come out of id order.
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let conn = db.another();
            let s = s.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while n < 250 {
                    let size = (1 + (n + writer) % 3).min(250 - n);
                    conn.exec(&format!(
                        "INSERT INTO {s}.events (writer, n) SELECT {writer}, g FROM generate_series({n}, {}) g",
                        n + size - 1
                    ));
                    n += size;
                }
            })
        })
        .collect();

    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    while seen.len() < 1000 {
        let change = running.next();
        assert_eq!(change.op, Op::Insert);
        *seen.entry(ids(&[change])[0]).or_default() += 1;
    }
    for writer in writers {
        writer.join().expect("a writer failed");
    }
    db.exec(&format!(
        "INSERT INTO {s}.events (writer, n) VALUES (-1, -1)"
    ));
    for change in running.until(|c| c.data["id"] == json!(1001)) {
        *seen.entry(ids(&[change])[0]).or_default() += 1;
    }

    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "handed on more than once: {repeated:?}"
    );
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (1..=1001).collect::<Vec<_>>()
    );
    assert_eq!(
        kills.load(Ordering::SeqCst),
        KILL_AT.len(),
        "every kill found the source's connection"
    );
    assert_eq!(running.stop(), Ok(()), "the source reconnects by itself");
}

#[test]
fn a_commit_after_a_higher_id_was_handed_on_is_not_lost() {
    let Some(db) = TestDb::connect("late_commit") else {
        return;
    };
    let s = &db.schema;
    watch_items(&db);
    let running = start_items_source(&db, "");

    // `early` takes its transaction id first but writes its row last; `late` writes row 1
    // and stays open while `early` writes row 2 and commits. Row 2 sorts first and may be
    // handed on while row 1 is still invisible: a reader that only remembered "up to id 2"
    // would then never hand on row 1.
    let early = db.another();
    let late = db.another();
    early.exec("BEGIN; SELECT pg_current_xact_id()");
    late.exec(&format!(
        "BEGIN; INSERT INTO {s}.items (name) VALUES ('late')"
    ));
    early.exec(&format!(
        "INSERT INTO {s}.items (name) VALUES ('early'); COMMIT"
    ));
    assert_eq!(
        ids(&[running.next()]),
        [2],
        "row 2 goes on while row 1 is uncommitted"
    );
    late.exec("COMMIT");
    assert_eq!(ids(&[running.next()]), [1]);
    assert_eq!(running.stop(), Ok(()));
}

#[test]
fn rows_wait_for_older_transactions_and_arrive_in_transaction_order() {
    let Some(db) = TestDb::connect("held_back") else {
        return;
    };
    let s = &db.schema;
    watch_items(&db);
    let running = start_items_source(&db, "");

    // Row 1's transaction is older; row 2 commits first and must wait for it.
    let older = db.another();
    older.exec(&format!(
        "BEGIN; INSERT INTO {s}.items (name) VALUES ('older')"
    ));
    db.exec(&format!("INSERT INTO {s}.items (name) VALUES ('newer')"));
    older.exec("COMMIT");
    assert_eq!(ids(&running.take(2)), [1, 2]);
    assert_eq!(running.stop(), Ok(()));
}

#[test]
fn rows_older_than_the_retention_are_pruned() {
    let Some(db) = TestDb::connect("prune") else {
        return;
    };
    let s = &db.schema;
    watch_items(&db);
    db.exec(&format!(
        "INSERT INTO {s}.items (name) VALUES ('old'), ('old');
         UPDATE {s}.outbox SET at = now() - interval '2 days';
         INSERT INTO {s}.items (name) VALUES ('fresh')"
    ));
    let running = start_items_source(&db, "retention_seconds = 86400\n");

    // Pruning runs before the first read: the old rows are gone unread, the fresh one stays.
    assert_eq!(ids(&running.until(|c| c.data["id"] == json!(3))), [3]);
    let left = db.query(
        &format!("SELECT array_agg(id ORDER BY id) FROM {s}.outbox"),
        &[],
    );
    assert_eq!(left[0].get::<_, Vec<i64>>(0), [3]);
    assert_eq!(running.stop(), Ok(()));
}

#[test]
fn a_missing_table_fails_run_with_the_table_named() {
    let Some(db) = TestDb::connect("missing_table") else {
        return;
    };
    let s = &db.schema;
    install(&db);
    let running = RunningSource::start(
        source(
            &db,
            &unique_name("src"),
            &format!("[[tables]]\ntable = \"{s}.nope\"\nclass = 'App\\Entity\\Nope'\n"),
        ),
        None,
    );
    let err = running.join().expect_err("run fails");
    assert!(err.message().contains(&format!("{s}.nope")), "{err}");
}

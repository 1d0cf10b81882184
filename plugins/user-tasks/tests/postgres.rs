//! user-tasks against a real PostgreSQL: the source runs on a thread with a recording
//! emitter while the tests create, edit, reassign and delete tasks.

// The helpers are pg-changes' test helpers: the same database rules and the same emitter.
#[path = "../../pg-changes/tests/common/mod.rs"]
mod common;

use common::{unique_name, Received, RunningSource, TestDb};
use serde_json::json;
use tagcast_plugin_api::{testing, Op, Options};
use user_tasks::feed::{position, sql};
use user_tasks::{UserTasksConfig, UserTasksGenerator, UserTasksSource, SCHEMA_SQL};

fn settings(db: &TestDb, application: &str, rest: &str) -> String {
    format!(
        "url = \"{}\"\nschema = \"{}\"\ntable = \"{}.tasks\"\n{rest}",
        db.source_url(application),
        db.schema,
        db.schema
    )
}

fn source(settings: &str) -> UserTasksSource {
    let config: UserTasksConfig =
        tagcast_plugin_api::parse_settings(settings).expect("test settings parse");
    UserTasksSource::new(config).expect("test settings are valid")
}

/// Installs the outbox and the tasks table in the test's schema, as psql would.
fn install(db: &TestDb) {
    let s = db.schema.as_str();
    let tasks = format!("{s}.tasks");
    db.exec(&sql::render(sql::INSTALL_SQL, &[("schema", s)]));
    db.exec(&sql::render(
        SCHEMA_SQL,
        &[("schema", s), ("tasks_table", &tasks)],
    ));
}

fn user_change(op: Op, user: i64, author: &str) -> Received {
    Received {
        op,
        data: json!({ "user_tasks": user }),
        author: Some(author.to_owned()),
    }
}

#[test]
fn task_changes_tell_every_user_whose_task_set_changed() {
    let Some(db) = TestDb::connect("assignments") else {
        return;
    };
    let s = &db.schema;
    let running = RunningSource::start(
        source(&settings(&db, &unique_name("src"), "install_schema = true")),
        None,
    );
    db.wait_until(&format!(
        "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('{s}.tasks'))"
    ));

    db.exec(&format!(
        "INSERT INTO {s}.tasks (title, assignee_id, updated_by) VALUES ('write docs', 7, 'alice')"
    ));
    db.exec(&format!(
        "UPDATE {s}.tasks SET title = 'write the docs', updated_by = 'bob' WHERE id = 1"
    ));
    db.exec(&format!(
        "UPDATE {s}.tasks SET assignee_id = 8, updated_by = 'carol' WHERE id = 1"
    ));
    db.exec(&format!(
        "UPDATE {s}.tasks SET assignee_id = NULL, updated_by = 'dave' WHERE id = 1"
    ));
    db.exec(&format!(
        "UPDATE {s}.tasks SET assignee_id = 9, updated_by = 'dave' WHERE id = 1"
    ));
    db.exec(&format!(
        "BEGIN; SET LOCAL tagcast.author = 'erin'; DELETE FROM {s}.tasks WHERE id = 1; COMMIT"
    ));
    db.exec(&format!(
        "INSERT INTO {s}.tasks (title, assignee_id, updated_by) VALUES ('marker', 1000, 'zed')"
    ));

    let received = running.until(|c| c.data == json!({"user_tasks": 1000}));
    assert_eq!(
        received,
        [
            user_change(Op::Insert, 7, "alice"),
            // The title edit kept the assignee: nobody's set changed.
            user_change(Op::Delete, 7, "carol"),
            user_change(Op::Insert, 8, "carol"),
            user_change(Op::Delete, 8, "dave"),
            user_change(Op::Insert, 9, "dave"),
            user_change(Op::Delete, 9, "erin"),
            user_change(Op::Insert, 1000, "zed"),
        ]
    );
    assert_eq!(running.stop(), Ok(()));

    // What the source emits is what the generator tags.
    let generator = testing::generator("user-tasks", UserTasksGenerator::new, "")
        .expect("empty settings are valid");
    let tags = generator
        .tags(&received[2].data.to_string(), Options::default())
        .expect("tags");
    assert_eq!(tags, ["user_tasks_8"]);
}

#[test]
fn a_source_stopped_between_the_two_changes_of_a_reassignment_resumes_with_the_second() {
    let Some(db) = TestDb::connect("split_row") else {
        return;
    };
    let s = &db.schema;
    install(&db);
    db.exec(&format!(
        "INSERT INTO {s}.tasks (title, assignee_id, updated_by) VALUES ('t', 7, 'alice');
         UPDATE {s}.tasks SET assignee_id = 8, updated_by = 'bob' WHERE id = 1;
         INSERT INTO {s}.tasks (title, assignee_id, updated_by) VALUES ('marker', 1000, 'zed')"
    ));
    let app = unique_name("src");

    // The engine stops the source right after it took the second change, the first of the
    // reassignment's two: the third emit is refused.
    let stop_after_two: common::Hook = std::sync::Arc::new(|n, stop| {
        if n == 2 {
            stop.stop();
        }
    });
    let first = RunningSource::start(source(&settings(&db, &app, "")), Some(stop_after_two));
    assert_eq!(
        first.take(2),
        [
            user_change(Op::Insert, 7, "alice"),
            user_change(Op::Delete, 7, "bob")
        ]
    );
    assert_eq!(first.join(), Ok(()));
    let cursor = db.query(
        &format!("SELECT last_part FROM {s}.cursor WHERE consumer = 'user-tasks'"),
        &[],
    );
    assert_eq!(
        cursor[0].get::<_, Option<i32>>(0),
        Some(1),
        "one of the row's changes went on"
    );

    // A new source, relying on the cursor table alone, hands on the rest of the row.
    position::forget(&db.source_url(&app), s, "user-tasks");
    let second = RunningSource::start(source(&settings(&db, &app, "")), None);
    assert_eq!(
        second.until(|c| c.data == json!({"user_tasks": 1000})),
        [
            user_change(Op::Insert, 8, "bob"),
            user_change(Op::Insert, 1000, "zed")
        ]
    );
    assert_eq!(second.stop(), Ok(()));
}

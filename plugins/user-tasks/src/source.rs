//! The user-tasks source: the pg-changes outbox reader with a mapper that turns a task row
//! change into one change per user whose set of assigned tasks changed.

use serde_json::{json, Value};
use tagcast_plugin_api::tracing::error;
use tagcast_plugin_api::{Change, Data, Error, Op, Source, SourceContext};

use crate::config::UserTasksConfig;
use crate::feed::{sql, Feed, FeedSettings, Install, Mapper, OutboxRow, Watch};
use crate::generator::KEY;

/// The plugin's name, as registered and configured.
pub const PLUGIN: &str = "user-tasks";

/// sql/schema.sql: the tasks table and its watch() call.
pub const SCHEMA_SQL: &str = include_str!("../sql/schema.sql");

/// Tells users when tasks are assigned to them or taken from them.
pub struct UserTasksSource {
    feed: Feed<AssignmentMapper>,
}

impl UserTasksSource {
    /// Builds the source from the plugin's settings; connects only when run.
    pub fn new(config: UserTasksConfig) -> Result<UserTasksSource, Error> {
        let url = config.validate_for_source()?;
        let mut settings = FeedSettings::new(
            PLUGIN,
            url,
            &config.schema,
            &config.consumer,
            config.poll_interval_ms,
            config.batch_size,
            config.retention_seconds,
        )?;
        settings.tables = vec![config.table.clone()];
        let author_column = Some(config.author_column.clone()).filter(|c| !c.is_empty());
        if config.install_schema {
            let schema_sql = sql::render(
                SCHEMA_SQL,
                &[("schema", &config.schema), ("tasks_table", &config.table)],
            );
            settings.install = Some(Install {
                scripts: vec![schema_sql],
                watches: vec![Watch {
                    table: config.table.clone(),
                    key_columns: vec!["id".to_owned()],
                    columns: vec![config.assignee_column.clone()],
                    author_column,
                    author_setting: config.author_setting.clone(),
                }],
            });
        }
        Ok(UserTasksSource {
            feed: Feed::new(
                settings,
                AssignmentMapper {
                    assignee_column: config.assignee_column,
                },
            ),
        })
    }
}

impl Source for UserTasksSource {
    fn run(&mut self, ctx: &SourceContext) -> Result<(), Error> {
        self.feed
            .run(ctx)
            .map_err(|err| Error::new(err.to_string()))
    }
}

/// Maps task row changes to the changes of the affected users' task sets.
struct AssignmentMapper {
    assignee_column: String,
}

impl Mapper for AssignmentMapper {
    /// From each user's point of view: a task created for them or moved to them is an insert
    /// into their set, one deleted or moved away a delete. An update that keeps the assignee
    /// changes no one's set (the task's own entity tag covers its content) and gives nothing.
    fn map(&self, _table: usize, row: &OutboxRow) -> Vec<Change> {
        let column = self.assignee_column.as_str();
        // For a delete, `data` holds the row as it was.
        let now = row.data.get(column).unwrap_or(&Value::Null);
        let users: Vec<(Op, &Value)> = match row.op {
            Op::Insert => vec![(Op::Insert, now)],
            Op::Delete => vec![(Op::Delete, now)],
            Op::Update => {
                let before = row.old.get(column).unwrap_or(&Value::Null);
                if before == now {
                    Vec::new()
                } else {
                    vec![(Op::Delete, before), (Op::Insert, now)]
                }
            }
        };
        users
            .into_iter()
            .filter(|(_, user)| is_user_id(row, user))
            .map(|(op, user)| Change {
                op,
                data: Data::from_json(&json!({ KEY: user })),
                author: row.author.clone(),
            })
            .collect()
    }
}

/// True for a user id: a number or a string. NULL (nobody) is not one, silently; anything
/// else is logged, since that task's users are then not told.
fn is_user_id(row: &OutboxRow, user: &Value) -> bool {
    match user {
        Value::Number(_) | Value::String(_) => true,
        Value::Null => false,
        other => {
            error!(
                id = row.id,
                assignee = %other,
                "task assignee is not a user id; its users are not told"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;

    fn row(op: Op, now: Value, before: Option<Value>) -> OutboxRow {
        let mut data = Map::new();
        data.insert("assignee_id".into(), now);
        let mut old = Map::new();
        if let Some(before) = before {
            old.insert("assignee_id".into(), before);
        }
        OutboxRow {
            xid: 1,
            id: 1,
            table: "public.tasks".into(),
            op,
            key: vec![json!(1)],
            author: Some("alice".into()),
            data,
            old,
        }
    }

    fn map(row: &OutboxRow) -> Vec<(Op, String, Option<String>)> {
        let mapper = AssignmentMapper {
            assignee_column: "assignee_id".into(),
        };
        mapper
            .map(0, row)
            .into_iter()
            .map(|c| (c.op, c.data.to_json_string(), c.author))
            .collect()
    }

    #[test]
    fn a_reassignment_tells_the_old_and_the_new_assignee() {
        let changes = map(&row(Op::Update, json!(8), Some(json!(7))));
        let alice = Some("alice".to_owned());
        assert_eq!(
            changes,
            [
                (Op::Delete, r#"{"user_tasks":7}"#.to_owned(), alice.clone()),
                (Op::Insert, r#"{"user_tasks":8}"#.to_owned(), alice),
            ]
        );
    }

    #[test]
    fn an_edit_that_keeps_the_assignee_tells_nobody() {
        assert!(map(&row(Op::Update, json!(7), Some(json!(7)))).is_empty());
    }

    #[test]
    fn unassigning_tells_only_the_old_assignee() {
        let changes = map(&row(Op::Update, Value::Null, Some(json!(7))));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].1, r#"{"user_tasks":7}"#);
    }

    #[test]
    fn creating_or_deleting_an_unassigned_task_tells_nobody() {
        assert!(map(&row(Op::Insert, Value::Null, None)).is_empty());
        assert!(map(&row(Op::Delete, Value::Null, None)).is_empty());
        assert_eq!(map(&row(Op::Delete, json!(3), None))[0].0, Op::Delete);
    }
}

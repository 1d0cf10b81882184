//! The pg-changes source: the outbox reader with a mapper that turns each row into an entity
//! change (`{"class": ..., "id": ...}`), which the entity-tags generator understands.

use serde_json::{Map, Value};
use tagcast_plugin_api::{Change, Data, Error, Source, SourceContext};

use crate::config::PgChangesConfig;
use crate::feed::{Feed, FeedSettings, Install, Mapper, OutboxRow, Watch};

/// The plugin's name, as registered and configured.
pub const PLUGIN: &str = "pg-changes";

/// A PostgreSQL change feed: every row change of the watched tables, handed on once.
pub struct PgChangesSource {
    feed: Feed<EntityMapper>,
}

impl PgChangesSource {
    /// Builds the source from its settings; connects only when run.
    pub fn new(config: PgChangesConfig) -> Result<PgChangesSource, Error> {
        config.validate()?;
        let mut settings = FeedSettings::new(
            PLUGIN,
            &config.url,
            &config.schema,
            &config.consumer,
            config.poll_interval_ms,
            config.batch_size,
            config.retention_seconds,
        )?;
        settings.tables = config.tables.iter().map(|t| t.table.clone()).collect();
        if config.install_schema {
            settings.install = Some(Install {
                scripts: Vec::new(),
                watches: config
                    .tables
                    .iter()
                    .map(|t| Watch {
                        table: t.table.clone(),
                        key_columns: t.key_columns.clone(),
                        columns: t.columns.clone(),
                        author_column: t.author_column.clone(),
                        author_setting: config.author_setting.clone(),
                    })
                    .collect(),
            });
        }
        let mapper = EntityMapper {
            tables: config
                .tables
                .into_iter()
                .map(|t| EntityTable {
                    class: t.class,
                    columns: t.columns,
                })
                .collect(),
        };
        Ok(PgChangesSource {
            feed: Feed::new(settings, mapper),
        })
    }
}

impl Source for PgChangesSource {
    fn run(&mut self, ctx: &SourceContext) -> Result<(), Error> {
        self.feed
            .run(ctx)
            .map_err(|err| Error::new(err.to_string()))
    }
}

/// Maps rows to entity changes, one per row.
struct EntityMapper {
    /// Per configured table, in the feed's order.
    tables: Vec<EntityTable>,
}

struct EntityTable {
    class: String,
    columns: Vec<String>,
}

impl Mapper for EntityMapper {
    fn map(&self, table: usize, row: &OutboxRow) -> Vec<Change> {
        // The feed only passes indexes of its table list, which was built from this one.
        let Some(table) = self.tables.get(table) else {
            return Vec::new();
        };
        vec![Change {
            op: row.op,
            data: Data::from_json(&Value::Object(entity_data(table, row))),
            author: row.author.clone(),
        }]
    }
}

/// `{"class": ..., "id": ..., <configured columns>...}`; a composite key's `id` is the array
/// of its values. Other consumers may have the trigger capture more columns than this table
/// names; only the configured ones are passed on.
fn entity_data(table: &EntityTable, row: &OutboxRow) -> Map<String, Value> {
    let mut data = Map::new();
    for column in &table.columns {
        if let Some(value) = row.data.get(column) {
            data.insert(column.clone(), value.clone());
        }
    }
    data.insert("class".to_owned(), Value::String(table.class.clone()));
    let id = match row.key.as_slice() {
        [single] => single.clone(),
        values => Value::Array(values.to_vec()),
    };
    data.insert("id".to_owned(), id);
    data
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tagcast_plugin_api::Op;

    use super::*;

    fn row(key: Vec<Value>, data: Value) -> OutboxRow {
        let Value::Object(data) = data else {
            panic!("test data must be an object")
        };
        OutboxRow {
            xid: 1,
            id: 1,
            table: "public.tasks".into(),
            op: Op::Update,
            key,
            author: Some("alice".into()),
            data,
            old: Map::new(),
        }
    }

    fn table(columns: &[&str]) -> EntityTable {
        EntityTable {
            class: "App\\Entity\\Task".into(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    #[test]
    fn a_single_key_becomes_a_scalar_id() {
        let data = entity_data(&table(&[]), &row(vec![json!(42)], json!({})));
        assert_eq!(
            Value::Object(data),
            json!({"class": "App\\Entity\\Task", "id": 42})
        );
    }

    #[test]
    fn a_composite_key_becomes_an_array_id_in_key_order() {
        let data = entity_data(&table(&[]), &row(vec![json!("eu"), json!(7)], json!({})));
        assert_eq!(data["id"], json!(["eu", 7]));
    }

    #[test]
    fn only_configured_columns_join_the_data_and_never_replace_class_or_id() {
        let r = row(
            vec![json!(1)],
            json!({"project_id": 3, "secret": "x", "class": "Evil", "id": 99}),
        );
        let data = entity_data(&table(&["project_id", "class", "id"]), &r);
        assert_eq!(
            Value::Object(data),
            json!({"class": "App\\Entity\\Task", "id": 1, "project_id": 3})
        );
    }
}

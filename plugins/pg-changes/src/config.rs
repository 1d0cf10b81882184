//! The settings of the pg-changes source, as the engine hands them over (the
//! `[plugins.pg-changes.settings]` table), and their checks.

use serde::Deserialize;
use tagcast_plugin_api::Error;

use crate::feed::check_author_setting;

/// The pg-changes source's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgChangesConfig {
    /// The database, as a connection string: `postgres://user:password@host:5432/database`.
    /// TLS is not supported.
    pub url: String,
    /// The name of this reader's cursor in the cursor table. Each engine instance that needs
    /// every change (each has its own browsers) takes a name of its own; instances sharing a
    /// name take turns, one reading while the others wait.
    #[serde(default = "default_consumer")]
    pub consumer: String,
    /// The schema holding the outbox, its cursor table and functions.
    #[serde(default = "crate::feed::defaults::schema")]
    pub schema: String,
    /// The watched tables, and the entity class of each.
    pub tables: Vec<TableConfig>,
    /// The session setting that names the author when the row does not, set by the
    /// application in each transaction: `SET LOCAL tagcast.author = 'alice'`.
    #[serde(default = "crate::feed::defaults::author_setting")]
    pub author_setting: String,
    /// How long to wait for a wake-up notification before reading the outbox anyway.
    #[serde(default = "crate::feed::defaults::poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How many outbox rows one read asks for.
    #[serde(default = "crate::feed::defaults::batch_size")]
    pub batch_size: u32,
    /// Outbox rows older than this many seconds are deleted; 0 keeps them. Keep it above
    /// the longest time a consumer may be down: rows pruned unread are lost to it.
    #[serde(default = "crate::feed::defaults::retention_seconds")]
    pub retention_seconds: u64,
    /// Install the outbox schema and attach the trigger to each table at start-up. The
    /// database user then needs the rights to create them; otherwise run
    /// `sql/install.sql` and `watch()` by hand.
    #[serde(default)]
    pub install_schema: bool,
}

/// One watched table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// The table, as SQL would name it: `tasks` or `public.tasks`.
    pub table: String,
    /// The entity class its rows are, such as `App\Entity\Task`: the tags are made from it.
    pub class: String,
    /// The primary key columns; with several, a change's `id` is an array of their values in
    /// this order.
    #[serde(default = "default_key_columns")]
    pub key_columns: Vec<String>,
    /// The column that names the user who last wrote a row, if the table has one. Inserts
    /// and updates take their author from it (else from the session setting); deletes take
    /// it from the session setting only, since the row names the last writer, not the
    /// deleter.
    #[serde(default)]
    pub author_column: Option<String>,
    /// Further columns whose values go into the change data next to `class` and `id`.
    #[serde(default)]
    pub columns: Vec<String>,
}

fn default_consumer() -> String {
    "tagcast".to_owned()
}

fn default_key_columns() -> Vec<String> {
    vec!["id".to_owned()]
}

impl PgChangesConfig {
    /// Checks what serde cannot; the connection settings are checked when the feed is built.
    pub fn validate(&self) -> Result<(), Error> {
        check_author_setting(&self.author_setting)?;
        if self.tables.is_empty() {
            return Err(Error::config(
                Some("tables"),
                "list at least one table: [[...settings.tables]] with `table` and `class`",
            ));
        }
        for (i, table) in self.tables.iter().enumerate() {
            let at = |what: &str| format!("tables[{i}] ({}): {what}", table.table);
            if table.table.trim().is_empty() {
                return Err(Error::config(Some("table"), at("name the table")));
            }
            if table.class.trim().is_empty() {
                return Err(Error::config(
                    Some("class"),
                    at("name the entity class, such as App\\Entity\\Task"),
                ));
            }
            if table.key_columns.is_empty() || table.key_columns.iter().any(String::is_empty) {
                return Err(Error::config(
                    Some("key_columns"),
                    at("name at least one key column, and no empty one"),
                ));
            }
            if self.tables[..i].iter().any(|t| t.table == table.table) {
                return Err(Error::config(Some("table"), at("listed twice")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tagcast_plugin_api::parse_settings;

    use super::*;
    use crate::PgChangesSource;

    fn parse(settings: &str) -> Result<PgChangesConfig, Error> {
        parse_settings::<PgChangesConfig>(settings).and_then(|c| c.validate().map(|()| c))
    }

    const MINIMAL: &str = r#"url = "postgres://postgres@127.0.0.1/test"
[[tables]]
table = "tasks"
class = 'App\Entity\Task'
"#;

    #[test]
    fn a_minimal_config_takes_the_documented_defaults() {
        let config = parse(MINIMAL).expect("valid");
        assert_eq!(config.consumer, "tagcast");
        assert_eq!(config.schema, "tagcast");
        assert_eq!(config.author_setting, "tagcast.author");
        assert_eq!(config.tables[0].key_columns, ["id"]);
        assert_eq!(config.tables[0].class, "App\\Entity\\Task");
        assert!(!config.install_schema);
        assert!(PgChangesSource::new(config).is_ok());
    }

    #[test]
    fn bad_settings_name_their_key() {
        let cases = [
            (format!("{MINIMAL}colums = []"), "colums"),
            (
                "url = \"postgres://h/db\"\ntables = []".to_owned(),
                "tables",
            ),
            (format!("{MINIMAL}key_columns = []"), "key_columns"),
            (
                format!("author_setting = \"author\"\n{MINIMAL}"),
                "author_setting",
            ),
            (
                format!("{MINIMAL}[[tables]]\ntable = \"tasks\"\nclass = \"X\""),
                "table",
            ),
        ];
        for (settings, key) in cases {
            let err = parse(&settings).expect_err(&settings);
            assert_eq!(err.key(), Some(key), "{settings}: {err}");
        }
    }

    #[test]
    fn the_example_engine_config_holds_valid_settings() {
        let text = include_str!("../../../config/postgres.toml");
        let doc: toml::Table = toml::from_str(text).expect("config/postgres.toml is TOML");
        let settings = &doc["plugins"]["pg-changes"]["settings"];
        let settings = toml::to_string(settings).expect("a table serializes");
        let config = parse(&settings).expect("the example settings are valid");
        assert!(PgChangesSource::new(config).is_ok());
    }
}

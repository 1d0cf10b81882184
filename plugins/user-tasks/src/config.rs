//! The settings of the user-tasks plugin (`[plugins.user-tasks.settings]`). The engine hands
//! the same table to the generator and to the source: the generator needs none of it, the
//! source all of it.

use serde::Deserialize;
use tagcast_plugin_api::Error;

use crate::feed::{check_author_setting, sql};

/// The user-tasks plugin's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserTasksConfig {
    /// The database, as a connection string: `postgres://user:password@host:5432/database`.
    /// Needed by the source; the generator alone works without it.
    #[serde(default)]
    pub url: Option<String>,
    /// The name of this reader's cursor in the outbox's cursor table.
    #[serde(default = "default_consumer")]
    pub consumer: String,
    /// The schema holding the pg-changes outbox.
    #[serde(default = "crate::feed::defaults::schema")]
    pub schema: String,
    /// The tasks table, as SQL would name it.
    #[serde(default = "default_table")]
    pub table: String,
    /// The column holding the id of the user a task is assigned to (NULL: nobody).
    #[serde(default = "default_assignee_column")]
    pub assignee_column: String,
    /// The column naming the user who last wrote a task; empty for none. Deletes take their
    /// author from the session setting only.
    #[serde(default = "default_author_column")]
    pub author_column: String,
    /// The session setting that names the author when the row does not.
    #[serde(default = "crate::feed::defaults::author_setting")]
    pub author_setting: String,
    /// How long to wait for a wake-up notification before reading the outbox anyway.
    #[serde(default = "crate::feed::defaults::poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How many outbox rows one read asks for.
    #[serde(default = "crate::feed::defaults::batch_size")]
    pub batch_size: u32,
    /// Outbox rows older than this many seconds are deleted; 0 keeps them.
    #[serde(default = "crate::feed::defaults::retention_seconds")]
    pub retention_seconds: u64,
    /// At start-up, install the outbox (pg-changes' install.sql), create the tasks table
    /// (sql/schema.sql) and watch it.
    #[serde(default)]
    pub install_schema: bool,
}

fn default_consumer() -> String {
    "user-tasks".to_owned()
}

fn default_table() -> String {
    "tasks".to_owned()
}

fn default_assignee_column() -> String {
    "assignee_id".to_owned()
}

fn default_author_column() -> String {
    "updated_by".to_owned()
}

impl UserTasksConfig {
    /// Checks what the source needs beyond what serde checks.
    pub fn validate_for_source(&self) -> Result<&str, Error> {
        let url = self.url.as_deref().ok_or_else(|| {
            Error::config(
                Some("url"),
                "the user-tasks source needs the database: url = \"postgres://user@host/db\"",
            )
        })?;
        check_author_setting(&self.author_setting)?;
        if self.assignee_column.is_empty() {
            return Err(Error::config(
                Some("assignee_column"),
                "name the column holding the assignee's id",
            ));
        }
        // sql/schema.sql takes the table name as raw SQL text.
        if self.install_schema && !sql::is_plain_table(&self.table) {
            return Err(Error::config(
                Some("table"),
                format!(
                    "`{}` must be a plain lowercase name (tasks or schema.tasks) \
                     for install_schema",
                    self.table
                ),
            ));
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use tagcast_plugin_api::parse_settings;

    use super::*;
    use crate::UserTasksSource;

    #[test]
    fn the_source_needs_a_url_and_the_generator_does_not() {
        let config: UserTasksConfig = parse_settings("").expect("every key is optional");
        assert_eq!(config.table, "tasks");
        assert_eq!(config.consumer, "user-tasks");
        let err = UserTasksSource::new(config).err().expect("no url");
        assert_eq!(err.key(), Some("url"));
    }

    #[test]
    fn installing_needs_a_plain_table_name() {
        let config: UserTasksConfig = parse_settings(
            "url = \"postgres://h/db\"\ninstall_schema = true\ntable = \"tasks; drop\"",
        )
        .expect("parses");
        assert_eq!(
            config
                .validate_for_source()
                .err()
                .and_then(|e| e.key().map(str::to_owned)),
            Some("table".to_owned())
        );
    }

    #[test]
    fn the_example_engine_config_holds_valid_settings() {
        let text = include_str!("../../../config/postgres.toml");
        let doc: toml::Table = toml::from_str(text).expect("config/postgres.toml is TOML");
        let settings = &doc["plugins"]["user-tasks"]["settings"];
        let settings = toml::to_string(settings).expect("a table serializes");
        let config: UserTasksConfig = parse_settings(&settings).expect("valid settings");
        assert!(UserTasksSource::new(config).is_ok());
    }
}

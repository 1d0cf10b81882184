//! The user-tasks generator: turns `{"user_tasks": <user id>}` into the tag
//! `user_tasks_<user id>`, which a page listing a user's tasks subscribes to.

use tagcast_plugin_api::{Error, Generator, Kind, Options, Tags, Value};

use crate::config::UserTasksConfig;

/// The data member this generator reads, and the prefix of its tags.
pub const KEY: &str = "user_tasks";

/// Makes `user_tasks_<id>` tags.
pub struct UserTasksGenerator;

impl UserTasksGenerator {
    /// Builds the generator. It takes the plugin's settings only because the engine hands
    /// the same table to the source; it needs none of them.
    pub fn new(_config: UserTasksConfig) -> Result<UserTasksGenerator, Error> {
        Ok(UserTasksGenerator)
    }
}

impl Generator for UserTasksGenerator {
    fn supports(&self, data: Value<'_>) -> bool {
        data.get(KEY)
            .is_some_and(|id| matches!(id.kind(), Kind::Number | Kind::String))
    }

    fn generate(&self, data: Value<'_>, _options: Options, tags: &mut Tags) -> Result<(), Error> {
        let Some(id) = data.get(KEY) else {
            return Ok(());
        };
        let mut tag = format!("{KEY}_");
        if id.write_scalar(&mut tag) {
            tags.push(tag);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tagcast_plugin_api::testing;

    use super::*;

    fn generator() -> testing::TestGenerator {
        testing::generator("user-tasks", UserTasksGenerator::new, "")
            .expect("empty settings are valid")
    }

    #[test]
    fn a_user_id_becomes_the_user_tasks_tag() {
        let g = generator();
        assert_eq!(
            g.tags(r#"{"user_tasks": 7}"#, Options::default()).unwrap(),
            ["user_tasks_7"]
        );
        assert_eq!(
            g.tags(r#"{"user_tasks": "alice"}"#, Options::default())
                .unwrap(),
            ["user_tasks_alice"]
        );
    }

    #[test]
    fn other_data_is_not_supported() {
        let g = generator();
        assert!(!g
            .supports(r#"{"class": "App\\Entity\\Task", "id": 1}"#)
            .unwrap());
        assert!(!g.supports(r#"{"user_tasks": null}"#).unwrap());
        assert!(!g.supports(r#"{"user_tasks": [1, 2]}"#).unwrap());
        assert!(!g.supports(r#"[1]"#).unwrap());
    }

    #[test]
    fn the_source_settings_are_accepted_and_typos_are_not() {
        let settings = r#"url = "postgres://postgres@127.0.0.1/test"
table = "public.tasks""#;
        assert!(testing::generator("user-tasks", UserTasksGenerator::new, settings).is_ok());
        let err = testing::generator("user-tasks", UserTasksGenerator::new, "tabel = \"x\"")
            .err()
            .expect("an unknown key is rejected");
        assert_eq!(err.key(), Some("tabel"));
    }
}

//! The settings of entity-tags, read by plugin-api from the plugin's `settings` table in the
//! engine's config, and their validation.

use serde::Deserialize;
use tagcast_plugin_api::Error;

/// The settings of the entity-tags generator. Every setting is optional; the defaults read
/// data such as `{"class": "App\\Entity\\Task", "id": 42}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntityConfig {
    /// The field of an entity object that holds its class name, such as
    /// `"App\\Entity\\Task"`. An object is an entity when this field is a non-empty string.
    /// Default: `"class"`.
    pub class_field: String,

    /// The fields that hold the entity's id, in the order their values are joined with `_`
    /// (a composite id may also be one field holding an array, such as `[7, "b"]`). An
    /// entity missing any of them, or with a null one, is unsaved and gets no entity tag.
    /// Default: `["id"]`.
    pub id_fields: Vec<String>,
}

impl Default for EntityConfig {
    fn default() -> Self {
        EntityConfig {
            class_field: "class".to_owned(),
            id_fields: vec!["id".to_owned()],
        }
    }
}

impl EntityConfig {
    /// Rejects settings that parse but could never find an entity or its id, or that name
    /// one field twice (a typo: the same id part would be written twice).
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.class_field.is_empty() {
            return Err(Error::config(
                Some("class_field"),
                "is empty; name the field that holds the entity's class, such as \"class\"",
            ));
        }
        if self.id_fields.is_empty() {
            return Err(Error::config(
                Some("id_fields"),
                "names no field; list the fields that hold the entity's id, such as [\"id\"]",
            ));
        }
        for (i, field) in self.id_fields.iter().enumerate() {
            if field.is_empty() {
                return Err(Error::config(
                    Some("id_fields"),
                    format!("entry {} is empty; each entry names an id field", i + 1),
                ));
            }
            if self.id_fields[..i].contains(field) {
                return Err(Error::config(
                    Some("id_fields"),
                    format!("names `{field}` twice; list each id field once"),
                ));
            }
            if *field == self.class_field {
                return Err(Error::config(
                    Some("id_fields"),
                    format!("names `{field}`, the class field; an id field holds the id"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tagcast_plugin_api::{parse_settings, testing, ErrorKind};

    use super::EntityConfig;
    use crate::EntityGenerator;

    /// The error building the generator from `settings` gives; panics if it builds.
    fn rejection(settings: &str) -> tagcast_plugin_api::Error {
        match testing::generator("entity-tags", EntityGenerator::new, settings) {
            Ok(_) => panic!("settings {settings:?} were accepted"),
            Err(err) => err,
        }
    }

    #[test]
    fn empty_settings_give_the_oro_field_names() {
        let config: EntityConfig = parse_settings("").expect("empty settings parse");
        assert_eq!(config.class_field, "class");
        assert_eq!(config.id_fields, ["id"]);
        assert_eq!(config, EntityConfig::default());
    }

    #[test]
    fn unknown_setting_is_rejected_naming_the_key() {
        let err = rejection("class_feild = \"type\"");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(err.key(), Some("class_feild"), "{err}");
    }

    #[test]
    fn settings_that_cannot_find_an_entity_or_its_id_are_rejected() {
        for (settings, key) in [
            ("class_field = \"\"", "class_field"),
            ("id_fields = []", "id_fields"),
            ("id_fields = [\"id\", \"\"]", "id_fields"),
            ("id_fields = [\"id\", \"id\"]", "id_fields"),
            ("id_fields = [\"class\"]", "id_fields"),
        ] {
            let err = rejection(settings);
            assert_eq!(err.kind(), ErrorKind::Config, "{settings}: {err}");
            assert_eq!(err.key(), Some(key), "{settings}: {err}");
        }
    }
}

//! The settings of simple-tags, read by plugin-api from the plugin's `settings` table in the
//! engine's config, and their validation.

use serde::Deserialize;
use tagcast_plugin_api::Error;

/// The settings of the simple-tags generator. Every setting is optional; the defaults are
/// Oro's keys and read data such as
/// `{"name": "system_configuration", "params": ["platform"], "children": [...]}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimpleConfig {
    /// The field holding the tag's name. An object is tagged when this field is a non-empty
    /// string. Default: `"name"`.
    pub name_field: String,

    /// The field holding the tag's parameters: an array of strings and numbers appended to
    /// the name, each after a `_`. Missing, null or empty means the name alone. Default:
    /// `"params"`.
    pub params_field: String,

    /// The field holding the children: an array of objects of the same shape whose tags are
    /// added when nested data is asked for, one level deep. Default: `"children"`.
    pub children_field: String,
}

impl Default for SimpleConfig {
    fn default() -> Self {
        SimpleConfig {
            name_field: "name".to_owned(),
            params_field: "params".to_owned(),
            children_field: "children".to_owned(),
        }
    }
}

impl SimpleConfig {
    /// Rejects field names that are empty or shared: either is a typo, and a shared one would
    /// read one field as two things.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let fields = [
            ("name_field", &self.name_field),
            ("params_field", &self.params_field),
            ("children_field", &self.children_field),
        ];
        for (i, (key, field)) in fields.iter().enumerate() {
            if field.is_empty() {
                return Err(Error::config(
                    Some(key),
                    "is empty; name the field of the data to read",
                ));
            }
            if let Some((other, _)) = fields[..i].iter().find(|(_, f)| f == field) {
                return Err(Error::config(
                    Some(key),
                    format!("names `{field}`, as `{other}` does; give each setting its own field"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tagcast_plugin_api::{parse_settings, testing, ErrorKind};

    use super::SimpleConfig;
    use crate::SimpleGenerator;

    /// The error building the generator from `settings` gives; panics if it builds.
    fn rejection(settings: &str) -> tagcast_plugin_api::Error {
        match testing::generator("simple-tags", SimpleGenerator::new, settings) {
            Ok(_) => panic!("settings {settings:?} were accepted"),
            Err(err) => err,
        }
    }

    #[test]
    fn empty_settings_give_the_oro_field_names() {
        let config: SimpleConfig = parse_settings("").expect("empty settings parse");
        assert_eq!(config.name_field, "name");
        assert_eq!(config.params_field, "params");
        assert_eq!(config.children_field, "children");
        assert_eq!(config, SimpleConfig::default());
    }

    #[test]
    fn unknown_setting_is_rejected_naming_the_key() {
        let err = rejection("param_field = \"args\"");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(err.key(), Some("param_field"), "{err}");
    }

    #[test]
    fn empty_or_shared_field_names_are_rejected() {
        for (settings, key) in [
            ("name_field = \"\"", "name_field"),
            ("params_field = \"\"", "params_field"),
            ("children_field = \"\"", "children_field"),
            ("params_field = \"name\"", "params_field"),
            ("children_field = \"params\"", "children_field"),
        ] {
            let err = rejection(settings);
            assert_eq!(err.kind(), ErrorKind::Config, "{settings}: {err}");
            assert_eq!(err.key(), Some(key), "{settings}: {err}");
        }
    }
}

//! The simple tag generator: reads a named object (name, params, children) from the change
//! data and writes Oro's simple, collection and nested tags. Called by the engine's chain
//! through the ABI object plugin-api builds, or in-process by the chain benchmark.

use tagcast_plugin_api::{Error, Generator, Kind, Options, Tags, Value};

use crate::SimpleConfig;

/// Appended to a name to name every list of that kind (Oro's `COLLECTION_SUFFIX`).
const COLLECTION_SUFFIX: &str = "_type_collection";

/// Room reserved for a number written as text: `i64::MIN` and `u64::MAX` take 20 bytes. A
/// float may take more; the tag then grows once, which is only a missed reservation.
const NUMBER_LEN: usize = 20;

/// Makes Oro-compatible tags for named objects such as
/// `{"name": "system_configuration", "params": ["platform", "general_setup"]}`:
///
/// - the tag `system_configuration_platform_general_setup`: the name and its params joined
///   by `_`, written as they are;
/// - with [`Options::collection`], the collection tag `system_configuration_type_collection`
///   (params left out);
/// - with [`Options::nested`], the tags of its children, one level deep.
///
/// Build one with [`SimpleGenerator::new`].
#[derive(Debug)]
pub struct SimpleGenerator {
    /// The field holding the name.
    name_field: String,
    /// The field holding the params.
    params_field: String,
    /// The field holding the children.
    children_field: String,
}

impl SimpleGenerator {
    /// Builds the generator from its settings; fails with a configuration error naming the
    /// setting when a field name is empty or used twice.
    pub fn new(config: SimpleConfig) -> Result<Self, Error> {
        config.validate()?;
        Ok(SimpleGenerator {
            name_field: config.name_field,
            params_field: config.params_field,
            children_field: config.children_field,
        })
    }

    /// The name of a tagged object: its name field, when that is a non-empty string. None
    /// for anything else, including values that are not objects.
    fn name_of<'a>(&self, value: Value<'a>) -> Option<&'a str> {
        value
            .get(&self.name_field)?
            .as_str()
            .filter(|name| !name.is_empty())
    }

    /// The tag of `data`, whose name is `name`: the name and each param after a `_`.
    ///
    /// Params that are not an array of strings and numbers are an error rather than a
    /// guess: Oro's PHP would fail on a non-array and write `null`, `true` and `false` as
    /// `""`, `"1"` and `""`, a tag no page is likely to watch; the error is logged and
    /// counted by the engine, which shows the producer's mistake.
    fn tag(&self, name: &str, data: Value<'_>) -> Result<String, Error> {
        let params = data.get(&self.params_field).filter(|p| !p.is_null());

        // Check and measure first, so that the tag is written into one exact allocation.
        let mut len = name.len();
        if let Some(params) = params {
            if !params.is_array() {
                return Err(self.bad_params(name, format!("is {}", kind_name(params.kind()))));
            }
            for (i, param) in params.items().enumerate() {
                len += 1 + match param.kind() {
                    Kind::String => param.as_str().map_or(0, str::len),
                    Kind::Number => NUMBER_LEN,
                    kind @ (Kind::Null | Kind::Bool | Kind::Array | Kind::Object) => {
                        let found = format!("has {} at index {i}", kind_name(kind));
                        return Err(self.bad_params(name, found));
                    }
                };
            }
        }

        let mut tag = String::with_capacity(len);
        tag.push_str(name);
        for param in params.iter().flat_map(Value::items) {
            tag.push('_');
            // Always writes: checked above that every param is a string or a number.
            // Limitation: floats are written by Rust's `Display`, which agrees with PHP for
            // usual values (`1.5`, `42.0` as `42`) but writes `1e21` in full where PHP writes
            // `1.0E+21`; such params would give a tag the PHP side does not make.
            param.write_scalar(&mut tag);
        }
        Ok(tag)
    }

    /// The error for params of `name` that are not an array of strings and numbers.
    fn bad_params(&self, name: &str, found: String) -> Error {
        Error::new(format!(
            "`{}` of `{name}` {found}; it must be an array of strings and numbers \
             (or be left out)",
            self.params_field
        ))
    }
}

impl Generator for SimpleGenerator {
    fn supports(&self, data: Value<'_>) -> bool {
        self.name_of(data).is_some()
    }

    fn generate(&self, data: Value<'_>, options: Options, tags: &mut Tags) -> Result<(), Error> {
        let Some(name) = self.name_of(data) else {
            return Ok(());
        };
        tags.push(self.tag(name, data)?);

        if options.collection {
            let mut tag = String::with_capacity(name.len() + COLLECTION_SUFFIX.len());
            tag.push_str(name);
            tag.push_str(COLLECTION_SUFFIX);
            tags.push(tag);
        }

        // One level deep, as Oro does: a child's own children and collection are not what
        // changed. Children that are not tagged objects, or children that are not an array,
        // are skipped, as Oro skips them.
        if options.nested {
            if let Some(children) = data.get(&self.children_field) {
                for child in children.items() {
                    if let Some(child_name) = self.name_of(child) {
                        tags.push(self.tag(child_name, child)?);
                    }
                }
            }
        }
        Ok(())
    }
}

/// A JSON kind as an error message writes it.
fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Null => "null",
        Kind::Bool => "a boolean",
        Kind::Number => "a number",
        Kind::String => "a string",
        Kind::Array => "an array",
        Kind::Object => "an object",
    }
}

#[cfg(test)]
mod tests {
    use tagcast_plugin_api::testing::{self, check, TestGenerator, ALL, COLLECTION, NESTED, PLAIN};
    use tagcast_plugin_api::ErrorKind;

    use crate::SimpleGenerator;

    fn generator(settings: &str) -> TestGenerator {
        testing::generator("simple-tags", SimpleGenerator::new, settings)
            .unwrap_or_else(|err| panic!("settings {settings:?} rejected: {err}"))
    }

    #[test]
    fn tag_is_name_then_params() {
        check(
            &generator(""),
            &[
                (
                    "oro example",
                    r#"{"name":"system_configuration","params":["platform","general_setup"]}"#,
                    PLAIN,
                    &["system_configuration_platform_general_setup"],
                ),
                (
                    "numbers; an integral float as PHP writes it",
                    r#"{"name":"n","params":[3,-1,1.5,42.0,"x"]}"#,
                    PLAIN,
                    &["n_3_-1_1.5_42_x"],
                ),
                (
                    "strings kept as they are",
                    r#"{"name":"a b\\é","params":["c-d"]}"#,
                    PLAIN,
                    &["a b\\é_c-d"],
                ),
                (
                    "empty string param",
                    r#"{"name":"n","params":["", "x"]}"#,
                    PLAIN,
                    &["n__x"],
                ),
                ("empty params", r#"{"name":"n","params":[]}"#, PLAIN, &["n"]),
                ("missing params", r#"{"name":"n"}"#, PLAIN, &["n"]),
                (
                    "null params",
                    r#"{"name":"n","params":null}"#,
                    PLAIN,
                    &["n"],
                ),
            ],
        );
    }

    #[test]
    fn collection_tag_leaves_params_out_and_only_when_asked() {
        let data = r#"{"name":"system_configuration","params":["platform"]}"#;
        check(
            &generator(""),
            &[
                ("not asked", data, PLAIN, &["system_configuration_platform"]),
                (
                    "asked",
                    data,
                    COLLECTION,
                    &[
                        "system_configuration_platform",
                        "system_configuration_type_collection",
                    ],
                ),
            ],
        );
    }

    #[test]
    fn children_add_their_tags_one_level_deep() {
        let menu = r#"{
            "name": "menu",
            "params": ["main"],
            "children": [
                {"name": "item", "params": [1], "children": [{"name": "deep"}]},
                {"label": "no name"},
                {"name": ""},
                "item",
                [{"name": "in_array"}],
                {"name": "item", "params": [2]}
            ]
        }"#;
        check(
            &generator(""),
            &[
                ("not asked", menu, PLAIN, &["menu_main"]),
                ("asked", menu, NESTED, &["menu_main", "item_1", "item_2"]),
                (
                    "tag, collection, then children; no child collection tags",
                    menu,
                    ALL,
                    &["menu_main", "menu_type_collection", "item_1", "item_2"],
                ),
                (
                    "children not an array are skipped",
                    r#"{"name":"n","children":{"name":"c"}}"#,
                    NESTED,
                    &["n"],
                ),
            ],
        );
    }

    #[test]
    fn data_without_a_name_is_not_supported() {
        let gen = generator("");
        for data in [
            "42",
            "1.5",
            "null",
            "true",
            r#""system_configuration""#,
            "[]",
            r#"[{"name":"n"}]"#,
            "{}",
            r#"{"params":["p"]}"#,
            r#"{"name":""}"#,
            r#"{"name":null}"#,
            r#"{"name":5}"#,
            r#"{"name":["n"]}"#,
        ] {
            assert_eq!(
                gen.supports(data),
                Ok(false),
                "{data} must not be supported"
            );
            assert_eq!(gen.tags(data, ALL), Ok(vec![]), "{data} must get no tags");
        }
    }

    #[test]
    fn params_other_than_strings_and_numbers_are_an_error_naming_them() {
        let gen = generator("");
        for (data, found) in [
            (r#"{"name":"n","params":"p"}"#, "is a string"),
            (r#"{"name":"n","params":{"a":1}}"#, "is an object"),
            (r#"{"name":"n","params":["a",null]}"#, "has null at index 1"),
            (
                r#"{"name":"n","params":[true]}"#,
                "has a boolean at index 0",
            ),
            (
                r#"{"name":"n","params":[["a"]]}"#,
                "has an array at index 0",
            ),
            (
                r#"{"name":"n","children":[{"name":"c","params":[{}]}]}"#,
                "has an object at index 0",
            ),
        ] {
            let err = gen
                .tags(data, NESTED)
                .expect_err(&format!("{data} must be an error"));
            assert_eq!(err.kind(), ErrorKind::Failed, "{data}: {err}");
            assert!(err.message().starts_with("`params` of `"), "{data}: {err}");
            assert!(
                err.message().contains(found),
                "{data}: {err} should say {found}"
            );
        }
    }

    #[test]
    fn custom_field_names_are_read_for_data_and_children() {
        let gen =
            generator("name_field = \"key\"\nparams_field = \"args\"\nchildren_field = \"items\"");
        assert_eq!(gen.supports(r#"{"name":"n"}"#), Ok(false));
        check(
            &gen,
            &[
                (
                    "default names ignored",
                    r#"{"key":"k","args":["a",1],"name":"n","params":["p"]}"#,
                    COLLECTION,
                    &["k_a_1", "k_type_collection"],
                ),
                (
                    "children use the same names",
                    r#"{"key":"k","items":[{"key":"c","args":[2]},{"name":"x"}],"children":[{"key":"d"}]}"#,
                    NESTED,
                    &["k", "c_2"],
                ),
            ],
        );
    }
}

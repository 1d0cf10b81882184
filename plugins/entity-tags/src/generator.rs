//! The entity tag generator: reads an entity object (or a bare class name) from the change
//! data and writes Oro's entity, collection and nested tags. Called by the engine's chain
//! through the ABI object plugin-api builds, or in-process by the chain benchmark.

use tagcast_plugin_api::{Error, Generator, Kind, Options, Tags, Value};

use crate::EntityConfig;

/// Appended to a class tag to name every list of that class (Oro's `COLLECTION_SUFFIX`).
const COLLECTION_SUFFIX: &str = "_type_collection";

/// Room reserved for a number written as text: `i64::MIN` and `u64::MAX` take 20 bytes. A
/// float may take more; the tag then grows once, which is only a missed reservation.
const NUMBER_LEN: usize = 20;

/// Makes Oro-compatible tags for entity objects such as
/// `{"class": "App\\Entity\\Task", "id": 42}`:
///
/// - the entity tag `App_Entity_Task_42`, when the entity has an id;
/// - with [`Options::collection`], the collection tag `App_Entity_Task_type_collection`;
/// - with [`Options::nested`], the entity tags of the entities held by its fields, one
///   level deep.
///
/// A bare class name as data stands for the class as a whole and only gets its collection
/// tag. Build one with [`EntityGenerator::new`].
#[derive(Debug)]
pub struct EntityGenerator {
    /// The field holding an entity's class name.
    class_field: String,
    /// The fields holding an entity's id, in joining order; never empty (checked by
    /// [`EntityConfig::validate`]).
    id_fields: Vec<String>,
}

impl EntityGenerator {
    /// Builds the generator from its settings; fails with a configuration error naming the
    /// setting when they could never find an entity or its id.
    pub fn new(config: EntityConfig) -> Result<Self, Error> {
        config.validate()?;
        Ok(EntityGenerator {
            class_field: config.class_field,
            id_fields: config.id_fields,
        })
    }

    /// The class name of an entity object: its class field, when that is a non-empty string.
    /// None for anything else, including values that are not objects.
    fn class_of<'a>(&self, value: Value<'a>) -> Option<&'a str> {
        value
            .get(&self.class_field)?
            .as_str()
            .filter(|class| !class.is_empty())
    }

    /// The entity tag of `entity`, whose class is `class`, and the length of its class-tag
    /// prefix. None when the entity has no complete id: an unsaved entity has no identity.
    fn entity_tag(&self, class: &str, entity: Value<'_>) -> Option<(String, usize)> {
        // Check the id and measure it first, so that an unsaved entity costs no allocation
        // and a saved one exactly one. Looking the fields up twice is cheap: ids usually
        // come first in the object.
        let id_len = self.id_len(entity)?;
        let mut tag = String::with_capacity(class.len() + id_len);
        push_class_tag(&mut tag, class);
        let class_tag_len = tag.len();

        for field in &self.id_fields {
            // Never returns here: id_len found every field.
            let value = entity.get(field)?;
            for part in id_parts(value) {
                tag.push('_');
                // Always writes: id_len checked that every part is a string or a number.
                // Limitation: floats are written by Rust's `Display`, which agrees with PHP
                // for usual values (`1.5`, `42.0` as `42`) but writes `1e21` in full where
                // PHP writes `1.0E+21`, and integers past i64::MAX exactly where PHP has a
                // float; such ids would get tags the PHP side does not make.
                part.write_scalar(&mut tag);
            }
        }
        Some((tag, class_tag_len))
    }

    /// The bytes the id of `entity` takes in its tag, separators included (an upper bound
    /// for numbers). None when an id field is missing or null, an array id is empty, or a
    /// part is anything but a string or a number.
    fn id_len(&self, entity: Value<'_>) -> Option<usize> {
        let mut len = 0;
        for field in &self.id_fields {
            let value = entity.get(field)?;
            if value.is_array() && value.is_empty() {
                return None;
            }
            for part in id_parts(value) {
                len += 1 + match part.kind() {
                    Kind::String => part.as_str().map_or(0, str::len),
                    Kind::Number => NUMBER_LEN,
                    Kind::Null | Kind::Bool | Kind::Array | Kind::Object => return None,
                };
            }
        }
        Some(len)
    }

    /// Appends the entity tag of `value` when it is an entity object with an id.
    fn push_entity_tag(&self, value: Value<'_>, tags: &mut Tags) {
        if let Some((tag, _)) = self
            .class_of(value)
            .and_then(|class| self.entity_tag(class, value))
        {
            tags.push(tag);
        }
    }

    /// Appends the entity tags of the entities held by the fields of `entity`, alone or in
    /// arrays. Only their entity tags and only one level deep, as Oro does: their own nested
    /// entities and their collections are not what changed.
    fn push_nested_tags(&self, entity: Value<'_>, tags: &mut Tags) {
        for (_, value) in entity.entries() {
            match value.kind() {
                Kind::Object => self.push_entity_tag(value, tags),
                // Items that are not entity objects (ids of a composite key, say) are skipped.
                Kind::Array => {
                    for item in value.items() {
                        self.push_entity_tag(item, tags);
                    }
                }
                Kind::Null | Kind::Bool | Kind::Number | Kind::String => {}
            }
        }
    }
}

impl Generator for EntityGenerator {
    fn supports(&self, data: Value<'_>) -> bool {
        match data.as_str() {
            Some(class) => !class.is_empty(),
            None => self.class_of(data).is_some(),
        }
    }

    fn generate(&self, data: Value<'_>, options: Options, tags: &mut Tags) -> Result<(), Error> {
        // A bare class name stands for the whole class: only lists of it can be outdated.
        if let Some(class) = data.as_str() {
            if options.collection && !class.is_empty() {
                tags.push(collection_tag_of_class(class));
            }
            return Ok(());
        }

        let Some(class) = self.class_of(data) else {
            return Ok(());
        };
        match self.entity_tag(class, data) {
            Some((tag, class_tag_len)) => {
                // The collection tag reuses the class tag already written into the entity tag.
                let collection = options
                    .collection
                    .then(|| collection_tag(&tag[..class_tag_len]));
                tags.push(tag);
                if let Some(collection) = collection {
                    tags.push(collection);
                }
                // As in Oro, only a saved entity's associations are tagged: an unsaved
                // entity's references are not changes of the entities they point to.
                if options.nested {
                    self.push_nested_tags(data, tags);
                }
            }
            None => {
                if options.collection {
                    tags.push(collection_tag_of_class(class));
                }
            }
        }
        Ok(())
    }
}

/// The values making up an id: the items of an array (a composite id), else the value.
fn id_parts<'a>(value: Value<'a>) -> impl Iterator<Item = Value<'a>> + 'a {
    let (single, items) = if value.is_array() {
        (None, Some(value.items()))
    } else {
        (Some(value), None)
    };
    single.into_iter().chain(items.into_iter().flatten())
}

/// Writes the class tag of `class`: every run of bytes that are not ASCII letters becomes
/// one `_`, as PHP's `preg_replace('#[^a-z]+#i', '_', $class)` does. That pattern works on
/// bytes, so a non-ASCII letter (several bytes, none an ASCII letter) joins the run around
/// it: `App\Entité` gives `App_Entit_`.
fn push_class_tag(out: &mut String, class: &str) {
    let bytes = class.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let letters = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        // Both ends are char boundaries, so the slice cannot panic: `letters` is 0, the end,
        // or at an ASCII letter, and `i` is `letters` or just past an ASCII letter (UTF-8
        // never uses ASCII bytes inside a multi-byte char).
        out.push_str(&class[letters..i]);
        if i < bytes.len() {
            out.push('_');
            while i < bytes.len() && !bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
        }
    }
}

/// The collection tag for a class tag.
fn collection_tag(class_tag: &str) -> String {
    let mut tag = String::with_capacity(class_tag.len() + COLLECTION_SUFFIX.len());
    tag.push_str(class_tag);
    tag.push_str(COLLECTION_SUFFIX);
    tag
}

/// The collection tag for a class name. Its class tag is never longer than the name.
fn collection_tag_of_class(class: &str) -> String {
    let mut tag = String::with_capacity(class.len() + COLLECTION_SUFFIX.len());
    push_class_tag(&mut tag, class);
    tag.push_str(COLLECTION_SUFFIX);
    tag
}

#[cfg(test)]
mod tests {
    use tagcast_plugin_api::testing::{
        self, check, Case, TestGenerator, ALL, COLLECTION, NESTED, PLAIN,
    };

    use crate::EntityGenerator;

    fn generator(settings: &str) -> TestGenerator {
        testing::generator("entity-tags", EntityGenerator::new, settings)
            .unwrap_or_else(|err| panic!("settings {settings:?} rejected: {err}"))
    }

    #[test]
    fn entity_tag_is_class_tag_then_id() {
        check(
            &generator(""),
            &[
                (
                    "integer id",
                    r#"{"class":"App\\Entity\\Task","id":42}"#,
                    PLAIN,
                    &["App_Entity_Task_42"],
                ),
                (
                    "id before class",
                    r#"{"id":42,"class":"App\\Entity\\Task"}"#,
                    PLAIN,
                    &["App_Entity_Task_42"],
                ),
                (
                    "zero id",
                    r#"{"class":"App\\Entity\\Task","id":0}"#,
                    PLAIN,
                    &["App_Entity_Task_0"],
                ),
                ("negative id", r#"{"class":"C","id":-3}"#, PLAIN, &["C_-3"]),
                (
                    "u64 id",
                    r#"{"class":"C","id":18446744073709551615}"#,
                    PLAIN,
                    &["C_18446744073709551615"],
                ),
                ("float id", r#"{"class":"C","id":1.5}"#, PLAIN, &["C_1.5"]),
                (
                    "integral float id as PHP writes it",
                    r#"{"class":"C","id":42.0}"#,
                    PLAIN,
                    &["C_42"],
                ),
                (
                    "string id kept as is",
                    r#"{"class":"C","id":"a-1 é"}"#,
                    PLAIN,
                    &["C_a-1 é"],
                ),
                (
                    "numeric string id",
                    r#"{"class":"C","id":"42"}"#,
                    PLAIN,
                    &["C_42"],
                ),
                (
                    "empty string id",
                    r#"{"class":"C","id":""}"#,
                    PLAIN,
                    &["C_"],
                ),
                (
                    "non-ascii class",
                    r#"{"class":"App\\Entité\\Tâche","id":1}"#,
                    PLAIN,
                    &["App_Entit_T_che_1"],
                ),
            ],
        );
    }

    #[test]
    fn class_tag_replaces_each_run_of_non_letters_with_one_underscore() {
        // Bare class names with `collection` isolate the class tag.
        check(
            &generator(""),
            &[
                (
                    "oro example",
                    r#""App\\Entity\\Task""#,
                    COLLECTION,
                    &["App_Entity_Task_type_collection"],
                ),
                (
                    "digit inside name",
                    r#""Oro\\Bundle\\OAuth2ServerBundle\\Entity\\Client""#,
                    COLLECTION,
                    &["Oro_Bundle_OAuth_ServerBundle_Entity_Client_type_collection"],
                ),
                (
                    "non-ascii letters",
                    r#""App\\Entité\\Tâche""#,
                    COLLECTION,
                    &["App_Entit_T_che_type_collection"],
                ),
                (
                    "mixed run",
                    r#""a1é\\2_b""#,
                    COLLECTION,
                    &["a_b_type_collection"],
                ),
                (
                    "leading separator",
                    r#""\\App\\Task""#,
                    COLLECTION,
                    &["_App_Task_type_collection"],
                ),
                (
                    "trailing digits",
                    r#""Task2""#,
                    COLLECTION,
                    &["Task__type_collection"],
                ),
                (
                    "no ascii letter",
                    r#""日本""#,
                    COLLECTION,
                    &["__type_collection"],
                ),
                (
                    "letters only",
                    r#""Task""#,
                    COLLECTION,
                    &["Task_type_collection"],
                ),
            ],
        );
    }

    #[test]
    fn composite_ids_join_their_parts_in_order() {
        check(
            &generator(""),
            &[
                (
                    "array id",
                    r#"{"class":"C","id":[7,"b"]}"#,
                    PLAIN,
                    &["C_7_b"],
                ),
                (
                    "one-part array id",
                    r#"{"class":"C","id":["x"]}"#,
                    PLAIN,
                    &["C_x"],
                ),
            ],
        );
        check(
            &generator(r#"id_fields = ["order_id", "line"]"#),
            &[
                (
                    "configured order, not data order",
                    r#"{"class":"C","line":"b","order_id":7}"#,
                    PLAIN,
                    &["C_7_b"],
                ),
                (
                    "an array part is flattened",
                    r#"{"class":"C","order_id":[1,2],"line":3}"#,
                    PLAIN,
                    &["C_1_2_3"],
                ),
            ],
        );
    }

    #[test]
    fn entity_without_complete_id_gets_only_collection_tag() {
        let gen = generator("");
        let unsaved = [
            r#"{"class":"C"}"#,
            r#"{"class":"C","id":null}"#,
            r#"{"class":"C","id":[]}"#,
            r#"{"class":"C","id":[7,null]}"#,
            r#"{"class":"C","id":[7,[8]]}"#,
            r#"{"class":"C","id":{"n":1}}"#,
            r#"{"class":"C","id":true}"#,
        ];
        for data in unsaved {
            assert_eq!(gen.supports(data), Ok(true), "{data} is still an entity");
        }
        let cases: Vec<Case<'_>> = unsaved
            .iter()
            .flat_map(|data| {
                [
                    ("no entity tag", *data, PLAIN, &[][..]),
                    (
                        "collection tag still given",
                        *data,
                        COLLECTION,
                        &["C_type_collection"][..],
                    ),
                ]
            })
            .collect();
        check(&gen, &cases);

        check(
            &generator(r#"id_fields = ["a", "b"]"#),
            &[
                (
                    "one of two id fields missing",
                    r#"{"class":"C","a":1}"#,
                    COLLECTION,
                    &["C_type_collection"],
                ),
                (
                    "one of two id fields null",
                    r#"{"class":"C","a":1,"b":null}"#,
                    COLLECTION,
                    &["C_type_collection"],
                ),
            ],
        );
    }

    #[test]
    fn collection_tag_follows_entity_tag_only_when_asked() {
        check(
            &generator(""),
            &[
                (
                    "not asked",
                    r#"{"class":"App\\Entity\\Task","id":42}"#,
                    PLAIN,
                    &["App_Entity_Task_42"],
                ),
                (
                    "asked",
                    r#"{"class":"App\\Entity\\Task","id":42}"#,
                    COLLECTION,
                    &["App_Entity_Task_42", "App_Entity_Task_type_collection"],
                ),
                (
                    "non-ascii class",
                    r#"{"class":"App\\Entité\\Tâche","id":1}"#,
                    COLLECTION,
                    &["App_Entit_T_che_1", "App_Entit_T_che_type_collection"],
                ),
            ],
        );
    }

    #[test]
    fn bare_class_name_yields_only_its_collection_tag_when_asked() {
        let gen = generator("");
        let class = r#""App\\Entity\\Task""#;
        assert_eq!(gen.supports(class), Ok(true));
        check(
            &gen,
            &[
                ("not asked", class, PLAIN, &[]),
                ("nested alone adds nothing", class, NESTED, &[]),
                (
                    "asked",
                    class,
                    COLLECTION,
                    &["App_Entity_Task_type_collection"],
                ),
                (
                    "asked with nested",
                    class,
                    ALL,
                    &["App_Entity_Task_type_collection"],
                ),
            ],
        );
    }

    #[test]
    fn data_other_than_entity_object_or_class_name_is_not_supported() {
        let gen = generator("");
        for data in [
            "42",
            "-1.5",
            "null",
            "true",
            r#""""#,
            "[]",
            r#"[{"class":"C","id":1}]"#,
            r#"["App\\Entity\\Task"]"#,
            "{}",
            r#"{"id":1}"#,
            r#"{"class":"","id":1}"#,
            r#"{"class":null,"id":1}"#,
            r#"{"class":5,"id":1}"#,
            r#"{"class":["C"],"id":1}"#,
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
    fn nested_entities_add_their_entity_tags_one_level_deep() {
        let task = r#"{
            "class": "App\\Entity\\Task",
            "id": 42,
            "title": "write tests",
            "owner": {
                "class": "App\\Entity\\User",
                "id": 7,
                "manager": {"class": "App\\Entity\\User", "id": 1},
                "teams": [{"class": "App\\Entity\\Team", "id": 3}]
            },
            "tags": [
                {"class": "App\\Entity\\Tag", "id": "a"},
                5,
                {"label": "not an entity"},
                [{"class": "App\\Entity\\Deep", "id": 9}],
                {"class": "App\\Entity\\Tag", "id": "b"}
            ],
            "draft": {"class": "App\\Entity\\Note", "id": null},
            "meta": {"nested": {"class": "App\\Entity\\Deep", "id": 8}}
        }"#;
        check(
            &generator(""),
            &[
                ("not asked", task, PLAIN, &["App_Entity_Task_42"]),
                (
                    "object and array fields, one level, unsaved skipped",
                    task,
                    NESTED,
                    &[
                        "App_Entity_Task_42",
                        "App_Entity_User_7",
                        "App_Entity_Tag_a",
                        "App_Entity_Tag_b",
                    ],
                ),
                (
                    "entity, collection, then nested; no nested collection tags",
                    task,
                    ALL,
                    &[
                        "App_Entity_Task_42",
                        "App_Entity_Task_type_collection",
                        "App_Entity_User_7",
                        "App_Entity_Tag_a",
                        "App_Entity_Tag_b",
                    ],
                ),
            ],
        );
    }

    #[test]
    fn unsaved_entity_gets_no_nested_tags() {
        // Oro only walks the associations of a saved entity.
        check(
            &generator(""),
            &[(
                "null id",
                r#"{"class":"C","id":null,"owner":{"class":"U","id":1}}"#,
                ALL,
                &["C_type_collection"],
            )],
        );
    }

    #[test]
    fn custom_field_names_are_read_for_entity_and_nested_entities() {
        let gen = generator("class_field = \"type\"\nid_fields = [\"uuid\"]");
        assert_eq!(gen.supports(r#"{"class":"C","id":1}"#), Ok(false));
        check(
            &gen,
            &[
                (
                    "default names ignored",
                    r#"{"type":"App\\Entity\\Task","uuid":"u-1","class":"X","id":5}"#,
                    COLLECTION,
                    &["App_Entity_Task_u-1", "App_Entity_Task_type_collection"],
                ),
                (
                    "nested use the same names",
                    r#"{"type":"A","uuid":1,"b":{"type":"B","uuid":2},"x":{"class":"X","id":3}}"#,
                    NESTED,
                    &["A_1", "B_2"],
                ),
                (
                    "default id name is not an id",
                    r#"{"type":"A","id":1}"#,
                    COLLECTION,
                    &["A_type_collection"],
                ),
            ],
        );
    }
}

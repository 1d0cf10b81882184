//! The change data handed to generators: a JSON document parsed once by the host and laid
//! out flat, so that it crosses the ABI as two buffers and plugins read it without parsing.
//!
//! Layout: `nodes` holds the document in depth-first order. A container's children follow
//! it directly; each node records where its subtree ends (`next`), so a child's next
//! sibling sits at `child.next`. Strings and object keys live in one `text` buffer and are
//! referred to by offset and length.

use std::fmt;

use abi_stable::std_types::{RString, RVec};
use abi_stable::StableAbi;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// A JSON document in the ABI-stable flat layout. Build one with [`Data::from_json_str`],
/// [`Data::from_json`] or serde; read it through [`Data::root`].
#[repr(C)]
#[derive(StableAbi, Clone, PartialEq)]
pub struct Data {
    nodes: RVec<Node>,
    text: RString,
}

#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
enum NodeKind {
    Null,
    Bool,
    Int,
    UInt,
    Float,
    Str,
    Array,
    Object,
}

/// One value. `payload` holds the scalar's bits, a string's span (offset << 32 | length)
/// or a container's child count.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, PartialEq)]
struct Node {
    payload: u64,
    key_start: u32,
    key_len: u32,
    next: u32,
    kind: NodeKind,
}

/// What kind of JSON value a [`Value`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `null`
    Null,
    /// `true` or `false`
    Bool,
    /// Any JSON number.
    Number,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

/// A borrowed view of one value inside a [`Data`] document. Cheap to copy.
#[derive(Clone, Copy)]
pub struct Value<'a> {
    data: &'a Data,
    index: u32,
}

impl Data {
    /// Parses JSON text.
    pub fn from_json_str(json: &str) -> Result<Data, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(json);
        let data = Data::deserialize(&mut de)?;
        de.end()?;
        Ok(data)
    }

    /// Converts an already parsed `serde_json::Value`.
    pub fn from_json(value: &serde_json::Value) -> Data {
        // A serde_json::Value deserializes infallibly into any self-describing target.
        Data::deserialize(value).expect("a serde_json::Value is always valid Data")
    }

    /// The document's root value.
    pub fn root(&self) -> Value<'_> {
        Value {
            data: self,
            index: 0,
        }
    }

    /// The document as compact JSON text.
    pub fn to_json_string(&self) -> String {
        self.root().to_string()
    }

    fn str_at(&self, start: u32, len: u32) -> &str {
        let (start, len) = (start as usize, len as usize);
        // Spans are only made by the builder below, from offsets into `text` that sit on
        // char boundaries.
        &self.text[start..start + len]
    }
}

impl Default for Data {
    /// The document `null`.
    fn default() -> Self {
        let mut b = Builder::default();
        b.leaf(NodeKind::Null, 0, NO_KEY);
        b.finish()
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.root(), f)
    }
}

impl<'a> Value<'a> {
    fn node(&self) -> &'a Node {
        &self.data.nodes[self.index as usize]
    }

    /// The value's kind.
    pub fn kind(&self) -> Kind {
        match self.node().kind {
            NodeKind::Null => Kind::Null,
            NodeKind::Bool => Kind::Bool,
            NodeKind::Int | NodeKind::UInt | NodeKind::Float => Kind::Number,
            NodeKind::Str => Kind::String,
            NodeKind::Array => Kind::Array,
            NodeKind::Object => Kind::Object,
        }
    }

    /// True for `null`.
    pub fn is_null(&self) -> bool {
        self.node().kind == NodeKind::Null
    }

    /// True for an object.
    pub fn is_object(&self) -> bool {
        self.node().kind == NodeKind::Object
    }

    /// True for an array.
    pub fn is_array(&self) -> bool {
        self.node().kind == NodeKind::Array
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        let n = self.node();
        (n.kind == NodeKind::Bool).then_some(n.payload != 0)
    }

    /// The number as an `i64`, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        let n = self.node();
        match n.kind {
            NodeKind::Int => Some(n.payload as i64),
            NodeKind::UInt => i64::try_from(n.payload).ok(),
            _ => None,
        }
    }

    /// The number as an `f64`, if this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        let n = self.node();
        match n.kind {
            NodeKind::Int => Some(n.payload as i64 as f64),
            NodeKind::UInt => Some(n.payload as f64),
            NodeKind::Float => Some(f64::from_bits(n.payload)),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&'a str> {
        let n = self.node();
        (n.kind == NodeKind::Str)
            .then(|| self.data.str_at((n.payload >> 32) as u32, n.payload as u32))
    }

    /// Writes a string or a number as plain text, for building tags from ids: integers in
    /// decimal, floats in Rust's shortest form without exponent (`42.0` as `42`, as PHP
    /// prints it). Returns false, writing nothing, for any other kind.
    pub fn write_scalar(&self, out: &mut String) -> bool {
        use std::fmt::Write;
        let n = self.node();
        match n.kind {
            NodeKind::Str => out.push_str(self.as_str().unwrap_or_default()),
            // Writing to a String cannot fail.
            NodeKind::Int => write!(out, "{}", n.payload as i64).expect("write to String"),
            NodeKind::UInt => write!(out, "{}", n.payload).expect("write to String"),
            NodeKind::Float => {
                write!(out, "{}", f64::from_bits(n.payload)).expect("write to String")
            }
            _ => return false,
        }
        true
    }

    /// The number of elements of an array or members of an object; 0 for anything else.
    pub fn len(&self) -> usize {
        let n = self.node();
        match n.kind {
            NodeKind::Array | NodeKind::Object => n.payload as usize,
            _ => 0,
        }
    }

    /// True when [`Value::len`] is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        self.entries().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The elements of an array (nothing for any other kind).
    pub fn items(&self) -> impl Iterator<Item = Value<'a>> + 'a {
        let count = if self.is_array() { self.len() } else { 0 };
        self.children(count)
    }

    /// The members of an object (nothing for any other kind).
    pub fn entries(&self) -> impl Iterator<Item = (&'a str, Value<'a>)> + 'a {
        let count = if self.is_object() { self.len() } else { 0 };
        self.children(count).map(|v| (v.key(), v))
    }

    fn key(&self) -> &'a str {
        let n = self.node();
        self.data.str_at(n.key_start, n.key_len)
    }

    fn children(&self, count: usize) -> impl Iterator<Item = Value<'a>> + 'a {
        let data = self.data;
        let mut index = self.index + 1;
        (0..count).map(move |_| {
            let child = Value { data, index };
            index = data.nodes[index as usize].next;
            child
        })
    }
}

impl fmt::Display for Value<'_> {
    /// Compact JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&json)
    }
}

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.node();
        match n.kind {
            NodeKind::Null => s.serialize_unit(),
            NodeKind::Bool => s.serialize_bool(n.payload != 0),
            NodeKind::Int => s.serialize_i64(n.payload as i64),
            NodeKind::UInt => s.serialize_u64(n.payload),
            NodeKind::Float => s.serialize_f64(f64::from_bits(n.payload)),
            NodeKind::Str => s.serialize_str(self.as_str().unwrap_or_default()),
            NodeKind::Array => {
                let mut seq = s.serialize_seq(Some(self.len()))?;
                for item in self.items() {
                    seq.serialize_element(&item)?;
                }
                seq.end()
            }
            NodeKind::Object => {
                let mut map = s.serialize_map(Some(self.len()))?;
                for (k, v) in self.entries() {
                    map.serialize_entry(k, &v)?;
                }
                map.end()
            }
        }
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.root().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut builder = Builder::default();
        NodeSeed {
            builder: &mut builder,
            key: NO_KEY,
        }
        .deserialize(d)?;
        Ok(builder.finish())
    }
}

const NO_KEY: (u32, u32) = (0, 0);

/// Appends nodes in depth-first order.
#[derive(Default)]
struct Builder {
    nodes: Vec<Node>,
    text: String,
}

impl Builder {
    fn finish(self) -> Data {
        Data {
            nodes: self.nodes.into(),
            text: self.text.into(),
        }
    }

    fn push_text<E: de::Error>(&mut self, s: &str) -> Result<(u32, u32), E> {
        let start = u32::try_from(self.text.len()).map_err(|_| E::custom("document too large"))?;
        let len = u32::try_from(s.len()).map_err(|_| E::custom("string too large"))?;
        self.text.push_str(s);
        Ok((start, len))
    }

    fn leaf(&mut self, kind: NodeKind, payload: u64, key: (u32, u32)) {
        let index = self.nodes.len() as u32;
        self.nodes.push(Node {
            payload,
            key_start: key.0,
            key_len: key.1,
            next: index + 1,
            kind,
        });
    }

    fn index<E: de::Error>(&self) -> Result<u32, E> {
        u32::try_from(self.nodes.len()).map_err(|_| E::custom("document too large"))
    }
}

struct NodeSeed<'b> {
    builder: &'b mut Builder,
    key: (u32, u32),
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

struct KeySeed<'b>(&'b mut Builder);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = (u32, u32);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(u32, u32), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = (u32, u32);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(u32, u32), E> {
        self.0.push_text(v)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.builder.leaf(NodeKind::Null, 0, self.key);
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.builder.leaf(NodeKind::Bool, v as u64, self.key);
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.builder.leaf(NodeKind::Int, v as u64, self.key);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        match i64::try_from(v) {
            Ok(i) => self.builder.leaf(NodeKind::Int, i as u64, self.key),
            Err(_) => self.builder.leaf(NodeKind::UInt, v, self.key),
        }
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.builder.leaf(NodeKind::Float, v.to_bits(), self.key);
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        let (start, len) = self.builder.push_text(v)?;
        let payload = (u64::from(start) << 32) | u64::from(len);
        self.builder.leaf(NodeKind::Str, payload, self.key);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let b = self.builder;
        let index = b.index()?;
        b.leaf(NodeKind::Array, 0, self.key);
        let mut count = 0u64;
        while seq
            .next_element_seed(NodeSeed {
                builder: b,
                key: NO_KEY,
            })?
            .is_some()
        {
            count += 1;
        }
        let end = b.index()?;
        let node = &mut b.nodes[index as usize];
        node.payload = count;
        node.next = end;
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let b = self.builder;
        let index = b.index()?;
        b.leaf(NodeKind::Object, 0, self.key);
        let mut count = 0u64;
        while let Some(key) = map.next_key_seed(KeySeed(b))? {
            map.next_value_seed(NodeSeed { builder: b, key })?;
            count += 1;
        }
        let end = b.index()?;
        let node = &mut b.nodes[index as usize];
        node.payload = count;
        node.next = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_nested_documents() {
        let json = r#"{"class":"App\\Entity\\Task","id":42,"tags":[1,-2,3.5,"x",null,true],"owner":{"class":"U","id":[7,"b"]},"big":18446744073709551615,"e":{},"a":[]}"#;
        let data = Data::from_json_str(json).unwrap();
        assert_eq!(data.to_json_string(), json);
    }

    #[test]
    fn reads_members_and_items() {
        let data = Data::from_json_str(r#"{"a":{"b":[10,"x"]},"c":"é"}"#).unwrap();
        let root = data.root();
        assert_eq!(root.len(), 2);
        let b = root.get("a").and_then(|a| a.get("b")).unwrap();
        let items: Vec<_> = b.items().collect();
        assert_eq!(items[0].as_i64(), Some(10));
        assert_eq!(items[1].as_str(), Some("x"));
        assert_eq!(root.get("c").and_then(|c| c.as_str()), Some("é"));
        assert!(root.get("missing").is_none());
        assert_eq!(root.items().count(), 0, "an object has no array items");
    }

    #[test]
    fn writes_scalars_as_plain_text() {
        let data = Data::from_json_str(r#"[42, "7b", 1.5, null, -3]"#).unwrap();
        let mut out = String::new();
        for v in data.root().items() {
            v.write_scalar(&mut out);
            out.push('|');
        }
        assert_eq!(out, "42|7b|1.5||-3|");
    }

    #[test]
    fn rejects_trailing_garbage() {
        assert!(Data::from_json_str("{} x").is_err());
    }

    #[test]
    fn converts_from_serde_json_values() {
        let v = serde_json::json!({"k": [1, {"z": false}]});
        assert_eq!(Data::from_json(&v).to_json_string(), v.to_string());
        assert_eq!(Data::default().to_json_string(), "null");
    }
}

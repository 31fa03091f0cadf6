//! The bounded reader: a size limit checked before parsing, and a node budget that stops
//! alias expansion (billion laughs) before it costs memory.

use std::cell::Cell;
use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::emitter::float_text;
use super::{Limits, Node, YamlError};

/// Alias expansion may multiply a document's size by at most this factor (beyond the minimum).
const NODES_PER_BYTE: usize = 4;
/// Node budget granted to any document, however short.
const MIN_NODE_BUDGET: usize = 100_000;

/// Reads a file with the size limit checked first, returning its text.
pub fn read_text(path: &Path, limits: &Limits) -> Result<String, YamlError> {
    let io = |source| YamlError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > limits.max_bytes {
        return Err(YamlError::TooLarge {
            path: path.to_owned(),
            size,
            limit: limits.max_bytes,
        });
    }
    let mut bytes = Vec::new();
    // Read at most one byte more than the limit: the file may grow after the check.
    file.take(limits.max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limits.max_bytes {
        return Err(YamlError::TooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
            limit: limits.max_bytes,
        });
    }
    String::from_utf8(bytes).map_err(|e| YamlError::Parse {
        path: path.to_owned(),
        doc: 0,
        message: format!("not UTF-8: {e}"),
    })
}

/// Reads every document of a YAML (or JSON) file, bounded by `limits`.
pub fn load_file(path: &Path, limits: &Limits) -> Result<Vec<Node>, YamlError> {
    let text = read_text(path, limits)?;
    parse_documents(&text, path, limits)
}

/// Parses every document of `text` (named `name` in errors), bounded by `limits`.
///
/// Empty documents come back as [`Node::Null`].
pub fn parse_documents(text: &str, name: &Path, limits: &Limits) -> Result<Vec<Node>, YamlError> {
    if text.len() as u64 > limits.max_bytes {
        return Err(YamlError::TooLarge {
            path: name.to_owned(),
            size: text.len() as u64,
            limit: limits.max_bytes,
        });
    }
    // Without aliases a node takes at least two bytes of text, so a budget proportional to the
    // text (with generous room for legitimate anchors) stops expansion bombs early.
    let budget = Cell::new(
        limits.max_nodes.min(
            text.len()
                .saturating_mul(NODES_PER_BYTE)
                .max(MIN_NODE_BUDGET),
        ),
    );
    let mut docs = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let node = NodeSeed { budget: &budget }
            .deserialize(doc)
            .map_err(|e| YamlError::Parse {
                path: name.to_owned(),
                doc: i,
                message: e.to_string(),
            })?;
        docs.push(node);
    }
    Ok(docs)
}

/// Parses a single-document file strictly into `T`, after a bounded pass over its nodes.
pub fn parse_typed<T: serde::de::DeserializeOwned>(
    text: &str,
    name: &Path,
    limits: &Limits,
) -> Result<T, YamlError> {
    let docs = parse_documents(text, name, limits)?;
    let real: Vec<usize> = (0..docs.len()).filter(|&i| docs[i] != Node::Null).collect();
    if real.len() != 1 {
        return Err(YamlError::Parse {
            path: name.to_owned(),
            doc: real.get(1).copied().unwrap_or(0),
            message: format!("expected exactly one YAML document, found {}", real.len()),
        });
    }
    let index = real[0];
    let doc = serde_norway::Deserializer::from_str(text)
        .nth(index)
        .ok_or_else(|| YamlError::Parse {
            path: name.to_owned(),
            doc: index,
            message: "document vanished on second read".to_owned(),
        })?;
    T::deserialize(doc).map_err(|e| YamlError::Parse {
        path: name.to_owned(),
        doc: index,
        message: e.to_string(),
    })
}

struct NodeSeed<'a> {
    budget: &'a Cell<usize>,
}

impl NodeSeed<'_> {
    fn spend<E: de::Error>(&self) -> Result<(), E> {
        let left = self.budget.get();
        if left == 0 {
            return Err(E::custom(
                "too many YAML nodes (after alias expansion); refusing a possible alias bomb",
            ));
        }
        self.budget.set(left - 1);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Node;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        self.spend()?;
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        self.visit_unit()
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        self.spend()?;
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        self.spend()?;
        Ok(Node::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        self.spend()?;
        Ok(match i64::try_from(v) {
            Ok(i) => Node::Int(i),
            Err(_) => Node::UInt(v),
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        self.spend()?;
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        self.spend()?;
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        self.spend()?;
        Ok(Node::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        self.spend()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(NodeSeed {
            budget: self.budget,
        })? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        self.spend()?;
        let mut entries: Vec<(String, Node)> = Vec::new();
        while let Some(key) = map.next_key_seed(NodeSeed {
            budget: self.budget,
        })? {
            let key = match key {
                Node::Str(s) => s,
                Node::Int(i) => i.to_string(),
                Node::UInt(u) => u.to_string(),
                Node::Bool(b) => b.to_string(),
                Node::Float(f) => float_text(f),
                Node::Null => "null".to_owned(),
                Node::Seq(_) | Node::Map(_) => {
                    return Err(de::Error::custom("mapping keys must be scalars"));
                }
            };
            let value = map.next_value_seed(NodeSeed {
                budget: self.budget,
            })?;
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("duplicate mapping key {key:?}")));
            }
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<Node, A::Error> {
        Err(de::Error::custom("YAML tags (!tag) are not supported"))
    }
}

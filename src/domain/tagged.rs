//! Internally tagged enums (`{"kind": "agent", ...fields}`) read without
//! buffering when the tag is the first key.
//!
//! serde's derived reader for `#[serde(tag = "...")]` cannot know where the
//! tag is, so it first copies the whole object into a buffer of its own and
//! then reads the variant out of that buffer. Our own writer puts the tag
//! first, so [`deserialize`] reads the first key: when it is the tag, the
//! variant's fields are read straight from the rest of the object; when it
//! is not (JSON written by someone else, or a store that orders keys its own
//! way), the object is buffered and read as before. Both ways accept the
//! same documents.

use serde::de::{
    DeserializeSeed, Deserializer, Error, MapAccess, Visitor, value::MapAccessDeserializer,
};

/// An enum stored with its variant's name under [`Tagged::TAG`] beside the
/// variant's fields.
pub trait Tagged: Sized {
    /// The key that names the variant.
    const TAG: &'static str;
    /// The variants' names, as written.
    const VARIANTS: &'static [&'static str];

    /// Reads the variant `name` (one of [`Tagged::VARIANTS`]) from its fields,
    /// the object without the tag.
    fn variant<'de, D: Deserializer<'de>>(name: &'static str, fields: D) -> Result<Self, D::Error>;
}

/// Reads a `T` from an object holding its tag and fields.
pub fn deserialize<'de, D: Deserializer<'de>, T: Tagged>(deserializer: D) -> Result<T, D::Error> {
    deserializer.deserialize_map(TaggedVisitor::<T>(std::marker::PhantomData))
}

struct TaggedVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Tagged> Visitor<'de> for TaggedVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an object with a \"{}\" key", T::TAG)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        match map.next_key_seed(FirstKey(T::TAG))? {
            Some(None) => {
                let name = map.next_value_seed(VariantName(T::VARIANTS))?;
                T::variant(name, MapAccessDeserializer::new(map))
            }
            Some(Some(first)) => buffered(first, map),
            None => Err(A::Error::missing_field(T::TAG)),
        }
    }
}

/// The slow way, for an object whose first key is not the tag.
fn buffered<'de, A: MapAccess<'de>, T: Tagged>(first: String, mut map: A) -> Result<T, A::Error> {
    let mut fields = serde_json::Map::new();
    fields.insert(first, map.next_value()?);
    while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
        fields.insert(key, value);
    }
    let name = match fields.remove(T::TAG) {
        Some(serde_json::Value::String(name)) => name,
        Some(_) => {
            return Err(A::Error::custom(format_args!(
                "\"{}\" is not a string",
                T::TAG
            )));
        }
        None => return Err(A::Error::missing_field(T::TAG)),
    };
    let name = VariantName(T::VARIANTS).known(&name)?;
    T::variant(name, serde_json::Value::Object(fields)).map_err(A::Error::custom)
}

/// A key: `None` when it is the tag, the key itself when it is not.
struct FirstKey(&'static str);

impl<'de> DeserializeSeed<'de> for FirstKey {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for FirstKey {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok((key != self.0).then(|| key.to_owned()))
    }
}

/// A variant's name, checked against the names there are.
struct VariantName(&'static [&'static str]);

impl VariantName {
    fn known<E: Error>(&self, name: &str) -> Result<&'static str, E> {
        self.0
            .iter()
            .find(|known| **known == name)
            .copied()
            .ok_or_else(|| E::unknown_variant(name, self.0))
    }
}

impl<'de> DeserializeSeed<'de> for VariantName {
    type Value = &'static str;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for VariantName {
    type Value = &'static str;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "one of {:?}", self.0)
    }

    fn visit_str<E: Error>(self, name: &str) -> Result<Self::Value, E> {
        self.known(name)
    }
}

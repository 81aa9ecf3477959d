//! YAML read with a bound on what it expands to.
//!
//! An alias repeats everything its anchor holds, so a few kilobytes of YAML can stand
//! for gigabytes (a list of 10,000 items aliased 1,000 times). The parser bounds the
//! number of alias uses, not their size; here every document is first walked without
//! building anything, each node counted as [`NODE_BYTES`] plus its text, alias uses
//! included, and refused past [`MAX_EXPANDED_BYTES`] before it is read for real.

use std::cell::Cell;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};

/// What one YAML document may expand to, aliases included (the Kubernetes API server
/// refuses objects much smaller: etcd stores at most 1.5 MiB per object).
pub const MAX_EXPANDED_BYTES: usize = 2 << 20;

/// What each node (scalar, sequence or mapping) counts besides its text.
pub const NODE_BYTES: usize = 16;

/// What a file of manifests may weigh before it is read (far above any real set).
pub const MAX_FILE_BYTES: u64 = 8 << 20;

/// Why a YAML text was not read.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// Its expansion passed [`MAX_EXPANDED_BYTES`].
    #[error(
        "expands to more than {} MiB once its aliases are expanded (each use of an alias \
         counts everything its anchor holds)",
        MAX_EXPANDED_BYTES >> 20
    )]
    TooLarge,
    /// Not valid YAML, or not of the expected shape.
    #[error(transparent)]
    Syntax(#[from] serde_norway::Error),
}

/// Checks one document of a stream: `Ok` when it fits, [`YamlError::TooLarge`] when
/// it does not, the parser's error when it is not valid YAML.
///
/// # Errors
/// See above.
pub fn check(document: serde_norway::Deserializer<'_>) -> Result<(), YamlError> {
    let left = Cell::new(MAX_EXPANDED_BYTES);
    let exceeded = Cell::new(false);
    let budget = Budget {
        left: &left,
        exceeded: &exceeded,
    };
    match budget.deserialize(document) {
        Ok(()) => Ok(()),
        Err(_) if exceeded.get() => Err(YamlError::TooLarge),
        Err(e) => Err(YamlError::Syntax(e)),
    }
}

/// One document, checked then deserialized.
///
/// # Errors
/// The document expands past the bound, is not valid YAML, or does not fit `T`.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    if let Some(first) = serde_norway::Deserializer::from_str(text).next() {
        check(first)?;
    }
    Ok(serde_norway::from_str(text)?)
}

/// Counts what a document expands to, builds nothing, and stops at the bound.
#[derive(Clone, Copy)]
struct Budget<'a> {
    left: &'a Cell<usize>,
    exceeded: &'a Cell<bool>,
}

impl Budget<'_> {
    fn charge<E: de::Error>(self, text: usize) -> Result<(), E> {
        let cost = NODE_BYTES.saturating_add(text);
        let Some(left) = self.left.get().checked_sub(cost) else {
            self.exceeded.set(true);
            return Err(E::custom("the document expands past the bound"));
        };
        self.left.set(left);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Budget<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budget<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.charge(0)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.charge(0)
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.charge(0)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.charge(0)
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.charge(0)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.charge(0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.charge(v.len())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        self.charge(v.len())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.charge(0)
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.charge(0)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.charge(0)?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.charge(0)?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged node (`!Tag value`): the tag, then what it tags.
        let ((), variant) = data.variant_seed(self)?;
        de::VariantAccess::newtype_variant_seed(variant, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list of `items` scalars, aliased `uses` times.
    fn bomb(items: usize, uses: usize) -> String {
        let list = vec!["x"; items].join(", ");
        let aliases = vec!["*a"; uses].join(", ");
        format!("a: &a [{list}]\nb: [{aliases}]\n")
    }

    fn first(text: &str) -> Result<(), YamlError> {
        check(serde_norway::Deserializer::from_str(text).next().unwrap())
    }

    #[test]
    fn a_document_that_expands_past_the_bound_is_refused() {
        let text = bomb(10_000, 1_000);
        assert!(text.len() < 40_000);
        assert!(matches!(first(&text), Err(YamlError::TooLarge)));
        // 10,000 × 100 was within the parser's own repetition limit.
        assert!(matches!(
            first(&bomb(10_000, 100)),
            Err(YamlError::TooLarge)
        ));
        assert!(matches!(
            from_str::<serde_json::Value>(&text),
            Err(YamlError::TooLarge)
        ));
    }

    #[test]
    fn aliases_that_stay_small_are_read() {
        assert!(first(&bomb(10, 100)).is_ok());
        let v: serde_json::Value = from_str(&bomb(3, 2)).unwrap();
        assert_eq!(v["b"][1][2], "x");
    }

    #[test]
    fn the_bound_counts_text_and_nodes() {
        // Just under and just over, with one long scalar.
        let under = format!("k: {}", "y".repeat(MAX_EXPANDED_BYTES - 4 * NODE_BYTES));
        assert!(first(&under).is_ok());
        let over = format!("k: {}", "y".repeat(MAX_EXPANDED_BYTES));
        assert!(matches!(first(&over), Err(YamlError::TooLarge)));
    }

    #[test]
    fn tagged_nodes_and_syntax_errors() {
        assert!(first("a: !Tag {b: [1, 2]}\nc: !!str 3\n").is_ok());
        assert!(matches!(first("a: [1, 2"), Err(YamlError::Syntax(_))));
        assert!(matches!(first("a: *missing"), Err(YamlError::Syntax(_))));
    }
}

//! Typed driver parameters.
//!
//! A manifest's `[params]` (and `ddmctl load DRIVER key=value`) reach a
//! driver as `key = "value"` strings. [`from_params`] (or
//! [`crate::driver::StartInfo::config`]) turns them into the driver's own
//! configuration struct with serde, so that every driver parses the same way
//! and says the same thing when a value is wrong:
//!
//! ```
//! use ddf::params::{from_params, Size};
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     #[serde(default)]
//!     size: Option<Size>,
//!     #[serde(default)]
//!     devices: Vec<String>,
//!     count: u32,
//! }
//! let pairs = vec![("size".into(), "64MiB".into()), ("count".into(), "2".into()), ("devices".into(), "a,b".into())];
//! let c: Config = from_params("ramdisk", &pairs).unwrap();
//! assert_eq!(c.size.unwrap().bytes(), 64 << 20);
//! assert_eq!(c.devices, ["a", "b"]);
//! let bad = vec![("count".into(), "two".into())];
//! let e = from_params::<Config>("ramdisk", &bad).err().unwrap();
//! assert_eq!(e.to_string(), "parameters of ramdisk: count = \"two\": invalid digit found in string");
//! ```
//!
//! What a string becomes, by the type asked for:
//! - numbers: decimal, or hexadecimal with `0x`;
//! - `bool`: `true` or `false`;
//! - unit enum variants (choices): their name (use `#[serde(rename_all = "lowercase")]`);
//! - sequences: comma-separated items, spaces around them ignored;
//! - [`Size`]: bytes with an optional binary suffix (`64M`, `64MiB`, `4k`, `67108864`);
//! - `Option<T>`: present is `Some`.
//!
//! When a key is given twice the last one wins (the command line after the
//! manifest).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::Deserialize;

/// A wrong parameter: which driver, which key, which value, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameters of {instance}: {}", match (key, value) {
    (Some(k), Some(v)) => format!("{k} = {v:?}: {reason}"),
    _ => reason.clone(),
})]
pub struct ParamError {
    /// The driver instance (its manifest's name).
    pub instance: String,
    /// The key, when one key is at fault.
    pub key: Option<String>,
    /// Its value.
    pub value: Option<String>,
    /// What is wrong.
    pub reason: String,
}

/// The error type the deserializer uses inside; becomes a [`ParamError`].
#[derive(Debug)]
struct DeError {
    key: Option<(String, String)>,
    reason: String,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError { key: None, reason: msg.to_string() }
    }
}

/// Deserializes the parameters `pairs` of driver `instance` into `T`.
pub fn from_params<T: DeserializeOwned>(instance: &str, pairs: &[(String, String)]) -> Result<T, ParamError> {
    let map: BTreeMap<&str, &str> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    T::deserialize(MapDe { map: &map }).map_err(|e| {
        let (key, value) = e.key.map_or((None, None), |(k, v)| (Some(k), Some(v)));
        ParamError { instance: instance.to_owned(), key, value, reason: e.reason }
    })
}

/// All the parameters, as a map.
struct MapDe<'a> {
    map: &'a BTreeMap<&'a str, &'a str>,
}

impl<'de> de::Deserializer<'de> for MapDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(Entries { iter: self.map.iter(), value: None })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

struct Entries<'a, I> {
    iter: I,
    value: Option<(&'a str, &'a str)>,
}

impl<'de, 'a, I: Iterator<Item = (&'a &'a str, &'a &'a str)>> de::MapAccess<'de> for Entries<'a, I> {
    type Error = DeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        let Some((k, v)) = self.iter.next() else { return Ok(None) };
        self.value = Some((k, v));
        let key: de::value::StrDeserializer<'_, DeError> = k.into_deserializer();
        seed.deserialize(key).map(Some).map_err(|mut e| {
            e.key = Some(((*k).to_owned(), (*v).to_owned()));
            e
        })
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((k, v)) = self.value.take() else {
            return Err(de::Error::custom("a value without its key"));
        };
        seed.deserialize(ValueDe(v)).map_err(|mut e| {
            e.key = Some((k.to_owned(), v.to_owned()));
            e
        })
    }
}

/// One value: a string that becomes what the type asks for.
struct ValueDe<'a>(&'a str);

impl ValueDe<'_> {
    fn int<T: std::str::FromStr + TryFrom<u64>>(&self) -> Result<T, DeError>
    where
        T::Err: fmt::Display,
    {
        let s = self.0.trim();
        match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => {
                let v = u64::from_str_radix(hex, 16).map_err(de::Error::custom)?;
                T::try_from(v).map_err(|_| de::Error::custom("number too large"))
            }
            None => s.parse().map_err(de::Error::custom),
        }
    }
}

macro_rules! parse_number {
    ($($method:ident => $visit:ident: $ty:ty),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            visitor.$visit(self.int::<$ty>()?)
        })*
    };
}

impl<'de> de::Deserializer<'de> for ValueDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_str(self.0)
    }

    parse_number! {
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0.trim() {
            "true" => visitor.visit_bool(true),
            "false" => visitor.visit_bool(false),
            _ => Err(de::Error::custom("expected true or false")),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_f32(self.0.trim().parse().map_err(de::Error::custom)?)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_f64(self.0.trim().parse().map_err(de::Error::custom)?)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &str, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let items = self.0.split(',').map(str::trim).filter(|s| !s.is_empty()).map(ValueDe);
        visitor.visit_seq(de::value::SeqDeserializer::new(items))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let s: de::value::StrDeserializer<'_, DeError> = self.0.trim().into_deserializer();
        visitor.visit_enum(s)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct tuple tuple_struct map struct identifier
        ignored_any
    }
}

impl<'de> IntoDeserializer<'de, DeError> for ValueDe<'_> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// A size in bytes, written as a number with an optional binary suffix:
/// `67108864`, `64M`, `64MiB`, `64m`, `4K`, `4KiB`, `1G`. `K`, `M`, `G`
/// and `T` are powers of 1024 with or without `iB`/`B` after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

impl Size {
    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// Why a size does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Not a number with a suffix.
    #[error("not a size (examples: 64M, 64MiB, 4K, 67108864)")]
    Invalid,
    /// More than 2^64 bytes.
    #[error("size too large")]
    TooLarge,
}

/// Parses a [`Size`].
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let s = text.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, suffix) = s.split_at(digits);
    if num.is_empty() {
        return Err(SizeError::Invalid);
    }
    let shift = match suffix.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(SizeError::Invalid),
    };
    let n: u64 = num.parse().map_err(|_| SizeError::TooLarge)?;
    n.checked_mul(1u64 << shift).ok_or(SizeError::TooLarge)
}

impl std::str::FromStr for Size {
    type Err = SizeError;

    fn from_str(s: &str) -> Result<Size, SizeError> {
        parse_size(s).map(Size)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
            if b != 0 && b % (1 << shift) == 0 {
                return write!(f, "{}{unit}", b >> shift);
            }
        }
        write!(f, "{b}")
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 64M, 64MiB or 67108864")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v).map(Size).map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        d.deserialize_str(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
        Slow,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Config {
        #[serde(default)]
        size: Option<Size>,
        #[serde(default = "one")]
        count: u32,
        #[serde(default)]
        verbose: bool,
        #[serde(default)]
        mode: Option<Mode>,
        #[serde(default)]
        names: Vec<String>,
        #[serde(default)]
        label: String,
    }

    fn one() -> u32 {
        1
    }

    #[test]
    fn sizes_take_every_usual_spelling() {
        for (s, want) in [
            ("67108864", 64 << 20),
            ("64M", 64 << 20),
            ("64MiB", 64 << 20),
            ("64 MiB", 64 << 20),
            ("64m", 64 << 20),
            ("4K", 4096),
            ("4KiB", 4096),
            ("1G", 1 << 30),
            ("0", 0),
            ("512b", 512),
        ] {
            assert_eq!(parse_size(s), Ok(want), "{s}");
        }
        for s in ["", "M", "64X", "-1", "1.5M", "0x10"] {
            assert_eq!(parse_size(s), Err(SizeError::Invalid), "{s}");
        }
        assert_eq!(parse_size("99999999999999999999"), Err(SizeError::TooLarge));
        assert_eq!(parse_size("20000000T"), Err(SizeError::TooLarge));
        assert_eq!(Size(64 << 20).to_string(), "64M");
        assert_eq!(Size(1000).to_string(), "1000");
    }

    #[test]
    fn every_kind_of_field_parses() {
        let c: Config = from_params(
            "t",
            &pairs(&[
                ("size", "4M"),
                ("count", "0x10"),
                ("verbose", "true"),
                ("mode", "slow"),
                ("names", "a, b,,c"),
                ("label", "x y"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c,
            Config {
                size: Some(Size(4 << 20)),
                count: 16,
                verbose: true,
                mode: Some(Mode::Slow),
                names: vec!["a".into(), "b".into(), "c".into()],
                label: "x y".into(),
            }
        );
        let d: Config = from_params("t", &[]).unwrap();
        assert_eq!(d.count, 1);
        assert_eq!(d.size, None);
        assert!(d.names.is_empty());
    }

    #[test]
    fn the_last_of_two_values_wins() {
        let c: Config = from_params("t", &pairs(&[("count", "2"), ("count", "3")])).unwrap();
        assert_eq!(c.count, 3);
    }

    #[test]
    fn errors_name_the_instance_the_key_and_the_value() {
        let e = from_params::<Config>("ramdisk", &pairs(&[("size", "lots")])).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("size"));
        assert_eq!(e.value.as_deref(), Some("lots"));
        assert_eq!(
            e.to_string(),
            "parameters of ramdisk: size = \"lots\": not a size (examples: 64M, 64MiB, 4K, 67108864)"
        );
        let e = from_params::<Config>("r", &pairs(&[("verbose", "yes")])).unwrap_err();
        assert_eq!(e.to_string(), "parameters of r: verbose = \"yes\": expected true or false");
        let e = from_params::<Config>("r", &pairs(&[("mode", "medium")])).unwrap_err();
        assert!(e.to_string().contains("mode = \"medium\": unknown variant `medium`"), "{e}");
        let e = from_params::<Config>("r", &pairs(&[("count", "300000000000")])).unwrap_err();
        assert!(e.to_string().contains("count = \"300000000000\""), "{e}");
        let e = from_params::<Config>("r", &pairs(&[("colour", "red")])).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("colour"));
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn a_missing_required_key_is_named() {
        #[derive(Debug, Deserialize)]
        struct Needs {
            #[allow(dead_code)]
            path: String,
        }
        let e = from_params::<Needs>("d", &[]).unwrap_err();
        assert_eq!(e.to_string(), "parameters of d: missing field `path`");
    }
}

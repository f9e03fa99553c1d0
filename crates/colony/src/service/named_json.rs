//! Reading a JSON object of named arguments straight from its bytes.
//!
//! Owns: the fast path of [`ServiceEntry::json_bytes_to_args`](super::ServiceEntry): one
//! pass of `serde_json` over the request's object, each value deserialized into its
//! argument's slot, with no `serde_json::Value` on the way. Promises: when it gives
//! arguments, they are exactly those of the `Value` path (parse into a `Value`, integral
//! floats made integers, then [`NamedArgs::from_named_json`](super::NamedArgs)); whatever
//! it cannot be sure to read the same way, and every error, it leaves to that path
//! (`None`), which then decides and words the error. Must not touch: anything but the
//! bytes it is given.
//!
//! How the two paths are kept equal. `serde_json` reads text and a `Value` alike, except
//! where the argument types can tell, and those places are wrapped ([`Exact`]):
//!
//! - an integral float (`7.0`) reaches the type as the integer the `Value` path made of it;
//! - `i128`/`u128`/`f32` are read as the `Value` path reads them (through the number it
//!   parsed), not by `serde_json`'s own parsers for those types;
//! - a key given twice in one object inside an argument is left to the `Value` path (which
//!   keeps the last), as are objects of more than [`MAX_KEYS`] keys, keys with escapes,
//!   byte strings, `RawValue` and empty tuple variants;
//! - values skipped by the type (unknown fields) are still parsed and checked in full.
//!
//! One difference is left, by choice: a map type that keeps its entries' order (such as
//! `IndexMap`) gets them in the body's order, where the `Value` path, without
//! `serde_json`'s `preserve_order` feature, sorts them by key.

use std::fmt;
use std::marker::PhantomData;
use std::sync::OnceLock;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, IgnoredAny, MapAccess,
    SeqAccess, VariantAccess, Visitor,
};

/// Objects inside an argument with more keys than this are left to the `Value` path, so
/// that finding a repeated key stays cheap.
pub(super) const MAX_KEYS: usize = 64;

/// Read `bytes`, nothing but whitespace or a JSON object of named arguments (or `null`,
/// which counts as an empty object, as in the gateway), with `visitor`, the visitor of a
/// whole argument tuple; `None` when the `Value` path must decide.
pub(super) fn read<T, V>(bytes: &[u8], visitor: V) -> Option<T>
where
    V: for<'de> Visitor<'de, Value = T>,
{
    if !exact_reading_possible() {
        return None;
    }
    // Nothing but whitespace (as the gateway counts it, form feeds too) is no arguments.
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return visitor.visit_unit::<serde_json::Error>().ok();
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Deserializer::deserialize_any(&mut de, visitor).ok()?;
    de.end().ok()?;
    Some(value)
}

/// Whether numbers are read as this module expects: not with `serde_json`'s
/// `arbitrary_precision` feature (which another crate of the app may turn on), under which
/// numbers travel as strings and the `Value` path keeps their text.
fn exact_reading_possible() -> bool {
    static EXACT: OnceLock<bool> = OnceLock::new();
    *EXACT.get_or_init(|| {
        serde_json::from_str::<serde_json::Value>("1e0")
            .and_then(|v| serde_json::to_string(&v))
            .is_ok_and(|text| text == "1.0")
    })
}

/// The visitor of a whole argument tuple `T` (one `Visitor` impl per arity, written by
/// `named_args_tuple!`): the request's object, each key one of `names`.
pub(super) struct ArgsVisitor<'n, T> {
    /// The argument names, in the tuple's order.
    pub(super) names: &'n [&'n str],
    marker: PhantomData<fn() -> T>,
}

impl<'n, T> ArgsVisitor<'n, T> {
    /// The visitor of the arguments called `names`.
    pub(super) fn new(names: &'n [&'n str]) -> Self {
        ArgsVisitor {
            names,
            marker: PhantomData,
        }
    }
}

/// The position in `names` of the object's next key; an unknown key is an error.
pub(super) fn next_arg<'de, M: MapAccess<'de>>(
    map: &mut M,
    names: &[&str],
) -> Result<Option<usize>, M::Error> {
    map.next_key_seed(ArgName(names))
}

/// The value of the key [`next_arg`] just read, as the argument's type.
pub(super) fn arg_value<'de, T: DeserializeOwned, M: MapAccess<'de>>(
    map: &mut M,
) -> Result<T, M::Error> {
    map.next_value_seed(ExactSeed(PhantomData::<T>))
}

/// An argument the object leaves out: what the `Value` path makes of `null` (`None` for an
/// `Option`), else an error.
pub(super) fn missing<T: DeserializeOwned, E: de::Error>() -> Result<T, E> {
    serde_json::from_value(serde_json::Value::Null)
        .map_err(|_| E::custom("a required argument is missing"))
}

/// Finds a key among the argument names.
struct ArgName<'n>(&'n [&'n str]);

impl<'de> DeserializeSeed<'de> for ArgName<'_> {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for ArgName<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an argument name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<usize, E> {
        self.0
            .iter()
            .position(|name| *name == key)
            .ok_or_else(|| E::custom("not an argument"))
    }
}

/// An error that only sends the request down the `Value` path, which words its own.
fn leave<E: de::Error>() -> E {
    E::custom("left to the Value path")
}

/// A seed whose value is read through [`Exact`].
struct ExactSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for ExactSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Exact(deserializer))
    }
}

/// A deserializer of a value inside an argument that reads it as the `Value` path would.
struct Exact<D>(D);

macro_rules! forward_exact {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
                self.0.$method($($arg,)* ExactVisitor(visitor))
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Exact<D> {
    type Error = D::Error;

    forward_exact! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
    }

    // The `Value` path parsed these as any number and hands the type that number.
    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_i64(ExactVisitor(visitor))
    }

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_u64(ExactVisitor(visitor))
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_f64(ExactVisitor(visitor))
    }

    // Text reads a string's raw bytes here (even a lone surrogate), a `Value` its `String`.
    fn deserialize_bytes<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, D::Error> {
        Err(leave())
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, D::Error> {
        Err(leave())
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        // `serde_json`'s own tokens (`RawValue`): text keeps the body's characters.
        if name.starts_with("$serde_json::") {
            return Err(leave());
        }
        self.0
            .deserialize_newtype_struct(name, ExactVisitor(visitor))
    }

    // Skipped values are parsed in full, as the `Value` path parsed them (with the same
    // depth limit), rather than skimmed.
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(ExactVisitor(IgnoredAny))?;
        visitor.visit_unit()
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// A visitor of a value inside an argument: hands integral floats over as integers, and
/// reads what it contains through [`Exact`].
struct ExactVisitor<V>(V);

macro_rules! forward_visit {
    ($($method:ident($ty:ty);)*) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
                self.0.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for ExactVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    forward_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    /// As `integral_floats_to_integers` does to a `Value`, then as a `Value` hands the
    /// number on.
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<V::Value, E> {
        if f.fract() == 0.0 {
            if f >= i64::MIN as f64 && f < i64::MAX as f64 {
                let i = f as i64;
                return if i < 0 {
                    self.0.visit_i64(i)
                } else {
                    self.0.visit_u64(i as u64)
                };
            }
            if f >= 0.0 && f < u64::MAX as f64 {
                return self.0.visit_u64(f as u64);
            }
        }
        self.0.visit_f64(f)
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        self.0.visit_some(Exact(deserializer))
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit()
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<V::Value, D::Error> {
        self.0.visit_newtype_struct(Exact(deserializer))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.0.visit_seq(ExactSeq(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(ExactMap {
            inner: map,
            seen: Vec::new(),
        })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.0.visit_enum(ExactEnum(data))
    }
}

/// The elements of an array inside an argument, each read through [`Exact`].
struct ExactSeq<A>(A);

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for ExactSeq<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(ExactSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

/// The entries of an object inside an argument: keys as a `Value`'s map hands them over,
/// values through [`Exact`], and the keys seen so far, so that a repeated one (which the
/// `Value` path had already reduced to its last value) leaves the request to that path.
struct ExactMap<'de, A> {
    inner: A,
    seen: Vec<&'de str>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for ExactMap<'de, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.inner.next_key_seed(KeySeed {
            seed,
            seen: Some(&mut self.seen),
        })
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.next_value_seed(ExactSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// A seed of a key (of an object, or an enum's variant) read through [`Key`].
struct KeySeed<'s, 'de, S> {
    seed: S,
    /// The object's keys so far, to which this one is added; `None` for a variant name.
    seen: Option<&'s mut Vec<&'de str>>,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<'_, 'de, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Key {
            inner: deserializer,
            seen: self.seen,
        })
    }
}

/// A deserializer of a key: `serde_json`'s own (which reads numeric and boolean keys as
/// a `Value`'s map does), minus byte strings, and recording the key.
struct Key<'s, 'de, D> {
    inner: D,
    seen: Option<&'s mut Vec<&'de str>>,
}

macro_rules! forward_key {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
                self.inner.$method($($arg,)* KeyVisitor { inner: visitor, seen: self.seen })
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Key<'_, 'de, D> {
    type Error = D::Error;

    forward_key! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }

    // Text reads a key's raw bytes here; a `Value`'s map hands over the string.
    fn deserialize_bytes<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, D::Error> {
        Err(leave())
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, D::Error> {
        Err(leave())
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// The visitor of a key: records a key string (a repeated one, one with escapes, or one
/// too many is an error), and keeps reading through [`Key`].
struct KeyVisitor<'s, 'de, V> {
    inner: V,
    seen: Option<&'s mut Vec<&'de str>>,
}

macro_rules! forward_key_visit {
    ($($method:ident($ty:ty);)*) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for KeyVisitor<'_, 'de, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_key_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<V::Value, E> {
        if let Some(seen) = self.seen {
            if seen.len() >= MAX_KEYS || seen.contains(&key) {
                return Err(leave());
            }
            seen.push(key);
        }
        self.inner.visit_borrowed_str(key)
    }

    // Only a key with escapes comes this way: too rare to be worth a copy.
    fn visit_str<E: de::Error>(self, key: &str) -> Result<V::Value, E> {
        if self.seen.is_some() {
            return Err(leave());
        }
        self.inner.visit_str(key)
    }

    fn visit_string<E: de::Error>(self, key: String) -> Result<V::Value, E> {
        if self.seen.is_some() {
            return Err(leave());
        }
        self.inner.visit_string(key)
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Key {
            inner: deserializer,
            seen: self.seen,
        })
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<V::Value, D::Error> {
        self.inner.visit_newtype_struct(Key {
            inner: deserializer,
            seen: self.seen,
        })
    }

    // A key is a string: nothing of `serde_json`'s reaches these, so they are not followed.
    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<V::Value, A::Error> {
        Err(leave())
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<V::Value, A::Error> {
        Err(leave())
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        // A unit variant named by the key: nothing inside to read.
        self.inner.visit_enum(data)
    }
}

/// An enum inside an argument: its variant's name read as a key, its content through
/// [`Exact`].
struct ExactEnum<A>(A);

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for ExactEnum<A> {
    type Error = A::Error;
    type Variant = ExactVariant<A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let (value, variant) = self.0.variant_seed(KeySeed { seed, seen: None })?;
        Ok((value, ExactVariant(variant)))
    }
}

/// The content of an enum's variant, read through [`Exact`].
struct ExactVariant<A>(A);

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for ExactVariant<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(ExactSeed(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        // A `Value` hands an empty array to a tuple variant as a unit, text as a sequence.
        if len == 0 {
            return Err(leave());
        }
        self.0.tuple_variant(len, ExactVisitor(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(fields, StructVariant(visitor))
    }
}

/// The visitor of a struct variant's content: an object only, where text would also take
/// an array and a `Value` does not.
struct StructVariant<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for StructVariant<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        ExactVisitor(self.0).visit_map(map)
    }
}

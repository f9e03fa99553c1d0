//! Argument tuples read from a JSON object of named arguments: [`NamedArgs`].
//!
//! Owns: the `Value` path (take each named field out of the object, refuse unknown ones)
//! and the implementations of [`NamedArgs`] for tuples of up to 12 elements, whose bytes
//! path goes through `named_json`. Promises: every error names the field that is wrong and
//! why; a missing field is fine when its type accepts `null` (an `Option`). Must not touch:
//! postcard, or anything but the value or bytes it is given.

use serde::de::DeserializeOwned;

use super::named_json;

/// Argument tuples that can be read from a JSON object of named arguments.
pub trait NamedArgs: Sized {
    /// Read `names[i]` from `value` into the i-th element, with an error that names the
    /// field that is wrong and why.
    fn from_named_json(names: &[&str], value: serde_json::Value) -> Result<Self, String>;

    /// Read the arguments straight from the bytes of a JSON object of named arguments (as
    /// [`json_value_of_args`](super::json_value_of_args) reads them), without a
    /// `serde_json::Value` on the way. `Some` only with exactly the arguments
    /// `from_named_json` gives for that value; `None` for any error, and for the rare input
    /// it leaves to `from_named_json` to be sure (see the `named_json` module): then call
    /// that, which decides and words the error.
    fn from_named_json_bytes(names: &[&str], bytes: &[u8]) -> Option<Self>;
}

fn take_field<T: DeserializeOwned>(
    map: &mut serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<T, String> {
    match map.remove(name) {
        Some(v) => serde_json::from_value(v).map_err(|e| format!("field `{name}`: {e}")),
        // A missing field is fine when the type accepts null (an `Option`).
        None => serde_json::from_value(serde_json::Value::Null)
            .map_err(|_| format!("missing field `{name}`")),
    }
}

fn into_object(
    names: &[&str],
    value: serde_json::Value,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match value {
        serde_json::Value::Object(map) => Ok(map),
        serde_json::Value::Null if names.is_empty() => Ok(serde_json::Map::new()),
        other => Err(format!(
            "expected a JSON object of named arguments ({}), found {}",
            listed(names),
            json_kind(&other)
        )),
    }
}

/// The argument names as people read them: `` `a`, `b` ``, or `none`.
fn listed(names: &[&str]) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn reject_unknown(
    names: &[&str],
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    match map.keys().next() {
        None => Ok(()),
        Some(extra) => Err(format!(
            "unknown field `{extra}`; the arguments are {}",
            listed(names)
        )),
    }
}

macro_rules! named_args_tuple {
    ($($t:ident $i:tt),*) => {
        impl<$($t: DeserializeOwned),*> NamedArgs for ($($t,)*) {
            #[allow(unused_mut, unused_variables)]
            fn from_named_json(names: &[&str], value: serde_json::Value) -> Result<Self, String> {
                let mut map = into_object(names, value)?;
                let tuple = ($(take_field::<$t>(&mut map, names.get($i).copied().unwrap_or("?"))?,)*);
                reject_unknown(names, &map)?;
                Ok(tuple)
            }

            fn from_named_json_bytes(names: &[&str], bytes: &[u8]) -> Option<Self> {
                named_json::read(bytes, named_json::ArgsVisitor::<Self>::new(names))
            }
        }

        impl<'de, $($t: DeserializeOwned),*> serde::de::Visitor<'de>
            for named_json::ArgsVisitor<'_, ($($t,)*)>
        {
            type Value = ($($t,)*);

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object of named arguments")
            }

            #[allow(unused_mut, unused_variables, clippy::match_single_binding)]
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut slots: ($(Option<$t>,)*) = Default::default();
                // A key given twice: the last one counts, as in a `serde_json::Value`.
                while let Some(index) = named_json::next_arg(&mut map, self.names)? {
                    match index {
                        $($i => slots.$i = Some(named_json::arg_value::<$t, M>(&mut map)?),)*
                        _ => return Err(serde::de::Error::custom("no such argument")),
                    }
                }
                Ok(($(
                    match slots.$i {
                        Some(value) => value,
                        None => named_json::missing::<$t, M::Error>()?,
                    },
                )*))
            }

            fn visit_unit<Failure: serde::de::Error>(self) -> Result<Self::Value, Failure> {
                Ok(($(named_json::missing::<$t, Failure>()?,)*))
            }
        }
    };
}

named_args_tuple!();
named_args_tuple!(A 0);
named_args_tuple!(A 0, B 1);
named_args_tuple!(A 0, B 1, C 2);
named_args_tuple!(A 0, B 1, C 2, D 3);
named_args_tuple!(A 0, B 1, C 2, D 3, E 4);
named_args_tuple!(A 0, B 1, C 2, D 3, E 4, F 5);
named_args_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
named_args_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
named_args_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
named_args_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
named_args_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
named_args_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);

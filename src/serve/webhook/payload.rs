//! The fields of a GitHub webhook payload that dockless reads, as typed
//! structs, and nothing else: every other value is checked as JSON and
//! skipped, never kept, so a signed body costs no more memory than its
//! bytes and these few strings.
//!
//! The payload is read as a `serde_json::Value` was before: any JSON
//! document is accepted (nesting up to serde_json's 128 levels, counted in
//! skipped values too), a field of the wrong type reads as absent, an object
//! that is not one reads as empty, and a key given twice keeps its last
//! value. serde's derive refuses duplicate keys and skips unknown values
//! without the nesting limit, so the objects' visitors are written here.

use serde::de::{self, Deserialize, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// A delivery's payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    pub action: Option<String>,
    /// GitHub repeats the pull request's number here.
    pub number: Option<u64>,
    /// Present whenever the key is, even when its value is not an object.
    pub pull_request: Option<PullRequest>,
    pub repository: Option<Repository>,
    /// A ping's line of GitHub zen.
    pub zen: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullRequest {
    pub number: Option<u64>,
    pub merged: Option<bool>,
    pub merge_commit_sha: Option<String>,
    pub head: Option<Branch>,
    pub base: Option<Branch>,
}

/// A pull request's `head` or `base`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Branch {
    pub sha: Option<String>,
    /// `ref`, the branch name.
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repository {
    /// `owner/name`.
    pub full_name: Option<String>,
}

/// An object of the payload: reads the keys it knows.
trait Fields: Default {
    /// Reads the value of `key` when it is one of ours; `false` leaves the
    /// value to be skipped.
    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error>;
}

/// The value of a scalar field, `None` when it has another type.
fn scalar<'de, T: Deserialize<'de>, A: MapAccess<'de>>(map: &mut A) -> Result<Option<T>, A::Error> {
    Ok(map.next_value::<Scalar<T>>()?.0)
}

impl Fields for Payload {
    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "action" => self.action = scalar(map)?,
            "number" => self.number = scalar(map)?,
            "pull_request" => self.pull_request = Some(map.next_value()?),
            "repository" => self.repository = Some(map.next_value()?),
            "zen" => self.zen = scalar(map)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Fields for PullRequest {
    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "number" => self.number = scalar(map)?,
            "merged" => self.merged = scalar(map)?,
            "merge_commit_sha" => self.merge_commit_sha = scalar(map)?,
            "head" => self.head = Some(map.next_value()?),
            "base" => self.base = Some(map.next_value()?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Fields for Branch {
    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "sha" => self.sha = scalar(map)?,
            "ref" => self.name = scalar(map)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Fields for Repository {
    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "full_name" => self.full_name = scalar(map)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

macro_rules! deserialize_as_object {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(ObjectVisitor(PhantomData))
            }
        }
    )*};
}
deserialize_as_object!(Payload, PullRequest, Branch, Repository);

/// Reads an object's known fields; any other value reads as an empty object.
struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Fields> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut object = T::default();
        while let Some(key) = map.next_key::<String>()? {
            if !object.read(&key, &mut map)? {
                map.next_value::<Skipped>()?;
            }
        }
        Ok(object)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        skip_seq(seq).map(|()| T::default())
    }

    fn visit_bool<E>(self, _: bool) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_i64<E>(self, _: i64) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_u64<E>(self, _: u64) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_f64<E>(self, _: f64) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_str<E>(self, _: &str) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::default())
    }
}

/// A string, number or boolean of type `T`, or `None` for any other value.
struct Scalar<T>(Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Scalar<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor(PhantomData))
    }
}

struct ScalarVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> ScalarVisitor<T> {
    /// `T` from the value, if it has that type.
    fn convert<D: Deserializer<'de, Error = de::value::Error>>(value: D) -> Scalar<T> {
        Scalar(T::deserialize(value).ok())
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for ScalarVisitor<T> {
    type Value = Scalar<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Scalar<T>, E> {
        Ok(Self::convert(v.into_deserializer()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar<T>, E> {
        Ok(Self::convert(v.into_deserializer()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar<T>, E> {
        Ok(Self::convert(v.into_deserializer()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Scalar<T>, E> {
        Ok(Self::convert(v.into_deserializer()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar<T>, E> {
        Ok(Self::convert(de::value::StrDeserializer::new(v)))
    }
    fn visit_unit<E>(self) -> Result<Scalar<T>, E> {
        Ok(Scalar(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scalar<T>, A::Error> {
        skip_seq(seq).map(|()| Scalar(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar<T>, A::Error> {
        skip_map(map).map(|()| Scalar(None))
    }
}

/// Any JSON value, checked and dropped. Unlike `serde::de::IgnoredAny`,
/// whose serde_json reader skips without counting nesting, every level
/// goes through the deserializer, so its depth limit holds.
struct Skipped;

impl<'de> Deserialize<'de> for Skipped {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkippedVisitor)
    }
}

struct SkippedVisitor;

impl<'de> Visitor<'de> for SkippedVisitor {
    type Value = Skipped;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_unit<E>(self) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Skipped, A::Error> {
        skip_seq(seq).map(|()| Skipped)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Skipped, A::Error> {
        skip_map(map).map(|()| Skipped)
    }
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Skipped>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<Skipped, Skipped>()?.is_some() {}
    Ok(())
}

//! Bounded lists and page sizes: the contract's limits as types.

use serde::{Deserialize, Serialize};

use crate::ids::RangeError;
use crate::MAX_ITEMS;

/// A list of `1..=100` entries (items of an order, ids of a batch). Decoding an empty or
/// longer list fails, so handlers never see one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<T>", into = "Vec<T>")]
#[serde(bound(
    deserialize = "T: Deserialize<'de>",
    serialize = "T: Serialize + Clone"
))]
pub struct ItemList<T>(Vec<T>);

impl<T> ItemList<T> {
    pub fn new(items: Vec<T>) -> Result<Self, RangeError> {
        if items.is_empty() {
            Err(RangeError("the list must not be empty"))
        } else if items.len() > MAX_ITEMS {
            Err(RangeError("the list must have at most 100 entries"))
        } else {
            Ok(ItemList(items))
        }
    }

    pub fn as_slice(&self) -> &[T] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<T> {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }
}

impl<T> TryFrom<Vec<T>> for ItemList<T> {
    type Error = RangeError;
    fn try_from(items: Vec<T>) -> Result<Self, RangeError> {
        Self::new(items)
    }
}

impl<T> From<ItemList<T>> for Vec<T> {
    fn from(list: ItemList<T>) -> Vec<T> {
        list.0
    }
}

impl<'a, T> IntoIterator for &'a ItemList<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

crate::ids::ranged_int!(
    /// Page size of a list request (default 20).
    PageLimit(i64): 1, MAX_ITEMS as i64, "limit must be between 1 and 100"
);

impl Default for PageLimit {
    fn default() -> Self {
        PageLimit(20)
    }
}

/// Text with a length bound in characters; `NONEMPTY` also rejects blank text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Text<const MAX: usize, const NONEMPTY: bool>(String);

/// A required short text such as a title or a receiver's name: 1..=200 characters.
pub type ShortText = Text<200, true>;
/// An optional-content text field: 0..=2000 characters.
pub type LongText = Text<2000, false>;

impl<const MAX: usize, const NONEMPTY: bool> Text<MAX, NONEMPTY> {
    pub fn new(text: String) -> Result<Self, RangeError> {
        // PostgreSQL text cannot hold U+0000: refused here as bad input, not failed at the
        // database as an internal error.
        if text.contains('\0') {
            return Err(RangeError("a text field must not contain U+0000"));
        }
        if NONEMPTY && text.trim().is_empty() {
            return Err(RangeError("a required text field is empty"));
        }
        if text.chars().count() > MAX {
            return Err(RangeError("a text field is too long"));
        }
        Ok(Text(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// What `str::trim` removes (Unicode `White_Space`), spelled out as a character class, so
/// the documented pattern means the same in every regular-expression dialect.
#[cfg(feature = "openapi")]
const WHITE_SPACE: &str =
    r"\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

#[cfg(feature = "openapi")]
impl<const MAX: usize, const NONEMPTY: bool> utoipa::PartialSchema for Text<MAX, NONEMPTY> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let text = ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(MAX));
        if NONEMPTY {
            text.min_length(Some(1))
                .pattern(Some(format!(
                    "^[^\\u0000]*[^\\u0000{WHITE_SPACE}][^\\u0000]*$"
                )))
                .description(Some(format!(
                    "1 to {MAX} characters, not all white space, no U+0000"
                )))
                .into()
        } else {
            text.pattern(Some("^[^\\u0000]*$"))
                .description(Some(format!("At most {MAX} characters, no U+0000")))
                .into()
        }
    }
}

#[cfg(feature = "openapi")]
impl<const MAX: usize, const NONEMPTY: bool> utoipa::ToSchema for Text<MAX, NONEMPTY> {
    fn name() -> std::borrow::Cow<'static, str> {
        match (MAX, NONEMPTY) {
            (200, true) => "ShortText".into(),
            (2000, false) => "LongText".into(),
            _ => format!("Text{MAX}{}", if NONEMPTY { "NonEmpty" } else { "" }).into(),
        }
    }
}

impl<const MAX: usize> Default for Text<MAX, false> {
    fn default() -> Self {
        Text(String::new())
    }
}

impl<const MAX: usize, const NONEMPTY: bool> TryFrom<String> for Text<MAX, NONEMPTY> {
    type Error = RangeError;
    fn try_from(text: String) -> Result<Self, RangeError> {
        Self::new(text)
    }
}

impl<const MAX: usize, const NONEMPTY: bool> From<Text<MAX, NONEMPTY>> for String {
    fn from(t: Text<MAX, NONEMPTY>) -> String {
        t.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_list_bounds() {
        assert!(serde_json::from_str::<ItemList<i64>>("[]").is_err());
        assert!(serde_json::from_str::<ItemList<i64>>("[1]").is_ok());
        let hundred: Vec<i64> = (1..=100).collect();
        let json = serde_json::to_string(&hundred).unwrap();
        assert!(serde_json::from_str::<ItemList<i64>>(&json).is_ok());
        let json = serde_json::to_string(&(1..=101).collect::<Vec<i64>>()).unwrap();
        assert!(serde_json::from_str::<ItemList<i64>>(&json).is_err());
    }

    #[test]
    fn text_bounds() {
        assert!(ShortText::new("  ".into()).is_err());
        assert!(ShortText::new("x".repeat(201)).is_err());
        assert!(LongText::new(String::new()).is_ok());
        assert!(LongText::new("a\0b".into()).is_err());
        assert!(ShortText::new("\0".into()).is_err());
    }
}

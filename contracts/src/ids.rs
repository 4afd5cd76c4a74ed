//! Identifier and amount types with their range rules, so that a value of one of these
//! types is always valid: decoding a request rejects anything out of range.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Largest integer id the contract allows: ids must stay exact in a JavaScript number.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// A range-checked integer newtype: decoding (serde `try_from = "i64"`) rejects values out
/// of range, so a value of the type is always valid.
macro_rules! ranged_int {
    ($(#[$doc:meta])* $name:ident($inner:ty): $min:expr, $max:expr, $msg:literal) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
            ::serde::Serialize, ::serde::Deserialize,
        )]
        #[serde(try_from = "i64", into = "i64")]
        pub struct $name($inner);

        impl $name {
            pub const MIN: i64 = $min;
            pub const MAX: i64 = $max;

            pub fn new(value: i64) -> Result<Self, $crate::ids::RangeError> {
                if (Self::MIN..=Self::MAX).contains(&value) {
                    // In range, so the cast cannot truncate.
                    Ok($name(value as $inner))
                } else {
                    Err($crate::ids::RangeError($msg))
                }
            }

            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl TryFrom<i64> for $name {
            type Error = $crate::ids::RangeError;
            fn try_from(value: i64) -> Result<Self, $crate::ids::RangeError> {
                Self::new(value)
            }
        }

        impl From<$name> for i64 {
            fn from(v: $name) -> i64 {
                v.0 as i64
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                self.0.fmt(f)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $crate::ids::openapi::integer(Self::MIN, Self::MAX, $msg)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}
pub(crate) use ranged_int;

ranged_int!(
    /// A goods (product) id.
    GoodsId(i64): 1, MAX_SAFE_INTEGER, "goods_id must be a positive integer below 2^53"
);
ranged_int!(
    /// A live room id.
    RoomId(i64): 1, MAX_SAFE_INTEGER, "room_id must be a positive integer below 2^53"
);
ranged_int!(
    /// A user id.
    UserId(i64): 1, MAX_SAFE_INTEGER, "user_id must be a positive integer below 2^53"
);
ranged_int!(
    /// A goods category id.
    CategoryId(i64): 1, MAX_SAFE_INTEGER, "category_id must be a positive integer below 2^53"
);
ranged_int!(
    /// Units of one goods in an order line.
    Quantity(i32): 1, 10_000, "quantity must be between 1 and 10000"
);
ranged_int!(
    /// Money in integer cents, never negative. Never a float.
    Cents(i64): 0, MAX_SAFE_INTEGER, "amounts in cents must be between 0 and 2^53-1"
);

/// A value outside the range its type allows; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeError(pub &'static str);

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for RangeError {}

/// An order serial number: a 63-bit snowflake id, written on the wire as a decimal string
/// because it exceeds what a JavaScript number holds exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderSn(i64);

impl OrderSn {
    pub fn new(value: i64) -> Result<Self, RangeError> {
        if value > 0 {
            Ok(OrderSn(value))
        } else {
            Err(RangeError("order_sn must be a positive 64-bit integer"))
        }
    }

    /// Parses the decimal string form.
    pub fn parse(text: &str) -> Result<Self, RangeError> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RangeError("order_sn must be a string of decimal digits"));
        }
        let value = text
            .parse::<i64>()
            .map_err(|_| RangeError("order_sn must be a positive 64-bit integer"))?;
        Self::new(value)
    }

    pub const fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for OrderSn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for OrderSn {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[1-9][0-9]{0,18}$"))
            .description(Some(
                "A 63-bit snowflake id as a decimal string (it exceeds what a JavaScript number holds)",
            ))
            .examples([serde_json::json!("383211497207996416")])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for OrderSn {}

/// JSON Schemas of the ranged integers, for the gateway's OpenAPI document.
#[cfg(feature = "openapi")]
pub mod openapi {
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    use utoipa::openapi::RefOr;

    pub fn integer(min: i64, max: i64, rule: &str) -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .minimum(Some(min))
            .maximum(Some(max))
            .description(Some(rule))
            .into()
    }
}

impl Serialize for OrderSn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for OrderSn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        OrderSn::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_out_of_range() {
        assert!(GoodsId::new(0).is_err());
        assert!(GoodsId::new(MAX_SAFE_INTEGER + 1).is_err());
        assert!(GoodsId::new(MAX_SAFE_INTEGER).is_ok());
        assert!(serde_json::from_str::<GoodsId>("-3").is_err());
        assert!(serde_json::from_str::<GoodsId>("1.5").is_err());
        assert!(serde_json::from_str::<GoodsId>("\"7\"").is_err());
    }

    #[test]
    fn quantity_bounds() {
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(10_001).is_err());
        assert_eq!(Quantity::new(10_000).unwrap().get(), 10_000);
    }

    #[test]
    fn order_sn_is_a_decimal_string() {
        let sn: OrderSn = serde_json::from_str("\"7260000000000000001\"").unwrap();
        assert_eq!(
            serde_json::to_string(&sn).unwrap(),
            "\"7260000000000000001\""
        );
        assert!(serde_json::from_str::<OrderSn>("7260000000000000001").is_err());
        assert!(serde_json::from_str::<OrderSn>("\"-1\"").is_err());
        assert!(serde_json::from_str::<OrderSn>("\"0\"").is_err());
        assert!(serde_json::from_str::<OrderSn>("\"99999999999999999999\"").is_err());
        assert!(serde_json::from_str::<OrderSn>("\"\"").is_err());
    }
}

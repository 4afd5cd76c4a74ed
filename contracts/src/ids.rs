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
///
/// Its bits, high to low: 41 of milliseconds since the order workers' epoch, 8 of the
/// [`crate::partition::Slot`] of the order's user (so any worker finds the partition that
/// holds an order from its id alone), 8 of the issuing worker's node id, 6 of sequence.
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

    /// The largest order_sn (the snowflake's 63 bits).
    pub const MAX: i64 = i64::MAX;
    /// Where the milliseconds start.
    pub const MS_SHIFT: u32 = 22;
    /// Where the user's slot starts (8 bits).
    pub const SLOT_SHIFT: u32 = 14;
    /// Where the node id starts (8 bits); the sequence is the 6 bits below it.
    pub const NODE_SHIFT: u32 = 6;
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
            .pattern(Some(openapi::decimal_up_to(OrderSn::MAX as u64)))
            .description(Some(
                "A 63-bit snowflake id as a decimal string (it exceeds what a JavaScript number holds): \
                 1 to 9223372036854775807, digits only",
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

    /// A regular expression for the decimals `1..=max` without sign (leading zeros allowed,
    /// as the parser allows them): every shorter length, then for each digit of `max` the
    /// numbers that share its prefix and are smaller at that digit, then `max` itself.
    pub fn decimal_up_to(max: u64) -> String {
        let digits: Vec<u32> = max
            .to_string()
            .bytes()
            .map(|b| u32::from(b - b'0'))
            .collect();
        let n = digits.len();
        let mut branches = Vec::new();
        if n > 1 {
            branches.push(if n == 2 {
                "[1-9]".to_owned()
            } else {
                format!("[1-9][0-9]{{0,{}}}", n - 2)
            });
        }
        for (i, &d) in digits.iter().enumerate() {
            let low = if i == 0 { 1 } else { 0 };
            if d <= low {
                continue;
            }
            let prefix: String = digits[..i].iter().map(|d| d.to_string()).collect();
            let rest = n - i - 1;
            let class = if d - 1 == low {
                low.to_string()
            } else {
                format!("[{low}-{}]", d - 1)
            };
            let tail = match rest {
                0 => String::new(),
                1 => "[0-9]".to_owned(),
                r => format!("[0-9]{{{r}}}"),
            };
            branches.push(format!("{prefix}{class}{tail}"));
        }
        branches.push(max.to_string());
        format!("^0*(?:{})$", branches.join("|"))
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

    /// The documented pattern accepts exactly what `OrderSn::parse` accepts.
    #[cfg(feature = "openapi")]
    #[test]
    fn the_order_sn_pattern_is_the_parser() {
        let pattern = openapi::decimal_up_to(OrderSn::MAX as u64);
        let body = pattern.trim_start_matches("^0*(?:").trim_end_matches(")$");
        let branches: Vec<&str> = body.split('|').collect();
        // A tiny matcher for this pattern's shapes: literal digits, [a-b] and [0-9]{k} / {0,k}.
        fn matches(branch: &str, text: &str) -> bool {
            let mut lengths = vec![0usize];
            let mut chars = branch.chars().peekable();
            let mut classes: Vec<(u8, u8, usize, usize)> = Vec::new();
            while let Some(c) = chars.next() {
                let (lo, hi) = if c == '[' {
                    let lo = chars.next().unwrap() as u8;
                    chars.next();
                    let hi = chars.next().unwrap() as u8;
                    chars.next();
                    (lo, hi)
                } else {
                    (c as u8, c as u8)
                };
                let (mut min, mut max) = (1, 1);
                if chars.peek() == Some(&'{') {
                    chars.next();
                    let spec: String = chars.by_ref().take_while(|c| *c != '}').collect();
                    match spec.split_once(',') {
                        Some((a, b)) => (min, max) = (a.parse().unwrap(), b.parse().unwrap()),
                        None => (min, max) = (spec.parse().unwrap(), spec.parse().unwrap()),
                    }
                }
                classes.push((lo, hi, min, max));
            }
            let bytes = text.as_bytes();
            for (lo, hi, min, max) in classes {
                let mut next = Vec::new();
                for start in lengths {
                    for k in min..=max {
                        let end = start + k;
                        if end <= bytes.len()
                            && bytes[start..end].iter().all(|b| (lo..=hi).contains(b))
                        {
                            next.push(end);
                        }
                    }
                }
                lengths = next;
            }
            lengths.contains(&bytes.len())
        }
        // `^0*` first: leading zeros, then one branch.
        let accepted = |text: &str| {
            let rest = text.trim_start_matches('0');
            branches.iter().any(|b| matches(b, rest))
        };
        for text in [
            "1",
            "9",
            "10",
            "383211497207996416",
            "999999999999999999",
            "1000000000000000000",
            "9223372036854775807",
            "9223372036854775806",
            "9223372036854775799",
            "9223372036854775808",
            "9223372036854775810",
            "9300000000000000000",
            "9999999999999999999",
            "10000000000000000000",
            "0",
            "00",
            "01",
            "0009223372036854775807",
            "0009223372036854775808",
            "",
            "-1",
            "+1",
        ] {
            assert_eq!(accepted(text), OrderSn::parse(text).is_ok(), "{text}");
        }
    }
}

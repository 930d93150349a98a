//! JSON parsing that names the offending field.
//!
//! serde's own errors say what went wrong but not where; wrapping the
//! deserializer in `serde_path_to_error` gives `action.serial.actions[1]: ...`,
//! which is what the receptor sends back in its `InvalidJSON` answer.

use serde::de::DeserializeOwned;

/// A body that is not valid JSON for the expected type.
#[derive(Debug, thiserror::Error)]
#[error("{}", render(.path, .message))]
pub struct ParseError {
    /// Path of the field where parsing stopped; empty at the top level.
    pub path: String,
    pub message: String,
}

fn render(path: &str, message: &str) -> String {
    if path.is_empty() || path == "." {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}

fn from_path_error(err: serde_path_to_error::Error<serde_json::Error>) -> ParseError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    // serde_json appends " at line X column Y"; keep it, it helps with files.
    ParseError {
        path: if path == "." { String::new() } else { path },
        message: inner.to_string(),
    }
}

pub fn from_json_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ParseError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(de).map_err(from_path_error)?;
    Ok(value)
}

pub fn from_json_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ParseError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        ParseError {
            path: if path == "." { String::new() } else { path },
            message: err.into_inner().to_string(),
        }
    })
}

/// One item of a list that is decoded on its own, so that a list with an
/// item this reader cannot decode (written by a newer version, damaged, or
/// nested past the decoder's recursion limit) still yields every other item.
///
/// The item is first taken as raw JSON: serde_json skips over raw values
/// without recursion (and so without its depth limit), then decodes the
/// item with a fresh depth budget of its own. Readers log the failures
/// ([`readable_items`]) and carry on.
#[derive(Debug)]
pub struct Readable<T>(pub Result<T, String>);

impl<'de, T: DeserializeOwned> serde::Deserialize<'de> for Readable<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <Box<serde_json::value::RawValue>>::deserialize(deserializer)?;
        Ok(Readable(
            serde_json::from_str(raw.get()).map_err(|e| e.to_string()),
        ))
    }
}

/// Splits decoded list items into the readable ones and the reasons the
/// others could not be read (for the caller to log).
pub fn readable_items<T>(items: Vec<Readable<T>>) -> (Vec<T>, Vec<String>) {
    let mut readable = Vec::with_capacity(items.len());
    let mut unreadable = Vec::new();
    for Readable(item) in items {
        match item {
            Ok(item) => readable.push(item),
            Err(reason) => unreadable.push(reason),
        }
    }
    (readable, unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_one_undecodable_item_does_not_hide_the_others() {
        // 200 levels: past serde_json's limit of 128 for the whole list.
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let text = format!(r#"[{{"a": 1}}, {deep}, {{"a": 2}}, {{"b": 3}}]"#);
        #[derive(serde::Deserialize, Debug, PartialEq)]
        #[serde(deny_unknown_fields)]
        struct Item {
            a: i64,
        }
        assert!(serde_json::from_str::<Vec<Item>>(&text).is_err());
        let items: Vec<Readable<Item>> = serde_json::from_str(&text).expect("a list");
        let (readable, unreadable) = readable_items(items);
        assert_eq!(readable, vec![Item { a: 1 }, Item { a: 2 }]);
        assert_eq!(unreadable.len(), 2, "{unreadable:?}");

        // An item nested past the decoder's limit costs only itself.
        let text = format!("[1, {deep}, 2]");
        assert!(serde_json::from_str::<Vec<serde_json::Value>>(&text).is_err());
        let items: Vec<Readable<serde_json::Value>> = serde_json::from_str(&text).expect("a list");
        let (readable, unreadable) = readable_items(items);
        assert_eq!(readable, vec![serde_json::json!(1), serde_json::json!(2)]);
        assert!(unreadable[0].contains("recursion limit"), "{unreadable:?}");
    }
}

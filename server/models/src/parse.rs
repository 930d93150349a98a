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

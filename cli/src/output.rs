//! Output shared by the commands: tables, `--json`, timestamps.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;

/// A table with `header`, in the style of every ltc list.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    table
}

/// A two-column table of `(name, value)` rows, for one record's details.
pub fn details(rows: &[(&str, String)]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    for (name, value) in rows {
        table.add_row(vec![name.to_string(), value.clone()]);
    }
    table
}

pub fn write_table(out: &mut dyn Write, table: &Table) -> std::io::Result<()> {
    writeln!(out, "{table}")
}

/// `value` as pretty JSON, for `--json`: the receptor's own shapes, so
/// that scripts can rely on the API documentation.
pub fn write_json<T: Serialize>(out: &mut dyn Write, value: &T) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Nanoseconds since the epoch (Diego's unit) as RFC 3339 UTC; `-` for 0,
/// which the API uses for "never".
pub fn timestamp(nanos: i64) -> String {
    match u64::try_from(nanos) {
        Ok(0) | Err(_) => "-".to_string(),
        Ok(nanos) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_nanos(nanos)).to_string()
        }
    }
}

/// `-` for an empty field, so that table columns never look missing.
pub fn or_dash(value: &str) -> String {
    if value.is_empty() {
        "-".to_string()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "-");
        assert_eq!(timestamp(-5), "-");
        assert_eq!(timestamp(1_700_000_000_123_456_789), "2023-11-14T22:13:20Z");
    }
}

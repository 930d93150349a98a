//! A reader for the small subset of YAML that buildpacks' `bin/release`
//! prints, written by hand: a YAML crate would grow every binary uploaded
//! into containers, and the maintained ones pull in more than this needs.
//!
//! # Supported
//! - Block mappings and block sequences nested by indentation (spaces), a
//!   sequence item holding a mapping (`- name: x`), and a sequence at the
//!   indentation of its key (`key:` then `- item`).
//! - Plain, `'single'` (`''` is a quote) and `"double"` quoted scalars (the
//!   usual backslash escapes).
//! - Flow collections on one line (`{}`, `[]`, `{web: x, a: 'b'}`, nested).
//! - Comments, a leading `---` (also `--- {}`, as Ruby's `to_yaml` prints
//!   an empty hash), a closing `...`.
//!
//! # Not supported (an error names the line)
//! Block scalars (`|`, `>`), anchors, aliases and tags, multi-line plain or
//! quoted scalars, flow collections over several lines, tabs in
//! indentation, several documents.
//!
//! # Caveats
//! Every scalar is kept as its text (`1`, `true` are strings): callers want
//! strings. `~`, `null` and an absent value read as [`Value::Null`].

/// A parsed YAML node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// Any scalar, as its text.
    Scalar(String),
    /// Entries in document order; keys are unique.
    Map(Vec<(String, Value)>),
    List(Vec<Value>),
}

impl Value {
    /// The value of `key` when this is a map holding it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// What kind of node this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Scalar(_) => "a string",
            Value::Map(_) => "a map",
            Value::List(_) => "a list",
        }
    }
}

/// Text outside the supported subset, or not YAML at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct YamlError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

/// Parses one YAML document; empty text (or only comments) is
/// [`Value::Null`].
///
/// # Errors
/// See the module docs for what is outside the subset.
pub fn parse(text: &str) -> Result<Value, YamlError> {
    let mut lines = significant_lines(text)?;
    if lines.is_empty() {
        return Ok(Value::Null);
    }
    let mut pos = 0;
    let indent = lines[0].indent;
    let value = parse_block(&mut lines, &mut pos, indent)?;
    match lines.get(pos) {
        None => Ok(value),
        Some(line) => Err(line.error("unexpected line: it does not continue the node above")),
    }
}

/// One line holding YAML content: its indentation and the text after it.
#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    number: usize,
    indent: usize,
    text: &'a str,
}

impl Line<'_> {
    fn error(&self, message: impl Into<String>) -> YamlError {
        YamlError {
            line: self.number,
            message: message.into(),
        }
    }
}

fn error(line: usize, message: impl Into<String>) -> YamlError {
    YamlError {
        line,
        message: message.into(),
    }
}

/// The lines with content: blank lines, comment lines and the document
/// markers are dropped; `--- X` leaves `X`.
fn significant_lines(text: &str) -> Result<Vec<Line<'_>>, YamlError> {
    let mut lines = Vec::new();
    let mut started = false;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = raw.trim_start_matches(' ');
        let indent = raw.len() - trimmed.len();
        let text = trimmed.trim_end();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if text.starts_with('\t') {
            return Err(error(number, "tabs are not allowed in indentation"));
        }
        if indent == 0 && text == "..." {
            break;
        }
        if indent == 0 && (text == "---" || text.starts_with("--- ")) {
            if started {
                return Err(error(number, "only one document is supported"));
            }
            started = true;
            let rest = text[3..].trim_start();
            if !rest.is_empty() && !rest.starts_with('#') {
                lines.push(Line {
                    number,
                    indent: 0,
                    text: rest,
                });
            }
            continue;
        }
        started = true;
        lines.push(Line {
            number,
            indent,
            text,
        });
    }
    Ok(lines)
}

fn is_list_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// The node starting at `lines[pos]`, whose indentation is `indent`.
fn parse_block(lines: &mut [Line<'_>], pos: &mut usize, indent: usize) -> Result<Value, YamlError> {
    let line = lines[*pos];
    if is_list_item(line.text) {
        return parse_list(lines, pos, indent);
    }
    if split_key(line.text, line.number)?.is_some() {
        return parse_map(lines, pos, indent);
    }
    // A lone scalar or flow collection.
    *pos += 1;
    let value = parse_inline(line.text, line.number)?;
    no_deeper_line(lines, *pos, indent)?;
    Ok(value)
}

/// Fails when the line at `pos` is indented deeper than `indent`: it would
/// continue a scalar over several lines, which the subset does not read.
fn no_deeper_line(lines: &[Line<'_>], pos: usize, indent: usize) -> Result<(), YamlError> {
    match lines.get(pos) {
        Some(next) if next.indent > indent => {
            Err(next.error("unexpected indentation (multi-line values are not supported)"))
        }
        _ => Ok(()),
    }
}

fn parse_map(lines: &mut [Line<'_>], pos: &mut usize, indent: usize) -> Result<Value, YamlError> {
    let mut entries: Vec<(String, Value)> = Vec::new();
    while let Some(&line) = lines.get(*pos) {
        if line.indent < indent {
            break;
        }
        if line.indent > indent {
            return Err(line.error("unexpected indentation"));
        }
        if is_list_item(line.text) {
            return Err(line.error("a list item where a map key was expected"));
        }
        let Some((key, rest)) = split_key(line.text, line.number)? else {
            return Err(line.error("expected `key: value`"));
        };
        if entries.iter().any(|(existing, _)| *existing == key) {
            return Err(line.error(format!("duplicate key {key:?}")));
        }
        *pos += 1;
        let value = if rest.is_empty() || rest.starts_with('#') {
            match lines.get(*pos) {
                Some(next) if next.indent > indent => {
                    let nested = next.indent;
                    parse_block(lines, pos, nested)?
                }
                Some(next) if next.indent == indent && is_list_item(next.text) => {
                    parse_list(lines, pos, indent)?
                }
                _ => Value::Null,
            }
        } else {
            let value = parse_inline(rest, line.number)?;
            no_deeper_line(lines, *pos, indent)?;
            value
        };
        entries.push((key, value));
    }
    Ok(Value::Map(entries))
}

fn parse_list(lines: &mut [Line<'_>], pos: &mut usize, indent: usize) -> Result<Value, YamlError> {
    let mut items = Vec::new();
    while let Some(&line) = lines.get(*pos) {
        if line.indent < indent || (line.indent == indent && !is_list_item(line.text)) {
            break;
        }
        if line.indent > indent {
            return Err(line.error("unexpected indentation"));
        }
        let content = line.text[1..].trim_start();
        if content.is_empty() || content.starts_with('#') {
            *pos += 1;
            items.push(match lines.get(*pos) {
                Some(next) if next.indent > indent => {
                    let nested = next.indent;
                    parse_block(lines, pos, nested)?
                }
                _ => Value::Null,
            });
            continue;
        }
        if is_list_item(content) || split_key(content, line.number)?.is_some() {
            // `- key: v` (or `- - x`) opens a node whose first line starts
            // where the content does; the item's next lines align with it.
            let nested = indent + (line.text.len() - content.len());
            lines[*pos] = Line {
                number: line.number,
                indent: nested,
                text: content,
            };
            items.push(parse_block(lines, pos, nested)?);
            continue;
        }
        *pos += 1;
        items.push(parse_inline(content, line.number)?);
        no_deeper_line(lines, *pos, indent)?;
    }
    Ok(Value::List(items))
}

/// Splits `key: rest` (or `key:` with nothing after). `None` when the text
/// is not a map entry (a scalar or a flow collection).
fn split_key(text: &str, line: usize) -> Result<Option<(String, &str)>, YamlError> {
    if text.starts_with(['{', '[']) {
        return Ok(None);
    }
    if text.starts_with(['"', '\'']) {
        let (key, used) = parse_quoted(text, line)?;
        let after = &text[used..];
        return Ok(key_rest(after).map(|rest| (key, rest)));
    }
    let bytes = text.as_bytes();
    for (i, &byte) in bytes.iter().enumerate() {
        let before_blank = i > 0 && matches!(bytes[i - 1], b' ' | b'\t');
        if byte == b'#' && before_blank {
            // A comment starts before any `key:`.
            return Ok(None);
        }
        if byte == b':' {
            if let Some(rest) = key_rest(&text[i..]) {
                let key = text[..i].trim_end();
                if key.is_empty() {
                    return Err(error(line, "empty map key"));
                }
                return Ok(Some((key.to_string(), rest)));
            }
        }
    }
    Ok(None)
}

/// When `after` (the text after a key) is `:` followed by a blank or the
/// end, what follows the `:`, trimmed.
fn key_rest(after: &str) -> Option<&str> {
    let rest = after.strip_prefix(':')?;
    if rest.is_empty() || rest.starts_with([' ', '\t']) {
        Some(rest.trim())
    } else {
        None
    }
}

/// A value written on the line of its key or list dash.
fn parse_inline(text: &str, line: usize) -> Result<Value, YamlError> {
    let text = text.trim();
    if text.is_empty() || text.starts_with('#') {
        return Ok(Value::Null);
    }
    match text.as_bytes()[0] {
        b'"' | b'\'' => {
            let (value, used) = parse_quoted(text, line)?;
            only_comment_after(&text[used..], line)?;
            Ok(Value::Scalar(value))
        }
        b'{' | b'[' => {
            let mut flow = Flow { text, pos: 0, line };
            let value = flow.value()?;
            only_comment_after(&text[flow.pos..], line)?;
            Ok(value)
        }
        b'|' | b'>' => Err(error(
            line,
            "block scalars (| and >) are not supported: quote the value on one line",
        )),
        b'&' | b'*' | b'!' => Err(error(line, "anchors, aliases and tags are not supported")),
        _ => {
            // A plain scalar ends where a comment (` #`) starts.
            let end = text.find(" #").or_else(|| text.find("\t#"));
            Ok(plain(text[..end.unwrap_or(text.len())].trim_end()))
        }
    }
}

fn plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        _ => Value::Scalar(text.to_string()),
    }
}

/// After a complete value, only blanks and a comment may follow.
fn only_comment_after(rest: &str, line: usize) -> Result<(), YamlError> {
    let trimmed = rest.trim_start();
    if trimmed.is_empty() || (trimmed.starts_with('#') && trimmed.len() < rest.len()) {
        Ok(())
    } else {
        Err(error(
            line,
            format!("unexpected text after a value: {trimmed:?}"),
        ))
    }
}

/// A quoted scalar at the start of `text`: its value and the bytes it took.
fn parse_quoted(text: &str, line: usize) -> Result<(String, usize), YamlError> {
    let quote = text.as_bytes()[0];
    let mut value = String::new();
    let mut chars = text.char_indices().skip(1).peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' if quote == b'\'' => {
                if chars.peek().map(|&(_, next)| next) == Some('\'') {
                    chars.next();
                    value.push('\'');
                } else {
                    return Ok((value, i + 1));
                }
            }
            '"' if quote == b'"' => return Ok((value, i + 1)),
            '\\' if quote == b'"' => {
                let (_, escape) = chars
                    .next()
                    .ok_or_else(|| error(line, "unterminated escape in a quoted string"))?;
                let mut hex = |digits: usize| -> Result<char, YamlError> {
                    let code: String = (0..digits)
                        .filter_map(|_| chars.next())
                        .map(|(_, c)| c)
                        .collect();
                    u32::from_str_radix(&code, 16)
                        .ok()
                        .filter(|_| code.len() == digits)
                        .and_then(char::from_u32)
                        .ok_or_else(|| error(line, format!("bad escape \\{escape}{code}")))
                };
                let unescaped = match escape {
                    '0' => '\0',
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    't' | '\t' => '\t',
                    'n' => '\n',
                    'v' => '\u{b}',
                    'f' => '\u{c}',
                    'r' => '\r',
                    'e' => '\u{1b}',
                    ' ' => ' ',
                    '"' => '"',
                    '/' => '/',
                    '\\' => '\\',
                    'x' => hex(2)?,
                    'u' => hex(4)?,
                    'U' => hex(8)?,
                    other => return Err(error(line, format!("unknown escape \\{other}"))),
                };
                value.push(unescaped);
            }
            c => value.push(c),
        }
    }
    Err(error(
        line,
        "unterminated quoted string (multi-line strings are not supported)",
    ))
}

/// A flow collection on one line.
struct Flow<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
}

impl Flow<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn skip_blanks(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn value(&mut self) -> Result<Value, YamlError> {
        self.skip_blanks();
        match self.peek() {
            Some(b'{') => self.map(),
            Some(b'[') => self.list(),
            _ => self.scalar(),
        }
    }

    fn scalar(&mut self) -> Result<Value, YamlError> {
        self.skip_blanks();
        if matches!(self.peek(), Some(b'"' | b'\'')) {
            let (value, used) = parse_quoted(self.rest(), self.line)?;
            self.pos += used;
            return Ok(Value::Scalar(value));
        }
        let rest = self.rest();
        let bytes = rest.as_bytes();
        let mut end = bytes.len();
        for (i, &byte) in bytes.iter().enumerate() {
            let next = bytes.get(i + 1).copied();
            let ends_key =
                byte == b':' && matches!(next, None | Some(b' ' | b'\t' | b',' | b']' | b'}'));
            if matches!(byte, b',' | b'[' | b']' | b'{' | b'}') || ends_key {
                end = i;
                break;
            }
        }
        let value = plain(rest[..end].trim());
        self.pos += end;
        Ok(value)
    }

    fn expect_end(&self, closing: char) -> YamlError {
        error(
            self.line,
            format!("expected `,` or `{closing}` in a flow collection (flow collections must end on their line)"),
        )
    }

    fn map(&mut self) -> Result<Value, YamlError> {
        self.pos += 1;
        let mut entries: Vec<(String, Value)> = Vec::new();
        loop {
            self.skip_blanks();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(Value::Map(entries));
            }
            let key = match self.scalar()? {
                Value::Scalar(key) => key,
                _ => return Err(error(self.line, "empty key in a flow map")),
            };
            self.skip_blanks();
            let value = if self.peek() == Some(b':') {
                self.pos += 1;
                self.value()?
            } else {
                Value::Null
            };
            if entries.iter().any(|(existing, _)| *existing == key) {
                return Err(error(self.line, format!("duplicate key {key:?}")));
            }
            entries.push((key, value));
            self.skip_blanks();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(self.expect_end('}')),
            }
        }
    }

    fn list(&mut self) -> Result<Value, YamlError> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_blanks();
            if self.peek() == Some(b']') {
                self.pos += 1;
                return Ok(Value::List(items));
            }
            items.push(self.value()?);
            self.skip_blanks();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {}
                _ => return Err(self.expect_end(']')),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value {
        Value::Scalar(text.to_string())
    }

    fn map(entries: &[(&str, Value)]) -> Value {
        Value::Map(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn reads_a_typical_release() {
        let text = "---\n\
                    config_vars:\n  A: b\n  PATH: /app/bin:/usr/bin  # comment\n\
                    default_process_types:\n  web: sh ./start.sh --port $PORT\n\
                    addons: []\n";
        assert_eq!(
            parse(text),
            Ok(map(&[
                (
                    "config_vars",
                    map(&[("A", s("b")), ("PATH", s("/app/bin:/usr/bin"))])
                ),
                (
                    "default_process_types",
                    map(&[("web", s("sh ./start.sh --port $PORT"))])
                ),
                ("addons", Value::List(vec![])),
            ]))
        );
    }

    #[test]
    fn reads_what_ruby_to_yaml_prints() {
        // Ruby's {...}.to_yaml: quoted keys, empty collections in flow style.
        let text = "---\n\"addons\": []\n\"config_vars\": {}\n\
                    \"default_process_types\":\n  \"web\": \"bundle exec rackup -p $PORT\"\n";
        let value = parse(text).expect("valid");
        assert_eq!(value.get("config_vars"), Some(&Value::Map(vec![])));
        assert_eq!(
            value
                .get("default_process_types")
                .and_then(|p| p.get("web")),
            Some(&s("bundle exec rackup -p $PORT"))
        );
        assert_eq!(parse("--- {}\n"), Ok(Value::Map(vec![])));
    }

    #[test]
    fn reads_flow_collections() {
        assert_eq!(
            parse(
                "default_process_types: {web: 'sh x.sh', worker: \"w\"}\nk: [a, 'b, c', [d], {}]"
            ),
            Ok(map(&[
                (
                    "default_process_types",
                    map(&[("web", s("sh x.sh")), ("worker", s("w"))])
                ),
                (
                    "k",
                    Value::List(vec![
                        s("a"),
                        s("b, c"),
                        Value::List(vec![s("d")]),
                        Value::Map(vec![])
                    ])
                ),
            ]))
        );
        assert_eq!(
            parse("{url: http://x:8080/a, n: }"),
            Ok(map(&[("url", s("http://x:8080/a")), ("n", Value::Null)]))
        );
    }

    #[test]
    fn reads_scalars_quotes_and_nulls() {
        let text = "a: 'it''s # not a comment'\n\
                    b: \"tab\\there \\u00e9 \\\"q\\\"\"\n\
                    c: ~\n\
                    d:\n\
                    e: 8080\n\
                    f: a:b # comment\n\
                    'g h': x\n";
        assert_eq!(
            parse(text),
            Ok(map(&[
                ("a", s("it's # not a comment")),
                ("b", s("tab\there é \"q\"")),
                ("c", Value::Null),
                ("d", Value::Null),
                ("e", s("8080")),
                ("f", s("a:b")),
                ("g h", s("x")),
            ]))
        );
        assert_eq!(parse(""), Ok(Value::Null));
        assert_eq!(parse("# only a comment\n---\n"), Ok(Value::Null));
        assert_eq!(parse("just text"), Ok(s("just text")));
    }

    #[test]
    fn reads_block_lists() {
        let text = "list:\n- a\n- b: 1\n  c: 2\n-\n  - x\nafter: 1\nnested:\n  - - y\n";
        assert_eq!(
            parse(text),
            Ok(map(&[
                (
                    "list",
                    Value::List(vec![
                        s("a"),
                        map(&[("b", s("1")), ("c", s("2"))]),
                        Value::List(vec![s("x")]),
                    ])
                ),
                ("after", s("1")),
                ("nested", Value::List(vec![Value::List(vec![s("y")])])),
            ]))
        );
    }

    #[test]
    fn stops_at_the_end_marker_and_keeps_crlf_lines() {
        assert_eq!(
            parse("a: 1\r\n...\r\nnot: yaml: at all\n"),
            Ok(map(&[("a", s("1"))]))
        );
    }

    #[test]
    fn refuses_what_it_does_not_read_and_names_the_line() {
        let cases = [
            ("a: |\n  text\n", 1, "block scalars"),
            ("a: 1\n  b: 2\n", 2, "unexpected indentation"),
            ("a: 1\na: 2\n", 2, "duplicate key"),
            ("a: &x 1\n", 1, "anchors"),
            ("a: {b: 1\n", 1, "flow collections must end"),
            ("a: 'open\n", 1, "unterminated"),
            ("a:\n\tb: 1\n", 2, "tabs"),
            ("a: \"\\q\"\n", 1, "unknown escape"),
            ("a: 'x' y\n", 1, "unexpected text"),
            ("a: 1\n- b\n", 2, "list item"),
            ("a: 1\n---\nb: 2\n", 2, "one document"),
            ("a: text\n  more text\n", 2, "multi-line"),
            ("- a\nb: 1\n", 2, "does not continue"),
        ];
        for (text, line, message) in cases {
            let err = parse(text).expect_err(text);
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.message.contains(message), "{text:?}: {err}");
        }
    }
}

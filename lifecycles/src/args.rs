//! Flag parsing shared by the lifecycle binaries, and their exit codes.
//!
//! No argument-parsing crate: the binaries take a handful of flags, and each
//! dependency grows a binary that is uploaded into every container.

use std::ffi::OsString;

/// The run succeeded (for `healthcheck`: the target is healthy).
pub const EXIT_OK: u8 = 0;
/// The run failed (for `healthcheck`: the target is unhealthy).
pub const EXIT_FAILURE: u8 = 1;
/// Bad arguments.
pub const EXIT_USAGE: u8 = 2;
/// A shell's code for a command that was found but could not be executed.
pub const EXIT_NOT_EXECUTABLE: u8 = 126;
/// A shell's code for a command that was not found.
pub const EXIT_NOT_FOUND: u8 = 127;

/// Arguments the binary cannot make sense of; the message says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A flag and its value, from either `--name value` or `--name=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub name: String,
    pub value: String,
}

/// Reads `--name value` / `--name=value` pairs until the arguments end.
/// Every flag takes a value; `-h`/`--help` comes back as `Flag { name:
/// "--help", value: "" }` so the caller can print its usage.
///
/// # Errors
/// A non-UTF-8 argument, an argument that is not a flag, or a flag without a
/// value.
pub fn flags(args: Vec<OsString>) -> Result<Vec<Flag>, UsageError> {
    flags_and_switches(args, &[])
}

/// As [`flags`], but the flags named in `switches` take no value: each
/// comes back as `Flag { name, value: "" }`.
///
/// # Errors
/// As [`flags`], and a switch given a value (`--switch=x`).
pub fn flags_and_switches(args: Vec<OsString>, switches: &[&str]) -> Result<Vec<Flag>, UsageError> {
    let mut args = args.into_iter();
    let mut flags = Vec::new();
    while let Some(arg) = args.next() {
        let arg = utf8(arg)?;
        if arg == "-h" || arg == "--help" {
            flags.push(Flag {
                name: "--help".to_string(),
                value: String::new(),
            });
            continue;
        }
        if !arg.starts_with("--") || arg == "--" {
            return Err(UsageError(format!("unexpected argument {arg:?}")));
        }
        let switch_name = arg.split_once('=').map_or(arg.as_str(), |(name, _)| name);
        if switches.contains(&switch_name) {
            if switch_name != arg {
                return Err(UsageError(format!("{switch_name} takes no value")));
            }
            flags.push(Flag {
                name: arg,
                value: String::new(),
            });
            continue;
        }
        let (name, value) = match arg.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None => {
                let value = args
                    .next()
                    .ok_or_else(|| UsageError(format!("{arg} needs a value")))?;
                (arg, utf8(value)?)
            }
        };
        flags.push(Flag { name, value });
    }
    Ok(flags)
}

fn utf8(arg: OsString) -> Result<String, UsageError> {
    arg.into_string()
        .map_err(|arg| UsageError(format!("argument {arg:?} is not UTF-8")))
}

#[cfg(test)]
pub(crate) fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(name: &str, value: &str) -> Flag {
        Flag {
            name: name.to_string(),
            value: value.to_string(),
        }
    }

    #[test]
    fn reads_both_flag_spellings() {
        assert_eq!(
            flags(os(&["--port", "8080", "--uri=/a=b", "-h"])),
            Ok(vec![
                flag("--port", "8080"),
                flag("--uri", "/a=b"),
                flag("--help", "")
            ])
        );
        assert_eq!(flags(os(&[])), Ok(vec![]));
    }

    #[test]
    fn refuses_stray_arguments_and_missing_values() {
        assert!(flags(os(&["8080"])).is_err());
        assert!(flags(os(&["-p", "8080"])).is_err());
        assert!(flags(os(&["--"])).is_err());
        let missing = flags(os(&["--port"])).expect_err("no value");
        assert_eq!(missing.to_string(), "--port needs a value");
    }

    #[test]
    fn switches_take_no_value() {
        let switches = ["--quiet"];
        assert_eq!(
            flags_and_switches(os(&["--quiet", "--port", "1", "--quiet"]), &switches),
            Ok(vec![
                flag("--quiet", ""),
                flag("--port", "1"),
                flag("--quiet", "")
            ])
        );
        // The next argument is not swallowed as the switch's value.
        assert!(flags_and_switches(os(&["--quiet", "x"]), &switches).is_err());
        let valued = flags_and_switches(os(&["--quiet=yes"]), &switches).expect_err("a value");
        assert_eq!(valued.to_string(), "--quiet takes no value");
        assert!(
            flags(os(&["--quiet"])).is_err(),
            "not a switch unless named"
        );
    }
}

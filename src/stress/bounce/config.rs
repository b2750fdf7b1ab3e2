//! What a run is asked to do: the CLI's settings, and each bounce's mode.

use crate::mem::MemType;
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub mem: MemType,
    /// Bytes per area (source and destination each).
    pub size: usize,
    /// Stop after this many bounces...
    pub bounces: Option<u64>,
    /// ...or when this much time has passed (whichever comes first).
    pub duration: Option<Duration>,
    /// Worker threads per CPU.
    pub threads: usize,
    /// Print nothing per bounce.
    pub quiet: bool,
    /// Mix in fork, mremap and MADV_DONTNEED with their events.
    pub soak: bool,
    /// Print running totals this often (soak).
    pub progress: Option<Duration>,
}

impl Config {
    pub fn new(mem: MemType) -> Config {
        Config {
            mem,
            size: 32 << 20,
            bounces: Some(16),
            duration: None,
            threads: 2,
            quiet: false,
            soak: false,
            progress: None,
        }
    }
}

/// A bounce's mode, from the bounces left (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u64);

impl Mode {
    pub fn rnd(self) -> bool {
        self.0 & 1 != 0
    }
    pub fn racing(self) -> bool {
        self.0 & 2 != 0
    }
    pub fn ver(self) -> bool {
        self.0 & 4 != 0
    }
    pub fn poll(self) -> bool {
        self.0 & 8 != 0
    }
    pub fn minor(self) -> bool {
        (self.0 & 15).count_ones() % 2 == 1
    }
}

/// A `--size` or `--duration` the CLI cannot read; Display says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    SizeSuffix { arg: String, suffix: char },
    Size(String),
    Duration(String),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::SizeSuffix { arg, suffix } => write!(f, "size '{arg}': unknown suffix '{suffix}' (K, M or G)"),
            ParseError::Size(s) => write!(f, "size '{s}' is not a number"),
            ParseError::Duration(s) => write!(f, "duration '{s}' is not a number with s, m or h"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses a size: a number with an optional K, M or G suffix (binary); a
/// bare number is MiB, as upstream's `<MiB>` argument.
pub fn parse_size(s: &str) -> Result<usize, ParseError> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => {
                    return Err(ParseError::SizeSuffix {
                        arg: s.to_string(),
                        suffix: c,
                    });
                }
            };
            (&s[..i], m)
        }
        _ => (s, 1 << 20),
    };
    let n: usize = num.parse().map_err(|_| ParseError::Size(s.to_string()))?;
    Ok(n * mult)
}

/// Parses a duration: a number with s, m or h (bare: seconds).
pub fn parse_duration(s: &str) -> Result<Duration, ParseError> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| ParseError::Duration(s.to_string()))?;
    Ok(Duration::from_secs(n * mult))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_the_cli_says() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("20"), Ok(20 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("3X").is_err());
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
    }

    #[test]
    fn modes_follow_the_bounce_bits() {
        let m = Mode(0b1011);
        assert!(m.rnd() && m.racing() && !m.ver() && m.poll());
        assert!(m.minor());
        assert!(!Mode(0b11).minor());
    }
}

//! Path patterns on the device tree, as used by the rules file.
//!
//! A pattern is matched against a node's path below the mount root, with
//! `/` between segments (`keyboard0`, `pci/0000:00:03.0`). Every pattern is
//! anchored at the mount root: `keyboard*` names top-level nodes only.
//!
//! | syntax | matches |
//! | --- | --- |
//! | `*` | any run of characters within one segment, including none |
//! | `?` | exactly one character (not `/`) |
//! | `[abc]`, `[a-z]`, `[!a-z]` | one character from (or, with `!` or `^`, not from) the set |
//! | `\c` | the character `c` itself (`\*`, `\?`, `\[`, `\\`, `\#`) |
//! | `**` as a whole segment | any number of whole segments: zero or more in front of or between other segments (`**/keyboard*`, `pci/**/ide*`), one or more at the end (`pci/**` is everything inside `pci`, not `pci` itself) |
//! | `/` alone | the mount root itself, and nothing else |
//!
//! `**` inside a segment (`foo**`) is the same as `*`. A leading `/` is
//! allowed and changes nothing (`/null` is `null`); empty segments (`a//b`, a
//! trailing `/`) and `.` or `..` segments are errors.
//!
//! Patterns are compiled once; matching allocates nothing unless the pattern
//! has a `**` segment, and is linear in the path for patterns without one.

use std::fmt;

use thiserror::Error;

/// A pattern that is not valid: what was expected and where.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("pattern {pattern:?}: expected {expected}, found {found:?}")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// What the parser expected, in words (`"']' to close the character class"`).
    pub expected: &'static str,
    /// The part of the pattern where it went wrong.
    pub found: String,
}

/// A compiled path pattern. See the [module documentation](self) for the syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    segs: Vec<Seg>,
    deep: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// `**`: whole segments.
    Deep,
    /// A segment without any special character.
    Literal(String),
    /// A segment with `*`, `?` or a class.
    Glob(Vec<Tok>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Char(char),
    Star,
    AnyChar,
    Class { negated: bool, ranges: Vec<(char, char)> },
}

impl Tok {
    fn matches_char(&self, c: char) -> bool {
        match self {
            Tok::Char(p) => *p == c,
            Tok::AnyChar => true,
            Tok::Class { negated, ranges } => ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated,
            // A star is handled by the matcher, never asked about one char.
            Tok::Star => false,
        }
    }
}

impl Pattern {
    /// Compiles `text`. See the [module documentation](self) for the syntax.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let err = |expected: &'static str, found: &str| PatternError {
            pattern: text.to_owned(),
            expected,
            found: found.to_owned(),
        };
        if text == "/" {
            return Ok(Pattern { text: text.to_owned(), segs: Vec::new(), deep: false });
        }
        let body = text.strip_prefix('/').unwrap_or(text);
        if body.is_empty() {
            return Err(err("a path pattern", text));
        }
        let mut segs = Vec::new();
        for seg in body.split('/') {
            match seg {
                "" => return Err(err("a path segment between '/' characters", text)),
                "." | ".." => return Err(err("a name, not '.' or '..'", seg)),
                "**" => segs.push(Seg::Deep),
                _ => segs.push(compile_segment(seg).map_err(|e| err(e, seg))?),
            }
        }
        let deep = segs.iter().any(|s| matches!(s, Seg::Deep));
        Ok(Pattern { text: text.to_owned(), segs, deep })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern matches `path`, a path below the mount root.
    /// Leading, trailing and repeated `/` in `path` are ignored; the empty
    /// path (or `/`) is the mount root.
    pub fn matches(&self, path: &str) -> bool {
        let segments: Vec<&str> = split_path(path).collect();
        self.matches_segments(&segments)
    }

    /// Whether the pattern matches a path already split into segments (the
    /// mount root is the empty slice). Cheaper than [`matches`](Self::matches)
    /// when one path is tried against many patterns.
    pub fn matches_segments(&self, path: &[&str]) -> bool {
        if !self.deep {
            return self.segs.len() == path.len() && self.segs.iter().zip(path).all(|(s, p)| seg_matches(s, p));
        }
        // Dynamic programming from the end: `next[j]` says whether the
        // pattern segments after the current one match `path[j..]`.
        let n = path.len();
        let mut next = vec![false; n + 1];
        if let Some(last) = next.last_mut() {
            *last = true;
        }
        let mut cur = vec![false; n + 1];
        let count = self.segs.len();
        for (i, seg) in self.segs.iter().enumerate().rev() {
            match seg {
                Seg::Deep if i + 1 == count => {
                    // Trailing `**`: one or more segments, to the end.
                    for (j, c) in cur.iter_mut().enumerate() {
                        *c = j < n;
                    }
                }
                Seg::Deep => {
                    // Zero or more segments.
                    let mut after = false;
                    for j in (0..=n).rev() {
                        let v = next.get(j).copied().unwrap_or(false) || (j < n && after);
                        if let Some(c) = cur.get_mut(j) {
                            *c = v;
                        }
                        after = v;
                    }
                }
                Seg::Literal(_) | Seg::Glob(_) => {
                    for (j, c) in cur.iter_mut().enumerate() {
                        *c = match path.get(j) {
                            Some(p) => next.get(j + 1).copied().unwrap_or(false) && seg_matches(seg, p),
                            None => false,
                        };
                    }
                }
            }
            std::mem::swap(&mut cur, &mut next);
        }
        next.first().copied().unwrap_or(false)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Splits a tree path into its segments, ignoring empty ones.
pub(crate) fn split_path(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

fn compile_segment(seg: &str) -> Result<Seg, &'static str> {
    let mut toks = Vec::new();
    let mut special = false;
    let mut chars = seg.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e) => toks.push(Tok::Char(e)),
                None => return Err("a character after '\\'"),
            },
            '*' => {
                special = true;
                if toks.last() != Some(&Tok::Star) {
                    toks.push(Tok::Star);
                }
            }
            '?' => {
                special = true;
                toks.push(Tok::AnyChar);
            }
            '[' => {
                special = true;
                toks.push(compile_class(&mut chars)?);
            }
            c => toks.push(Tok::Char(c)),
        }
    }
    if special {
        return Ok(Seg::Glob(toks));
    }
    let literal = toks
        .into_iter()
        .map(|t| match t {
            Tok::Char(c) => Ok(c),
            Tok::Star | Tok::AnyChar | Tok::Class { .. } => Err("a literal name"),
        })
        .collect::<Result<String, _>>()?;
    Ok(Seg::Literal(literal))
}

/// Compiles a class after its `[`, consuming up to and including `]`.
fn compile_class(chars: &mut std::str::Chars<'_>) -> Result<Tok, &'static str> {
    const UNCLOSED: &str = "']' to close the character class";
    let mut negated = false;
    let mut ranges: Vec<(char, char)> = Vec::new();
    let mut first = true;
    let mut peek = chars.clone();
    if let Some('!' | '^') = peek.next() {
        negated = true;
        chars.next();
    }
    loop {
        let c = match chars.next() {
            None => return Err(UNCLOSED),
            Some(']') if !first => break,
            Some('\\') => chars.next().ok_or(UNCLOSED)?,
            Some(c) => c,
        };
        first = false;
        let mut ahead = chars.clone();
        if ahead.next() == Some('-') && !matches!(ahead.clone().next(), Some(']') | None) {
            chars.next();
            let hi = match chars.next() {
                Some('\\') => chars.next().ok_or(UNCLOSED)?,
                Some(h) => h,
                None => return Err(UNCLOSED),
            };
            if hi < c {
                return Err("a range in order, like [a-z]");
            }
            ranges.push((c, hi));
        } else {
            ranges.push((c, c));
        }
    }
    Ok(Tok::Class { negated, ranges })
}

fn seg_matches(seg: &Seg, name: &str) -> bool {
    match seg {
        Seg::Deep => true,
        Seg::Literal(l) => l == name,
        Seg::Glob(toks) => glob_matches(toks, name),
    }
}

/// Wildcard match within one segment: the classic single-backtrack
/// algorithm (a later `*` supersedes an earlier one), O(len * tokens) worst case.
fn glob_matches(toks: &[Tok], text: &str) -> bool {
    let mut t = 0;
    let mut s = 0;
    // Token index after the last star, and the text position it resumes at.
    let mut star: Option<(usize, usize)> = None;
    loop {
        let next_char = text.get(s..).and_then(|r| r.chars().next());
        match toks.get(t) {
            Some(Tok::Star) => {
                star = Some((t + 1, s));
                t += 1;
                continue;
            }
            Some(tok) => {
                if let Some(c) = next_char {
                    if tok.matches_char(c) {
                        t += 1;
                        s += c.len_utf8();
                        continue;
                    }
                }
            }
            None if next_char.is_none() => return true,
            None => {}
        }
        // Mismatch: let the last star swallow one more character.
        let Some((after_star, resume)) = star else {
            return false;
        };
        let Some(c) = text.get(resume..).and_then(|r| r.chars().next()) else {
            return false;
        };
        let resume = resume + c.len_utf8();
        star = Some((after_star, resume));
        t = after_star;
        s = resume;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str) -> bool {
        Pattern::parse(p).unwrap().matches(path)
    }

    #[test]
    fn star_stays_within_one_segment() {
        assert!(m("keyboard*", "keyboard0"));
        assert!(m("keyboard*", "keyboard"));
        assert!(!m("keyboard*", "usb/keyboard0"));
        assert!(!m("*", "pci/x"));
        assert!(m("*", "pci"));
        assert!(m("pci/*", "pci/0000:00:03.0"));
        assert!(!m("pci/*", "pci"));
        assert!(m("*board*", "keyboard0"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYYcd"));
        assert!(m("foo**", "foobar"));
        assert!(!m("foo**", "foo/bar"));
    }

    #[test]
    fn question_mark_is_one_character() {
        assert!(m("ram?", "ram0"));
        assert!(!m("ram?", "ram"));
        assert!(!m("ram?", "ram10"));
        assert!(m("r?m0", "räm0"));
    }

    #[test]
    fn classes_and_escapes() {
        assert!(m("ttyS[0-3]", "ttyS2"));
        assert!(!m("ttyS[0-3]", "ttyS4"));
        assert!(m("ttyS[!0-3]", "ttyS4"));
        assert!(m("ttyS[^0-3]", "ttyS9"));
        assert!(m("x[]]", "x]"));
        assert!(m("x[a-]", "x-"));
        assert!(m(r"a\*", "a*"));
        assert!(!m(r"a\*", "ab"));
        assert!(m(r"\#x", "#x"));
    }

    #[test]
    fn double_star_spans_segments() {
        assert!(m("pci/**", "pci/a"));
        assert!(m("pci/**", "pci/a/b/c"));
        assert!(!m("pci/**", "pci"), "trailing ** is everything inside, not the bus");
        assert!(!m("pci/**", "pcie/a"));
        assert!(m("**/keyboard*", "keyboard0"), "leading ** may be empty");
        assert!(m("**/keyboard*", "usb/hub/keyboard1"));
        assert!(m("pci/**/ide*", "pci/ide0"));
        assert!(m("pci/**/ide*", "pci/a/b/ide0"));
        assert!(!m("pci/**/ide*", "pci/a/b/ide0/x"));
        assert!(m("**", "null"));
        assert!(m("**", "a/b/c"));
        assert!(!m("**", ""), "the root is matched only by /");
        assert!(m("**/**/x", "x"));
        assert!(m("a/**/b/**/c", "a/1/b/2/3/c"));
        assert!(!m("a/**/b/**/c", "a/1/c"));
    }

    #[test]
    fn root_and_slashes() {
        assert!(m("/", ""));
        assert!(m("/", "/"));
        assert!(!m("/", "null"));
        assert!(m("/null", "null"));
        assert!(m("null", "/null/"));
        assert!(m("pci/x", "pci//x"));
    }

    #[test]
    fn bad_patterns_say_what_was_expected() {
        let cases: &[(&str, &str)] = &[
            ("", "a path pattern"),
            ("a//b", "a path segment between '/' characters"),
            ("pci/", "a path segment between '/' characters"),
            ("a/../b", "a name, not '.' or '..'"),
            ("./a", "a name, not '.' or '..'"),
            ("tty[0-3", "']' to close the character class"),
            ("tty[", "']' to close the character class"),
            ("tty[]", "']' to close the character class"),
            ("tty[9-0]", "a range in order, like [a-z]"),
            ("a\\", "a character after '\\'"),
        ];
        for (p, expected) in cases {
            let e = Pattern::parse(p).unwrap_err();
            assert_eq!(e.expected, *expected, "pattern {p:?}");
        }
    }

    #[test]
    fn many_double_stars_stay_cheap() {
        let p = Pattern::parse("**/**/**/**/**/**/**/**/x").unwrap();
        let long: Vec<&str> = std::iter::repeat_n("a", 200).collect();
        assert!(!p.matches_segments(&long));
        let p = Pattern::parse("*a*a*a*a*a*a*a*a*b").unwrap();
        assert!(!p.matches(&"a".repeat(500)));
    }
}

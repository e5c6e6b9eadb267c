//! A validating JSON scanner for the few fields a profile reads: it finds an
//! object's wanted keys and the raw text of their values in one pass over
//! the bytes, skipping every other value without building it.
//!
//! It answers only when it is sure: `None` whenever the text is not JSON,
//! or holds what it leaves to `serde_json` (a key with an escape, nesting
//! deeper than [`MAX_DEPTH`]). Callers then read the text with
//! `serde_json`, which gives the same fields or the error to report; so
//! this module never decides what an event means, only how fast the common
//! event is read. Whatever it accepts, `serde_json` accepts with the same
//! values (the property tests in `profile` hold it to that): the grammar
//! checked is RFC 8259's, as `serde_json` skips values (`IgnoredAny`):
//! strings without raw control characters and with valid escapes (a `\u`
//! escape's code point is not checked, as `serde_json` does not while
//! skipping), numbers by their syntax, whitespace of the four JSON kinds.

/// The deepest nesting of arrays and objects the scanner follows; deeper
/// text is left to `serde_json`.
pub const MAX_DEPTH: u32 = 64;

/// One wanted key of an object: the raw text of its first non-null value
/// (a `null` counts as absent), and how many times the key appears, null
/// or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slot<'a> {
    pub value: Option<&'a str>,
    pub occurrences: u32,
}

/// Scans the JSON object `text` (surrounded by any JSON whitespace) for
/// the keys in `wanted`: one slot per wanted key, in order. `None` when
/// the text is not an object this scanner vouches for (see the module).
pub fn object<'a, K: AsRef<str>>(text: &'a str, wanted: &[K]) -> Option<Vec<Slot<'a>>> {
    scan_object(text, wanted, false)
}

/// [`object`] for text known to be JSON (an event accepted already): the
/// scan stops as soon as every wanted key has a non-null value, so the
/// rest of the text is neither read nor checked, and the slots' counts
/// stop there too. On JSON its values are [`object`]'s.
pub fn object_prefix<'a, K: AsRef<str>>(text: &'a str, wanted: &[K]) -> Option<Vec<Slot<'a>>> {
    scan_object(text, wanted, true)
}

fn scan_object<'a, K: AsRef<str>>(
    text: &'a str,
    wanted: &[K],
    stop_when_found: bool,
) -> Option<Vec<Slot<'a>>> {
    let mut scanner = Scanner::new(text);
    scanner.whitespace();
    scanner.expect(b'{')?;
    let mut slots = vec![Slot::default(); wanted.len()];
    scanner.whitespace();
    if scanner.peek() == Some(b'}') {
        scanner.at += 1;
    } else {
        loop {
            scanner.whitespace();
            scanner.expect(b'"')?;
            let key_start = scanner.at;
            if scanner.string()? {
                // An escaped key is compared once decoded: serde_json's job.
                return None;
            }
            let key = &text[key_start..scanner.at - 1];
            scanner.whitespace();
            scanner.expect(b':')?;
            scanner.whitespace();
            let value_start = scanner.at;
            scanner.value()?;
            if let Some(index) = wanted.iter().position(|name| name.as_ref() == key) {
                let value = &text[value_start..scanner.at];
                let slot = &mut slots[index];
                slot.occurrences = slot.occurrences.saturating_add(1);
                if slot.value.is_none() && value != "null" {
                    slot.value = Some(value);
                    if stop_when_found && slots.iter().all(|slot| slot.value.is_some()) {
                        return Some(slots);
                    }
                }
            }
            scanner.whitespace();
            match scanner.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
    }
    scanner.end()?;
    Some(slots)
}

/// The raw text of element `index` of the JSON array `text`, `Some(None)`
/// when the array is shorter; `None` as for [`object`].
pub fn array_element(text: &str, index: usize) -> Option<Option<&str>> {
    let mut scanner = Scanner::new(text);
    scanner.whitespace();
    scanner.expect(b'[')?;
    let mut found = None;
    scanner.whitespace();
    if scanner.peek() == Some(b']') {
        scanner.at += 1;
    } else {
        let mut position = 0usize;
        loop {
            scanner.whitespace();
            let value_start = scanner.at;
            scanner.value()?;
            if position == index {
                found = Some(&text[value_start..scanner.at]);
            }
            position += 1;
            scanner.whitespace();
            match scanner.next()? {
                b',' => continue,
                b']' => break,
                _ => return None,
            }
        }
    }
    scanner.end()?;
    Some(found)
}

/// Bytes of eight copies of one byte, for the string scan.
const ONES: u64 = u64::MAX / 255;
const HIGH_BITS: u64 = ONES << 7;

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            bytes: text.as_bytes(),
            at: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    /// Only whitespace is left.
    fn end(&mut self) -> Option<()> {
        self.whitespace();
        (self.at == self.bytes.len()).then_some(())
    }

    /// Skips the rest of a string whose opening quote was read, past its
    /// closing quote; whether it held an escape.
    fn string(&mut self) -> Option<bool> {
        let mut escaped = false;
        loop {
            // Eight bytes at a time to the first quote, backslash or
            // control character (the lowest flagged byte is exact).
            while let Some(chunk) = self.bytes.get(self.at..self.at + 8) {
                let chars = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
                let control = chars.wrapping_sub(ONES * 0x20) & !chars;
                let quote = chars ^ (ONES * u64::from(b'"'));
                let quote = quote.wrapping_sub(ONES) & !quote;
                let backslash = chars ^ (ONES * u64::from(b'\\'));
                let backslash = backslash.wrapping_sub(ONES) & !backslash;
                let found = (control | quote | backslash) & HIGH_BITS;
                if found != 0 {
                    self.at += found.trailing_zeros() as usize / 8;
                    break;
                }
                self.at += 8;
            }
            match self.next()? {
                b'"' => return Some(escaped),
                b'\\' => {
                    escaped = true;
                    match self.next()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let hex = self.bytes.get(self.at..self.at + 4)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.at += 4;
                        }
                        _ => return None,
                    }
                }
                0x00..=0x1f => return None,
                // Fewer than eight bytes were left: one at a time.
                _ => {}
            }
        }
    }

    /// Skips a number's digits, as JSON's grammar has them.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let found = self.bytes.get(self.at..self.at + word.len())?;
        (found == word).then_some(())?;
        self.at += word.len();
        Some(())
    }

    /// Skips one value, at its first byte, nested arrays and objects
    /// matched by a stack of bits (one a level: set for an object).
    fn value(&mut self) -> Option<()> {
        let mut stack = 0u64;
        let mut depth = 0u32;
        loop {
            // A value's start.
            self.whitespace();
            match self.next()? {
                open @ (b'{' | b'[') => {
                    self.whitespace();
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.at += 1;
                    } else {
                        if depth == MAX_DEPTH {
                            return None;
                        }
                        stack = stack << 1 | u64::from(open == b'{');
                        depth += 1;
                        if open == b'{' {
                            self.key()?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b'-' | b'0'..=b'9' => {
                    self.at -= 1;
                    self.number()?;
                }
                b't' => self.literal(b"rue")?,
                b'f' => self.literal(b"alse")?,
                b'n' => self.literal(b"ull")?,
                _ => return None,
            }
            // After a value: close what it ended, up to the next value.
            loop {
                if depth == 0 {
                    return Some(());
                }
                let in_object = stack & 1 == 1;
                self.whitespace();
                match self.next()? {
                    b',' => {
                        if in_object {
                            self.key()?;
                        }
                        break;
                    }
                    b'}' if in_object => {}
                    b']' if !in_object => {}
                    _ => return None,
                }
                stack >>= 1;
                depth -= 1;
            }
        }
    }

    /// Skips an object's key and its colon.
    fn key(&mut self) -> Option<()> {
        self.whitespace();
        self.expect(b'"')?;
        self.string()?;
        self.whitespace();
        self.expect(b':')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WANTED: [&str; 1] = ["a"];

    #[test]
    fn plain_objects_are_scanned_for_the_first_non_null_value_and_counted() {
        let slots = |text| object(text, &WANTED).map(|slots| slots[0]);
        let one = |value, occurrences| Some(Slot { value, occurrences });
        assert_eq!(slots(r#"{"a":1}"#), one(Some("1"), 1));
        assert_eq!(
            slots(" {\"b\" : [1, {\"c\": [true, false, null]}, \"\\\"\"], \"a\" : \"x\" }\n"),
            one(Some("\"x\""), 1)
        );
        assert_eq!(slots("{}"), one(None, 0));
        assert_eq!(
            slots(r#"{"a":null,"a":-0.5e-3,"a":[],"b":{}}"#),
            one(Some("-0.5e-3"), 3)
        );
        assert_eq!(slots(r#"{"a":{"a":2}}"#), one(Some(r#"{"a":2}"#), 1));
    }

    #[test]
    fn what_the_scanner_does_not_vouch_for_is_none() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(65), "]".repeat(65));
        let deepest = format!("{{\"a\":{}1{}}}", "[".repeat(64), "]".repeat(64));
        assert!(object(&deepest, &WANTED).is_some());
        for text in [
            // Escaped keys, and nesting deeper than MAX_DEPTH.
            r#"{"\u0061":1}"#,
            deep.as_str(),
            // Not JSON, or not an object.
            r#"{"a":1,}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":"x\q"}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":[1}"#,
            r#"{"a":{"b"}}"#,
            r#"{"a":{"b":1]}"#,
            r#"{"a":tru}"#,
            r#"{"a":1} x"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"unterminated}"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            r#"[{"a":1}]"#,
            "",
        ] {
            assert!(object(text, &WANTED).is_none(), "{text}");
        }
    }

    #[test]
    fn a_prefix_scan_stops_at_the_last_wanted_value() {
        let wanted = ["a", "b"];
        let text = r#"{"a":null,"b":1,"a":"x","c":unchecked"#;
        assert!(object(text, &wanted).is_none());
        let slots = object_prefix(text, &wanted).unwrap();
        assert_eq!(slots[0].value, Some(r#""x""#));
        assert_eq!(slots[1].value, Some("1"));
        // Before every value is found, the text is checked as by `object`.
        assert!(object_prefix(r#"{"a":1,,"b":2}"#, &wanted).is_none());
    }

    #[test]
    fn array_elements_are_found_by_position() {
        assert_eq!(
            array_element(r#"[1, "x" ,{"y":[2]}]"#, 1),
            Some(Some(r#""x""#))
        );
        assert_eq!(
            array_element(r#" [1,{"y":[2]}] "#, 1),
            Some(Some(r#"{"y":[2]}"#))
        );
        assert_eq!(array_element("[1]", 1), Some(None));
        assert_eq!(array_element("[]", 0), Some(None));
        for text in ["[1,]", "[1", "[1] 2", "{}", "[01]"] {
            assert_eq!(array_element(text, 0), None, "{text}");
        }
    }
}

//! The echoed-credential scan: the guest never reads its token, even when an
//! upstream echoes it back.
//! Every response to a credentialed request is scanned (headers, the body as
//! it streams, trailers) for the `authorization` value the host sent, the
//! token alone, and their encodings (base64 and base64url at each of the
//! three alignments, percent-encoded, JSON-escaped); each occurrence is
//! overwritten by a marker of the same length before the guest can read it.
//! Tool output, errors and log lines are scanned for the same patterns
//! before they leave the host. One multi-pattern automaton (`aho-corasick`)
//! per credential, cached; the body is never held whole: a tail of the
//! longest pattern minus one byte is carried across chunks.
//!
//! The patterns share much of their text, so a few short anchors (every
//! pattern holds one) are searched first, with a prefilter that stays fast
//! on any body; the whole automaton runs only around an anchor's hits.

mod stream;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use stream::StreamRedactor;

/// Patterns shorter than this are not searched: too likely by chance.
const MIN_PATTERN: usize = 8;
/// An anchor's length: every pattern is at least as long.
const ANCHOR: usize = MIN_PATTERN;
/// Where in each pattern anchors are chosen from: its start, which holds
/// what it shares with the others (a token, its unescaped run), at a cost
/// bounded for tokens of any length.
const ANCHOR_WINDOWS: usize = 64;
/// What an occurrence is overwritten with, repeated to its length: letters,
/// so a JSON string, a header value or a base64 run stays well formed.
const MARKER: &[u8] = b"REDACTED";
/// What RFC 3986 encoders escape: all but the unreserved characters.
const UNRESERVED_KEPT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Credentials whose automata are kept; past it the cache starts over.
const CACHED: usize = 4096;
/// Bytes the kept automata may hold together; past it the cache starts over.
const CACHED_BYTES: usize = 32 << 20;

/// How a token appeared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// As sent (the header value, or the token alone).
    Raw,
    /// Standard base64, at any alignment.
    Base64,
    /// URL-safe base64, at any alignment.
    Base64Url,
    /// Percent-encoded.
    Percent,
    /// Escaped inside a JSON string.
    Json,
}

const ENCODINGS: [Encoding; 5] = [
    Encoding::Raw,
    Encoding::Base64,
    Encoding::Base64Url,
    Encoding::Percent,
    Encoding::Json,
];

/// Occurrences found, by encoding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Found([u64; 5]);

impl Found {
    /// No occurrence.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|n| *n == 0)
    }

    /// Occurrences in all encodings.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `count` occurrences in `encoding`.
    pub fn of(encoding: Encoding, count: u64) -> Found {
        let mut found = Found::default();
        found.0[ENCODINGS.iter().position(|e| *e == encoding).unwrap_or(0)] = count;
        found
    }

    /// The encodings found, with how often.
    pub fn by_encoding(self) -> impl Iterator<Item = (Encoding, u64)> {
        ENCODINGS.into_iter().zip(self.0).filter(|(_, n)| *n > 0)
    }
}

/// `len` bytes of the marker an occurrence is overwritten with.
pub fn marker(len: usize) -> Vec<u8> {
    MARKER.iter().copied().cycle().take(len).collect()
}

/// Every form of one call's credentials, compiled into one automaton.
pub struct Redactor {
    search: AhoCorasick,
    /// Substrings of which every pattern holds one: found first, so that
    /// `search` runs only around them.
    anchors: AhoCorasick,
    encodings: Vec<Encoding>,
    longest: usize,
    /// The raw forms, searched without regard to case (header names, which
    /// HTTP lowercases); built when first needed.
    raw: Vec<Vec<u8>>,
    folded: std::sync::OnceLock<Option<AhoCorasick>>,
}

impl std::fmt::Debug for Redactor {
    // The patterns are the secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.encodings.len())
            .finish()
    }
}

/// The bytes of the base64 of `value` (after `skip` bytes of anything)
/// that depend on `value` alone.
fn base64_core(engine: &base64::engine::GeneralPurpose, value: &[u8], skip: usize) -> Vec<u8> {
    let mut input = vec![0u8; skip];
    input.extend_from_slice(value);
    let encoded = engine.encode(&input).into_bytes();
    // Character i covers bits [6i, 6i + 6) of the input.
    let first = (8 * skip).div_ceil(6);
    let end = ((8 * (skip + value.len())) / 6).min(encoded.len());
    encoded.get(first..end).map(<[u8]>::to_vec).unwrap_or_default()
}

/// `text` with the hex digits of each escape (`%2F`, `\u002F`: `marker`
/// and then `digits` hex digits) in lower case, and nothing else changed.
fn lower_hex_escapes(text: &str, marker: &[u8], digits: usize) -> Vec<u8> {
    let mut out = text.as_bytes().to_vec();
    let mut i = 0;
    while i < out.len() {
        if out[i..].starts_with(marker) && i + marker.len() + digits <= out.len() {
            let start = i + marker.len();
            for b in &mut out[start..start + digits] {
                b.make_ascii_lowercase();
            }
            i = start + digits;
        } else {
            i += 1;
        }
    }
    out
}

/// How JSON encoders write `text` inside a string: as it is, `/` as `\/`,
/// and `\uXXXX` escapes (of everything not alphanumeric, or of every
/// character), with upper- and lower-case hex.
fn json_forms(text: &str) -> Vec<Vec<u8>> {
    let plain = serde_json::to_string(text).unwrap_or_default();
    let plain = plain.trim_matches('"');
    let escape = |all: bool| -> String {
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() && !all {
                    c.to_string()
                } else {
                    let mut units = [0u16; 2];
                    c.encode_utf16(&mut units)
                        .iter()
                        .map(|u| format!("\\u{u:04X}"))
                        .collect()
                }
            })
            .collect()
    };
    let mut forms = vec![
        plain.as_bytes().to_vec(),
        plain.replace('/', "\\/").into_bytes(),
    ];
    for all in [false, true] {
        let upper = escape(all);
        forms.push(lower_hex_escapes(&upper, b"\\u", 4));
        forms.push(upper.into_bytes());
    }
    forms
}

/// Anchors of `ANCHOR` bytes such that every pattern holds one, and few of
/// them: each in turn the substring most patterns not yet covered hold
/// (greedy set cover), the first in byte order on a tie, so a build is
/// repeatable.
fn anchors(patterns: &[&[u8]]) -> Vec<Vec<u8>> {
    /// A substring and a pattern holding it.
    type Gram = ([u8; ANCHOR], usize);
    let mut grams: Vec<Gram> = patterns
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            p.windows(ANCHOR)
                .take(ANCHOR_WINDOWS)
                .map(move |g| (g.try_into().expect("windows of ANCHOR bytes"), i))
        })
        .collect();
    grams.sort_unstable();
    grams.dedup();
    let holders: Vec<&[Gram]> = grams.chunk_by(|a, b| a.0 == b.0).collect();
    let mut covered = vec![false; patterns.len()];
    let mut chosen = Vec::new();
    loop {
        let mut best: Option<(usize, &[Gram])> = None;
        for holder in &holders {
            let n = holder.iter().filter(|(_, i)| !covered[*i]).count();
            if n > best.map_or(0, |(most, _)| most) {
                best = Some((n, holder));
            }
        }
        let Some((_, holder)) = best else {
            return chosen;
        };
        for (_, i) in holder {
            covered[*i] = true;
        }
        chosen.push(holder[0].0.to_vec());
    }
}

impl Redactor {
    /// The patterns of each `authorization` value in `values` (a scheme and
    /// the token, or the token alone).
    pub fn new(values: &[&[u8]]) -> Redactor {
        let mut patterns: Vec<(Vec<u8>, Encoding)> = Vec::new();
        for value in values {
            let token = match value.iter().position(|b| *b == b' ') {
                Some(space) => value[space + 1..].trim_ascii(),
                None => value,
            };
            for form in [*value, token] {
                patterns.push((form.to_vec(), Encoding::Raw));
                for skip in 0..3 {
                    patterns.push((
                        base64_core(
                            &base64::engine::general_purpose::STANDARD_NO_PAD,
                            form,
                            skip,
                        ),
                        Encoding::Base64,
                    ));
                    patterns.push((
                        base64_core(
                            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                            form,
                            skip,
                        ),
                        Encoding::Base64Url,
                    ));
                }
                // Encoders that keep the unreserved characters, and those that
                // do not; each with upper- and lower-case hex (the token's own
                // letters as they are), and all in lower case (services that
                // fold URLs).
                for set in [UNRESERVED_KEPT, percent_encoding::NON_ALPHANUMERIC] {
                    let percent = percent_encoding::percent_encode(form, set).to_string();
                    patterns.push((lower_hex_escapes(&percent, b"%", 2), Encoding::Percent));
                    patterns.push((percent.to_lowercase().into_bytes(), Encoding::Percent));
                    patterns.push((percent.into_bytes(), Encoding::Percent));
                }
                if let Ok(text) = std::str::from_utf8(form) {
                    for pattern in json_forms(text) {
                        patterns.push((pattern, Encoding::Json));
                    }
                }
            }
        }
        // The raw forms first: a pattern equal to its raw form counts as raw.
        // An empty credential has no pattern (the broker refuses one).
        let mut seen = std::collections::HashSet::new();
        patterns.retain(|(p, _)| p.len() >= MIN_PATTERN && seen.insert(p.clone()));
        let longest = patterns.iter().map(|(p, _)| p.len()).max().unwrap_or(1);
        // A contiguous NFA: built in microseconds where a DFA takes a
        // fraction of a millisecond, and the prefilter does most searching.
        let search = AhoCorasick::builder()
            .kind(Some(AhoCorasickKind::ContiguousNFA))
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns.iter().map(|(p, _)| p))
            .expect("patterns of bounded size build");
        let raw = patterns
            .iter()
            .filter(|(_, e)| *e == Encoding::Raw)
            .map(|(p, _)| p.clone())
            .collect();
        let picked = anchors(&patterns.iter().map(|(p, _)| &p[..]).collect::<Vec<_>>());
        let anchors = AhoCorasick::builder()
            .kind(Some(AhoCorasickKind::ContiguousNFA))
            .match_kind(MatchKind::LeftmostFirst)
            .build(picked)
            .expect("anchors of bounded size build");
        Redactor {
            search,
            anchors,
            encodings: patterns.into_iter().map(|(_, e)| e).collect(),
            longest,
            raw,
            folded: std::sync::OnceLock::new(),
        }
    }

    /// Roughly what this redactor holds in memory, in bytes.
    pub fn memory_usage(&self) -> usize {
        self.search.memory_usage()
            + self.anchors.memory_usage()
            + self.encodings.len()
            + self.raw.iter().map(Vec::len).sum::<usize>()
    }

    /// Whether `bytes` holds a raw form, in any case.
    pub fn finds_in_any_case(&self, bytes: &[u8]) -> bool {
        self.folded
            .get_or_init(|| {
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(&self.raw)
                    .ok()
            })
            .as_ref()
            .is_some_and(|a| a.is_match(bytes))
    }

    /// Where in `bytes` a pattern may lie: around each anchor found, merged
    /// where they meet. A pattern holding an anchor found at `h` lies within
    /// `longest` bytes of it; one holding an anchor the search stepped over
    /// (it overlapped the one found) ends within `ANCHOR` more.
    fn regions(&self, bytes: &[u8]) -> Vec<Range<usize>> {
        let mut regions: Vec<Range<usize>> = Vec::new();
        for hit in self.anchors.find_iter(bytes) {
            let start = hit.start().saturating_sub(self.longest);
            let end = (hit.start() + self.longest + ANCHOR).min(bytes.len());
            match regions.last_mut() {
                Some(last) if start <= last.end => last.end = last.end.max(end),
                _ => regions.push(start..end),
            }
        }
        regions
    }

    /// Every occurrence in `bytes`, leftmost-longest, exactly as the whole
    /// automaton finds them over all of `bytes`: each lies within one region.
    pub(crate) fn matches<'a>(
        &'a self,
        bytes: &'a [u8],
    ) -> impl Iterator<Item = aho_corasick::Match> + 'a {
        self.regions(bytes).into_iter().flat_map(move |r| {
            self.search
                .find_iter(&bytes[r.clone()])
                .map(move |m| m.offset(r.start))
        })
    }

    /// Overwrite every occurrence in `buf`; what was found.
    pub fn redact(&self, buf: &mut [u8]) -> Found {
        let mut found = Found::default();
        for region in self.regions(buf) {
            let mut at = region.start;
            while let Some(m) = self.search.find(&buf[at..region.end]) {
                let (start, end) = (at + m.start(), at + m.end());
                for (i, b) in buf[start..end].iter_mut().enumerate() {
                    *b = MARKER[i % MARKER.len()];
                }
                let encoding = self.encodings[m.pattern().as_usize()];
                found.0[ENCODINGS.iter().position(|e| *e == encoding).unwrap_or(0)] += 1;
                at = end;
            }
        }
        found
    }

    /// Whether `bytes` holds any pattern.
    pub fn finds(&self, bytes: &[u8]) -> bool {
        self.regions(bytes)
            .into_iter()
            .any(|r| self.search.is_match(&bytes[r]))
    }

    /// The longest pattern's length: what a stream must carry across chunks.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// `text` with every occurrence overwritten (the marker is ASCII, as
    /// every pattern is, so the text stays UTF-8); what was found.
    pub fn redact_string(&self, text: &mut String) -> Found {
        if !self.finds(text.as_bytes()) {
            return Found::default();
        }
        let mut bytes = std::mem::take(text).into_bytes();
        let found = self.redact(&mut bytes);
        *text = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        found
    }
}

/// Automata by credential (its sha256): a token is used by many calls.
pub struct RedactorCache {
    by_digest: Mutex<Cached>,
    max_bytes: usize,
}

impl Default for RedactorCache {
    fn default() -> RedactorCache {
        RedactorCache {
            by_digest: Mutex::default(),
            max_bytes: CACHED_BYTES,
        }
    }
}

#[derive(Default)]
struct Cached {
    redactors: HashMap<[u8; 32], Arc<Redactor>>,
    bytes: usize,
}

impl RedactorCache {
    /// The automaton for `values`, built once.
    pub fn get(&self, values: &[&[u8]]) -> Arc<Redactor> {
        let mut digest = Sha256::new();
        for v in values {
            digest.update((v.len() as u64).to_le_bytes());
            digest.update(v);
        }
        let key: [u8; 32] = digest.finalize().into();
        if let Some(r) = self
            .by_digest
            .lock()
            .ok()
            .and_then(|m| m.redactors.get(&key).cloned())
        {
            return r;
        }
        let built = Arc::new(Redactor::new(values));
        let size = built.memory_usage();
        if let Ok(mut m) = self.by_digest.lock() {
            // Bounded by what the automata hold (long tokens make large ones), and
            // by count; one larger than the whole bound is used and not kept.
            if size > self.max_bytes {
                return built;
            }
            if m.redactors.len() >= CACHED || m.bytes + size > self.max_bytes {
                m.redactors.clear();
                m.bytes = 0;
            }
            if m.redactors.insert(key, built.clone()).is_none() {
                m.bytes += size;
            }
        }
        built
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "gho_16C7e42F292c6912E7710c838347Ae178B4a";

    fn redacted(text: &str) -> (String, Found) {
        let r = Redactor::new(&[format!("Bearer {TOKEN}").as_bytes()]);
        let mut s = text.to_string();
        let found = r.redact_string(&mut s);
        (s, found)
    }

    #[test]
    fn every_encoding_is_found_and_overwritten_in_place() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let forms = [
            (TOKEN.to_string(), Encoding::Raw),
            (format!("Bearer {TOKEN}"), Encoding::Raw),
            (
                STANDARD.encode(format!("Authorization: Bearer {TOKEN}")),
                Encoding::Base64,
            ),
            (STANDARD.encode(format!("x{TOKEN}")), Encoding::Base64),
            (STANDARD.encode(format!("xy{TOKEN}yx")), Encoding::Base64),
            (
                URL_SAFE_NO_PAD.encode(format!("{{\"t\":\"{TOKEN}\"}}")),
                Encoding::Base64Url,
            ),
        ];
        for (form, encoding) in forms {
            let text = format!("before {form} after");
            let (out, found) = redacted(&text);
            assert_eq!(out.len(), text.len(), "{form}");
            assert!(
                !out.contains(TOKEN) && out.contains("REDACTED"),
                "{form}: {out}"
            );
            // Where both alphabets give the same text, it counts as standard base64.
            let index = |e: Encoding| ENCODINGS.iter().position(|x| *x == e).unwrap();
            let also = if encoding == Encoding::Base64Url {
                found.0[index(Encoding::Base64)]
            } else {
                0
            };
            assert!(found.0[index(encoding)] + also > 0, "{form}: {found:?}");
        }
        // A token with characters that encoders escape.
        let google = "ya29.a0AfB_byC+x/9kQ==Zz";
        let r = Redactor::new(&[format!("Bearer {google}").as_bytes()]);
        for set in [UNRESERVED_KEPT, percent_encoding::NON_ALPHANUMERIC] {
            let encoded = percent_encoding::utf8_percent_encode(google, set).to_string();
            let hex_lowered =
                String::from_utf8(lower_hex_escapes(&encoded, b"%", 2)).unwrap();
            for form in [encoded.clone(), hex_lowered, encoded.to_lowercase()] {
                let mut s = format!("?token={form}&x=1");
                let found = r.redact_string(&mut s);
                assert_eq!(found.0[3], 1, "{form}: {s}");
            }
        }
        let slashed = "ab/cd\"ef\\gh-token-value";
        let r = Redactor::new(&[format!("Bearer {slashed}").as_bytes()]);
        for escaped in [
            r#"ab/cd\"ef\\gh-token-value"#,
            r#"ab\/cd\"ef\\gh-token-value"#,
        ] {
            let mut s = format!("{{\"echo\":\"{escaped}\"}}");
            let found = r.redact_string(&mut s);
            assert_eq!(found.0[4], 1, "{escaped}: {s}");
            assert!(serde_json::from_str::<serde_json::Value>(&s).is_ok(), "{s}");
        }
    }

    /// What the whole automaton finds over the whole buffer, without anchors.
    fn reference(r: &Redactor, buf: &mut [u8]) -> Found {
        let mut found = Found::default();
        let mut at = 0;
        while let Some(m) = r.search.find(&buf[at..]) {
            let (start, end) = (at + m.start(), at + m.end());
            for (i, b) in buf[start..end].iter_mut().enumerate() {
                *b = MARKER[i % MARKER.len()];
            }
            let encoding = r.encodings[m.pattern().as_usize()];
            found.0[ENCODINGS.iter().position(|e| *e == encoding).unwrap()] += 1;
            at = end;
        }
        found
    }

    #[test]
    fn searching_around_anchors_finds_what_the_whole_automaton_finds() {
        let google = "ya29.a0AfB_byC+x/9kQ3mZ7Lr0pW2vN8sT4uY6hJ1eD5fG==";
        for value in [format!("Bearer {TOKEN}"), format!("Bearer {google}"), "x".repeat(300)] {
            let r = Redactor::new(&[value.as_bytes()]);
            let forms = reference_patterns(&value);
            eprintln!("{} anchors for {} patterns", r.anchors.patterns_len(), r.encodings.len());
            assert!(
                r.anchors.patterns_len() <= r.encodings.len().div_ceil(2),
                "few anchors: {} for {} patterns",
                r.anchors.patterns_len(),
                r.encodings.len()
            );
            let alphabet: Vec<u8> = b"ABCabc0123+/=_-.%\\\" {}:xyu".to_vec();
            let mut state = 0x2545F4914F6CDD1Du64;
            let mut next = |n: u64| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % n) as usize
            };
            for _ in 0..300 {
                let mut buf: Vec<u8> = (0..next(600) + 1).map(|_| alphabet[next(alphabet.len() as u64)]).collect();
                // Whole patterns, cut ones and overlapping ones, anywhere.
                for _ in 0..next(4) {
                    let p = &forms[next(forms.len() as u64)];
                    let cut = if next(3) == 0 { next(p.len() as u64) + 1 } else { p.len() };
                    let at = next(buf.len() as u64 + 1);
                    buf.splice(at..at, p[..cut].iter().copied());
                }
                let mut expected = buf.clone();
                let want = reference(&r, &mut expected);
                assert_eq!(r.finds(&buf), !want.is_empty());
                let mut got = buf.clone();
                assert_eq!(r.redact(&mut got), want);
                assert_eq!(got, expected);
            }
        }
    }

    /// The forms a redactor for `value` searches (as `new` builds them).
    fn reference_patterns(value: &str) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let token = value.split_once(' ').map_or(value, |(_, t)| t);
        for form in [value, token] {
            out.push(form.as_bytes().to_vec());
            for skip in 0..3 {
                for engine in [
                    &base64::engine::general_purpose::STANDARD_NO_PAD,
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                ] {
                    out.push(base64_core(engine, form.as_bytes(), skip));
                }
            }
            for set in [UNRESERVED_KEPT, percent_encoding::NON_ALPHANUMERIC] {
                let percent = percent_encoding::percent_encode(form.as_bytes(), set).to_string();
                out.push(lower_hex_escapes(&percent, b"%", 2));
                out.push(percent.to_lowercase().into_bytes());
                out.push(percent.into_bytes());
            }
            out.extend(json_forms(form));
        }
        out.retain(|p| p.len() >= MIN_PATTERN);
        out
    }

    #[test]
    fn an_empty_or_blank_credential_builds_and_finds_nothing() {
        for value in [&b""[..], b"   ", b"Bearer ", b"Bearer    "] {
            let r = Redactor::new(&[value]);
            assert!(!r.finds(b"anything at all"));
        }
    }

    #[test]
    fn lower_case_escapes_keep_the_tokens_own_letters() {
        let r = Redactor::new(&[TOKEN.as_bytes()]);
        let percent =
            percent_encoding::utf8_percent_encode(TOKEN, percent_encoding::NON_ALPHANUMERIC).to_string();
        let lower = String::from_utf8(lower_hex_escapes(&percent, b"%", 2)).unwrap();
        assert_ne!(lower, percent.to_lowercase(), "the letters stay as they are");
        for form in [
            lower,
            TOKEN.chars().map(|c| format!("\\u{:04X}", c as u32)).collect(),
            TOKEN.chars().map(|c| format!("\\u{:04x}", c as u32)).collect(),
        ] {
            assert!(r.finds(form.as_bytes()), "{form}");
        }
        assert!(r.finds_in_any_case(TOKEN.to_lowercase().as_bytes()));
    }

    #[test]
    fn the_cache_is_bounded_by_the_bytes_its_automata_hold() {
        let max_bytes = 4 << 20;
        let cache = RedactorCache {
            max_bytes,
            ..RedactorCache::default()
        };
        // Long tokens (JWTs of tens of KiB) make large automata.
        let long = "x".repeat(4 << 10);
        let mut built = 0;
        for i in 0..64 {
            let value = format!("Bearer {i}{long}");
            built += cache.get(&[value.as_bytes()]).memory_usage();
        }
        assert!(built > 2 * max_bytes, "the bound is reached: {built} bytes built");
        let held = cache.by_digest.lock().unwrap().bytes;
        assert!(held > 0 && held <= max_bytes, "{held} bytes kept");
        // One automaton past the whole bound is built, used, and not kept.
        let huge = format!("Bearer {}", "y".repeat(16 << 10));
        let r = cache.get(&[huge.as_bytes()]);
        assert!(r.memory_usage() > max_bytes);
        let m = cache.by_digest.lock().unwrap();
        assert!(m.bytes <= max_bytes && m.redactors.values().all(|k| !Arc::ptr_eq(k, &r)));
    }

    #[test]
    fn text_without_the_token_is_untouched() {
        let text = "gho_ tokens look like gho_16C7e42F but this one is not here";
        let (out, found) = redacted(text);
        assert_eq!(out, text);
        assert!(found.is_empty());
    }

    #[test]
    fn the_debug_form_holds_no_pattern() {
        let r = Redactor::new(&[TOKEN.as_bytes()]);
        assert!(!format!("{r:?}").contains(&TOKEN[4..12]));
    }
}

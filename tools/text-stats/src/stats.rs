//! What `text-stats` computes, in plain Rust with no SDK types: the tool
//! wraps it, and the serve benchmark's native baseline includes this file so
//! both sides do the same work.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Input of `text-stats`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The text to measure.
    pub text: String,
    /// How many of the most frequent words to list (default 5, at most 100).
    #[serde(default = "default_top")]
    pub top: u32,
}

fn default_top() -> u32 {
    5
}

/// Output of `text-stats`.
#[derive(Debug, Serialize, JsonSchema, PartialEq)]
pub struct Output {
    /// Unicode scalar values.
    pub characters: usize,
    /// Runs of letters, digits and apostrophes.
    pub words: usize,
    /// Lines, counting a last line without a newline.
    pub lines: usize,
    /// The most frequent words, lower-cased, most frequent first, ties alphabetical.
    pub top_words: Vec<WordCount>,
}

/// One word and how often it occurs.
#[derive(Debug, Serialize, JsonSchema, PartialEq)]
pub struct WordCount {
    /// The word, lower-cased.
    pub word: String,
    /// Occurrences.
    pub count: usize,
}

/// The computation.
pub fn stats(text: &str, top: usize) -> Output {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut words = 0;
    for word in text
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
    {
        words += 1;
        *counts.entry(word.to_lowercase()).or_default() += 1;
    }
    let mut top_words: Vec<WordCount> = counts
        .into_iter()
        .map(|(word, count)| WordCount { word, count })
        .collect();
    top_words.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.word.cmp(&b.word)));
    top_words.truncate(top);
    Output {
        characters: text.chars().count(),
        words,
        lines: text.lines().count(),
        top_words,
    }
}

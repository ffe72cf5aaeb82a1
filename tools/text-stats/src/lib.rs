//! A pure tool: it computes from its input alone and imports nothing but the basics.

use std::collections::HashMap;

use airlock_tool::{Error, Tool};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The tool.
pub struct TextStats;

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

impl Tool for TextStats {
    type Input = Input;
    type Output = Output;

    fn call(input: Input) -> Result<Output, Error> {
        if input.top > 100 {
            return Err(Error::InvalidInput(format!(
                "top is {}; it must be at most 100",
                input.top
            )));
        }
        Ok(stats(&input.text, input.top as usize))
    }
}

/// The computation, kept apart from the glue so it is tested natively.
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

airlock_tool::export_tool!(TextStats);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_counts_words_lines_and_ranks() {
        let out = stats("The cat saw the dog.\nThe dog ran; it's late", 2);
        assert_eq!(out.words, 10);
        assert_eq!(out.lines, 2);
        assert_eq!(out.characters, 43);
        assert_eq!(
            out.top_words,
            vec![
                WordCount { word: "the".into(), count: 3 },
                WordCount { word: "dog".into(), count: 2 },
            ]
        );
    }

    #[test]
    fn stats_of_empty_text_is_zero() {
        let out = stats("", 5);
        assert_eq!((out.characters, out.words, out.lines), (0, 0, 0));
        assert!(out.top_words.is_empty());
    }

    #[test]
    fn call_rejects_top_over_100() {
        let err = TextStats::call(Input { text: "a".into(), top: 101 }).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(m) if m.contains("at most 100")));
    }
}

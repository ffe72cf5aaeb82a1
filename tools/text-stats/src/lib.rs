//! A pure tool: it computes from its input alone and imports nothing but the basics.

use airlock_tool::{Error, Tool};

mod stats;
pub use stats::{Input, Output, WordCount, stats};

/// The tool.
pub struct TextStats;

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

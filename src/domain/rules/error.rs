//! A refused rule: the error, its position in characters, and the clipping
//! of quoted text that every message shares.

use std::fmt;

/// A refused rule: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// Character offset in the rule, from 0.
    pub position: usize,
    /// What is wrong, and what is supported instead.
    pub message: String,
}

impl CompileError {
    /// The refusal at `position`.
    pub(super) fn at(position: usize, message: impl Into<String>) -> Self {
        CompileError {
            position,
            message: message.into(),
        }
    }
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at character {}: {}", self.position, self.message)
    }
}

impl std::error::Error for CompileError {}

/// Text quoted in a message, cut to a readable length.
pub(super) fn clip(text: &str) -> String {
    const MAX_CHARS: usize = 60;
    if text.chars().count() <= MAX_CHARS {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(MAX_CHARS).collect();
    clipped.push_str("...");
    clipped
}

/// The character offset of a byte offset (rounded down to a character).
pub(super) fn char_position(source: &str, byte: usize) -> usize {
    source
        .char_indices()
        .take_while(|(offset, _)| *offset < byte)
        .count()
}

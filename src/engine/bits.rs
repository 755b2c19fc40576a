//! A set of rows as one bit per row: what a rule selects, combined with
//! `&&`, `||` and `!` a word at a time, and filled in parallel.

use rayon::prelude::*;

/// Words of a bit set one parallel task handles: 64 Ki rows.
pub const WORDS_PER_TASK: usize = 1024;

/// One bit per row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Bits {
    /// `len` bits, all `value`.
    pub fn filled(len: usize, value: bool) -> Self {
        let mut bits = Bits {
            words: vec![if value { u64::MAX } else { 0 }; len.div_ceil(64)],
            len,
        };
        bits.trim();
        bits
    }

    /// The bits of `holds` for every row, in one pass split over the cores.
    pub fn from_fn(len: usize, holds: impl Fn(usize) -> bool + Sync) -> Self {
        let mut words = vec![0u64; len.div_ceil(64)];
        words
            .par_chunks_mut(WORDS_PER_TASK)
            .enumerate()
            .for_each(|(chunk, words)| {
                for (w, word) in words.iter_mut().enumerate() {
                    let base = (chunk * WORDS_PER_TASK + w) * 64;
                    let end = (base + 64).min(len);
                    let mut bits = 0u64;
                    for row in base..end {
                        bits |= u64::from(holds(row)) << (row - base);
                    }
                    *word = bits;
                }
            });
        Bits { words, len }
    }

    /// The words, 64 rows each.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    fn trim(&mut self) {
        let spare = self.words.len() * 64 - self.len;
        if spare > 0 {
            if let Some(last) = self.words.last_mut() {
                *last &= u64::MAX >> spare;
            }
        }
    }

    /// Covers `len` rows, the new ones clear; never fewer than now.
    pub fn grow(&mut self, len: usize) {
        if len > self.len {
            self.words.resize(len.div_ceil(64), 0);
            self.len = len;
        }
    }

    /// Whether one bit is set.
    pub fn contains(&self, row: usize) -> bool {
        row < self.len && self.words[row / 64] & (1 << (row % 64)) != 0
    }

    /// Sets one bit.
    pub fn set(&mut self, row: usize) {
        if row < self.len {
            self.words[row / 64] |= 1 << (row % 64);
        }
    }

    /// Clears one bit.
    pub fn clear(&mut self, row: usize) {
        if row < self.len {
            self.words[row / 64] &= !(1 << (row % 64));
        }
    }

    /// Keeps the bits also set in `other`.
    pub fn and(&mut self, other: &Bits) {
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            *mine &= theirs;
        }
    }

    /// Adds the bits set in `other`.
    pub fn or(&mut self, other: &Bits) {
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            *mine |= theirs;
        }
    }

    /// Keeps the bits not set in `other`.
    pub fn and_not(&mut self, other: &Bits) {
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            *mine &= !theirs;
        }
    }

    /// Flips every bit.
    pub fn not(&mut self) {
        for word in &mut self.words {
            *word = !*word;
        }
        self.trim();
    }

    /// Bits set.
    pub fn count(&self) -> usize {
        self.words
            .iter()
            .map(|word| word.count_ones() as usize)
            .sum()
    }

    /// The rows whose bit is set, in order.
    pub fn rows(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let bit = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    w * 64 + bit
                })
            })
        })
    }
}

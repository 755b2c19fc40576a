//! A set of rows as one bit per row: what a rule selects, combined with
//! `&&`, `||` and `!` a word at a time, and filled in parallel.

use rayon::prelude::*;

/// Words of a bit set one parallel task handles: 64 Ki rows.
pub const WORDS_PER_TASK: usize = 1024;

/// The most codes [`Bits::of_codes`] compares each row with.
pub const FEW_CODES: usize = 4;

/// Fills `words`, the first of which is word `first` of a set of `len`
/// bits, with the bits of `holds`. Each word's 64 rows are decided into a
/// byte each, a loop with no dependence from one row to the next, then
/// packed eight bytes at a time.
fn fill(words: &mut [u64], first: usize, len: usize, holds: &impl Fn(usize) -> bool) {
    for (w, word) in words.iter_mut().enumerate() {
        let base = (first + w) * 64;
        let rows = (len - base).min(64);
        let mut flags = [0u8; 64];
        for (place, flag) in flags[..rows].iter_mut().enumerate() {
            *flag = u8::from(holds(base + place));
        }
        *word = pack(&flags);
    }
}

/// The bits of 64 bytes that are each 0 or 1, the first byte the lowest.
fn pack(flags: &[u8; 64]) -> u64 {
    flags
        .chunks_exact(8)
        .enumerate()
        .fold(0, |word, (eighth, bytes)| {
            let bytes = u64::from_le_bytes(bytes.try_into().expect("eight bytes"));
            // Each byte's low bit, moved by the product to the top byte in
            // order: byte i to bit 56 + i.
            word | (bytes.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * eighth)
        })
}

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

    /// The bits of `holds` for every row, in one pass split over the cores
    /// when there is more than one task's worth of rows.
    pub fn from_fn(len: usize, holds: impl Fn(usize) -> bool + Sync) -> Self {
        let mut words = vec![0u64; len.div_ceil(64)];
        if words.len() <= WORDS_PER_TASK {
            fill(&mut words, 0, len, &holds);
        } else {
            words
                .par_chunks_mut(WORDS_PER_TASK)
                .enumerate()
                .for_each(|(chunk, words)| fill(words, chunk * WORDS_PER_TASK, len, &holds));
        }
        Bits { words, len }
    }

    /// The bits of `holds` for each of `values`, one row each, in one pass
    /// split over the cores when there is more than one task's worth of
    /// rows. Each value is read from a slice rather than by row number, so
    /// that the loop has no bounds check and the compiler can run it many
    /// rows to an instruction.
    pub fn from_values<T: Sync>(values: &[T], holds: impl Fn(&T) -> bool + Sync) -> Self {
        let mut words = vec![0u64; values.len().div_ceil(64)];
        let fill = |words: &mut [u64], values: &[T]| {
            for (word, values) in words.iter_mut().zip(values.chunks(64)) {
                let mut flags = [0u8; 64];
                for (flag, value) in flags.iter_mut().zip(values) {
                    *flag = u8::from(holds(value));
                }
                *word = pack(&flags);
            }
        };
        if words.len() <= WORDS_PER_TASK {
            fill(&mut words, values);
        } else {
            words
                .par_chunks_mut(WORDS_PER_TASK)
                .zip(values.par_chunks(WORDS_PER_TASK * 64))
                .for_each(|(words, values)| fill(words, values));
        }
        Bits {
            words,
            len: values.len(),
        }
    }

    /// The rows whose code is one of `codes` (at most [`FEW_CODES`]), or
    /// with `except` none of them: each row's byte is compared with every
    /// code, a loop the compiler runs many rows to an instruction.
    pub fn of_codes(values: &[u8], codes: &[u8], except: bool) -> Self {
        assert!(codes.len() <= FEW_CODES, "at most {FEW_CODES} codes");
        let Some(&first) = codes.first() else {
            return Bits::filled(values.len(), except);
        };
        // Repeating a code changes nothing.
        let mut four = [first; FEW_CODES];
        four[..codes.len()].copy_from_slice(codes);
        let [a, b, c, d] = four;
        Bits::from_values(values, |&x| {
            ((x == a) | (x == b) | (x == c) | (x == d)) != except
        })
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

    /// The bits of the rows in `span`, which starts on a word: bit `i` is
    /// row `span.start + i`.
    pub fn span(&self, span: std::ops::Range<usize>) -> Bits {
        assert!(
            span.start.is_multiple_of(64) && span.start <= span.end && span.end <= self.len,
            "a span of bits starts on a word and lies within them"
        );
        let mut bits = Bits {
            words: self.words[span.start / 64..span.end.div_ceil(64)].to_vec(),
            len: span.len(),
        };
        bits.trim();
        bits
    }

    /// Whether no bit is set.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&word| word == 0)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Filled by its function, a set of any length holds the rows the
    /// function holds for, whether filled by one task or by several.
    #[test]
    fn from_fn_sets_the_rows_the_function_holds_for() {
        let holds = |row: usize| row.is_multiple_of(3) || row % 7 == 5 || row.count_ones() == 4;
        for len in [
            0,
            1,
            8,
            63,
            64,
            65,
            200,
            WORDS_PER_TASK * 64 + 77,
            3 * WORDS_PER_TASK * 64,
        ] {
            let expected: Vec<usize> = (0..len).filter(|&row| holds(row)).collect();
            let values: Vec<u64> = (0..len as u64).collect();
            // By row number, and from a row's value.
            for bits in [
                Bits::from_fn(len, holds),
                Bits::from_values(&values, |&value| holds(value as usize)),
            ] {
                let rows: Vec<usize> = bits.rows().collect();
                assert_eq!(rows, expected, "{len} rows");
                assert_eq!(bits.count(), expected.len());
                assert_eq!(bits.len, len);
            }
        }
    }

    /// A row's code is compared with each code asked for, or with none of
    /// them with `except`, at every length.
    #[test]
    fn of_codes_sets_the_rows_with_those_codes() {
        let values: Vec<u8> = (0..3 * WORDS_PER_TASK * 64 + 70)
            .map(|row| (row * 7 % 11) as u8)
            .collect();
        for codes in [&[][..], &[3], &[0, 10], &[1, 2, 3, 4]] {
            for except in [false, true] {
                for len in [0, 5, 64, 130, WORDS_PER_TASK * 64 + 1, values.len()] {
                    let values = &values[..len];
                    let bits = Bits::of_codes(values, codes, except);
                    let expected = Bits::from_fn(len, |row| codes.contains(&values[row]) != except);
                    assert_eq!(bits, expected, "{codes:?} except {except}, {len} rows");
                }
            }
        }
    }

    /// Every byte pattern packs to its own bits.
    #[test]
    fn pack_puts_each_byte_in_its_own_bit() {
        let mut flags = [0u8; 64];
        for (place, flag) in flags.iter_mut().enumerate() {
            *flag = u8::from(place % 5 == 1 || place > 60);
        }
        let word = pack(&flags);
        for (place, flag) in flags.iter().enumerate() {
            assert_eq!(word >> place & 1, u64::from(*flag), "bit {place}");
        }
        assert_eq!(pack(&[1; 64]), u64::MAX);
        assert_eq!(pack(&[0; 64]), 0);
    }
}

//! A subject's members by row: a bit set for a segment, a persona code per
//! row for the personas; and the rows where two of them differ.

use crate::engine::bits::Bits;

/// Members by row.
#[derive(Debug, Clone)]
pub enum Members {
    /// A segment's: a row is a member or not.
    Set(Bits),
    /// The personas': each row's persona code, 0 for none.
    Codes(Vec<u32>),
}

impl Members {
    /// No member, of the kind `personas` says.
    pub fn empty(personas: bool) -> Self {
        if personas {
            Members::Codes(Vec::new())
        } else {
            Members::Set(Bits::filled(0, false))
        }
    }

    /// The code of `row`: 1 for a segment's member, the persona code for
    /// the personas, 0 for none.
    pub fn get(&self, row: usize) -> u32 {
        match self {
            Members::Set(bits) => u32::from(bits.contains(row)),
            Members::Codes(codes) => codes.get(row).copied().unwrap_or(0),
        }
    }

    /// Sets the code of `row`, covering it first.
    pub fn set(&mut self, row: usize, code: u32) {
        match self {
            Members::Set(bits) => {
                bits.grow(row + 1);
                if code == 0 {
                    bits.clear(row);
                } else {
                    bits.set(row);
                }
            }
            Members::Codes(codes) => {
                if codes.len() <= row {
                    codes.resize(row + 1, 0);
                }
                codes[row] = code;
            }
        }
    }

    /// The rows with a code, and their codes, in order.
    pub fn rows(&self) -> Box<dyn Iterator<Item = (usize, u32)> + '_> {
        match self {
            Members::Set(bits) => Box::new(bits.rows().map(|row| (row, 1))),
            Members::Codes(codes) => Box::new(
                codes
                    .iter()
                    .enumerate()
                    .filter(|(_, &code)| code != 0)
                    .map(|(row, &code)| (row, code)),
            ),
        }
    }

    /// The rows whose code differs from `before`'s: (row, was, is), in
    /// order. A segment's are found a word of 64 rows at a time.
    pub fn changed_from(&self, before: &Members) -> Vec<(usize, u32, u32)> {
        match (before, self) {
            (Members::Set(was), Members::Set(is)) => {
                let (was, is) = (was.words(), is.words());
                let mut changed = Vec::new();
                for w in 0..was.len().max(is.len()) {
                    let old = was.get(w).copied().unwrap_or(0);
                    let new = is.get(w).copied().unwrap_or(0);
                    let mut differ = old ^ new;
                    while differ != 0 {
                        let bit = differ.trailing_zeros() as usize;
                        differ &= differ - 1;
                        let row = w * 64 + bit;
                        changed.push((
                            row,
                            u32::from(old >> bit & 1 == 1),
                            u32::from(new >> bit & 1 == 1),
                        ));
                    }
                }
                changed
            }
            _ => {
                let rows = match (before, self) {
                    (Members::Codes(was), Members::Codes(is)) => was.len().max(is.len()),
                    _ => 0,
                };
                (0..rows)
                    .filter_map(|row| {
                        let (was, is) = (before.get(row), self.get(row));
                        (was != is).then_some((row, was, is))
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_between_sets_and_between_codes_are_found_row_by_row() {
        let mut before = Members::empty(false);
        for row in [1, 64, 130] {
            before.set(row, 1);
        }
        let mut after = Members::empty(false);
        for row in [1, 65, 200] {
            after.set(row, 1);
        }
        assert_eq!(
            after.changed_from(&before),
            vec![(64, 1, 0), (65, 0, 1), (130, 1, 0), (200, 0, 1)]
        );
        assert_eq!(
            after.rows().collect::<Vec<_>>(),
            vec![(1, 1), (65, 1), (200, 1)]
        );

        let mut was = Members::empty(true);
        was.set(3, 2);
        was.set(5, 1);
        let mut is = Members::empty(true);
        is.set(3, 2);
        is.set(5, 3);
        is.set(9, 1);
        assert_eq!(is.changed_from(&was), vec![(5, 1, 3), (9, 0, 1)]);
    }
}

//! A [`super::Predicate`] written back as rule text.

//! Predictions of what a customer will do, from the standard models of
//! the field, fitted by maximum likelihood:
//!
//! - `bgnbd`: the BG/NBD model of Fader, Hardie and Lee (2005), "Counting
//!   Your Customers the Easy Way: An Alternative to the Pareto/NBD Model",
//!   for the repeat-purchase process: whether a customer is still active,
//!   and how many purchases they will make over a horizon.
//! - `gamma_gamma`: the Gamma-Gamma model of Fader, Hardie and Lee (2005),
//!   "RFM and CLV: Using Iso-Value Curves for Customer Base Analysis", for
//!   the mean value of a customer's purchases.
//! - `hyp2f1`: the Gaussian hypergeometric function the BG/NBD conditional
//!   expectation needs.
//! - `fit`: the optimiser both fits share.
//! - `model`: the two fitted together on a customer base, their inputs
//!   from purchase times, the per-customer predictions and lifetime
//!   value, and the holdout validation.
//!
//! The inputs follow the models' convention: a customer's repeat
//! transactions are their distinct purchase days minus one, `t_x` runs
//! from the first purchase day to the last, `T` from the first purchase to
//! the evaluation time, and the value of a day is its total. Times are in
//! weeks, the papers' unit.

pub mod bgnbd;
mod fit;
pub mod gamma_gamma;
pub mod hyp2f1;
mod model;

pub use model::{
    day_of, p_alive_band, ClvSettings, FitInputs, PAliveOn, PredictionModel, Predictions,
    PurchaseDays, Validation,
};

#[cfg(test)]
mod cdnow;

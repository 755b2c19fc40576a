//! The BG/NBD model (Fader, Hardie and Lee 2005): while active, a customer
//! buys as a Poisson process with a rate drawn from Gamma(r, α); after any
//! purchase they become inactive with a probability drawn from
//! Beta(a, b). Equation numbers are the paper's.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use statrs::function::gamma::ln_gamma;

use super::fit::{maximise_likelihood, sum_in_order};
use super::hyp2f1::{hyp2f1, hyp2f1_each};

/// One customer's history in the model's terms, times in weeks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct History {
    /// Repeat transactions: distinct purchase days minus one.
    pub x: f64,
    /// From the first purchase to the last.
    pub t_x: f64,
    /// From the first purchase to the evaluation time.
    pub t: f64,
}

/// The fitted parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BgNbd {
    /// The shape of the purchase rates' Gamma.
    pub r: f64,
    /// The scale of the purchase rates' Gamma, in weeks.
    pub alpha: f64,
    /// The drop-out probabilities' Beta: a.
    pub a: f64,
    /// The drop-out probabilities' Beta: b.
    pub b: f64,
}

/// ln(α + t), a time `t` in weeks: the one place P(alive) takes it, so that
/// a table of it by day gives the same bits.
pub fn ln_weeks(alpha: f64, t: f64) -> f64 {
    (alpha + t).ln()
}

/// A fit and how it went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbdFit {
    /// The parameters.
    pub model: BgNbd,
    /// The log-likelihood at them, summed over the customers.
    pub log_likelihood: f64,
    /// The optimiser's iterations.
    pub iterations: u64,
}

impl BgNbd {
    /// The log-likelihood of one customer's history (equation 6).
    pub fn log_likelihood(&self, h: &History) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        let a1 = ln_gamma(r + h.x) - ln_gamma(r) + r * alpha.ln();
        let a2 = ln_gamma(a + b) + ln_gamma(b + h.x) - ln_gamma(b) - ln_gamma(a + b + h.x);
        let a3 = -(r + h.x) * (alpha + h.t).ln();
        if h.x > 0.0 {
            let a4 = a.ln() - (b + h.x - 1.0).ln() - (r + h.x) * (alpha + h.t_x).ln();
            // ln(e^a3 + e^a4), without overflow.
            let high = a3.max(a4);
            a1 + a2 + high + ((a3 - high).exp() + (a4 - high).exp()).ln()
        } else {
            a1 + a2 + a3
        }
    }

    /// The probability that a customer with this history is still active
    /// (equation 13 of Fader, Hardie and Lee's note "Computing P(alive)
    /// using the BG/NBD model").
    pub fn p_alive(&self, h: &History) -> f64 {
        if h.x == 0.0 {
            return 1.0;
        }
        let BgNbd { r, alpha, a, b } = *self;
        // As a difference of logarithms, which `PAliveOn` tabulates by
        // day, to the same bits.
        let odds = a / (b + h.x - 1.0)
            * ((r + h.x) * (ln_weeks(alpha, h.t) - ln_weeks(alpha, h.t_x))).exp();
        1.0 / (1.0 + odds)
    }

    /// The expected number of purchases in the next `weeks` of a customer
    /// with this history (equation 10); `None` when the hypergeometric
    /// series cannot be summed.
    pub fn expected_purchases(&self, h: &History, weeks: f64) -> Option<f64> {
        if weeks <= 0.0 {
            return Some(0.0);
        }
        let BgNbd { r, alpha, a, b } = *self;
        let z = weeks / (alpha + h.t + weeks);
        let (ha, hb, hc) = (r + h.x, b + h.x, a + b + h.x - 1.0);
        let ln_hyp = match hyp2f1(ha, hb, hc, z) {
            Some(value) if value.is_finite() && value > 0.0 => value.ln(),
            // Euler's transformation: the same value, another series.
            _ => hyp2f1(hc - ha, hc - hb, hc, z)?.ln() + (hc - ha - hb) * (1.0 - z).ln(),
        };
        let first = (a + b + h.x - 1.0) / (a - 1.0);
        let second =
            1.0 - (ln_hyp + (r + h.x) * ((alpha + h.t) / (alpha + h.t + weeks)).ln()).exp();
        let odds = if h.x > 0.0 {
            a / (b + h.x - 1.0) * ((alpha + h.t) / (alpha + h.t_x)).powf(r + h.x)
        } else {
            0.0
        };
        Some(first * second / (1.0 + odds))
    }

    /// The expected purchases of [`BgNbd::expected_purchases`] over each of
    /// `horizons` (in weeks, positive), from one pass over the
    /// hypergeometric series; one at a time where that pass fails.
    pub fn expected_purchases_each(&self, h: &History, horizons: &[f64]) -> Vec<Option<f64>> {
        let BgNbd { r, alpha, a, b } = *self;
        let (ha, hb, hc) = (r + h.x, b + h.x, a + b + h.x - 1.0);
        let zs: Vec<f64> = horizons
            .iter()
            .map(|&weeks| weeks / (alpha + h.t + weeks))
            .collect();
        let Some(values) = hyp2f1_each(ha, hb, hc, &zs) else {
            return horizons
                .iter()
                .map(|&weeks| self.expected_purchases(h, weeks))
                .collect();
        };
        let first = (a + b + h.x - 1.0) / (a - 1.0);
        let odds = if h.x > 0.0 {
            a / (b + h.x - 1.0) * ((alpha + h.t) / (alpha + h.t_x)).powf(r + h.x)
        } else {
            0.0
        };
        horizons
            .iter()
            .zip(values)
            .map(|(&weeks, value)| {
                if !(value.is_finite() && value > 0.0) || weeks <= 0.0 {
                    return self.expected_purchases(h, weeks);
                }
                let kept = (value.ln() + ha * ((alpha + h.t) / (alpha + h.t + weeks)).ln()).exp();
                Some(first * (1.0 - kept) / (1.0 + odds))
            })
            .collect()
    }

    /// Fits the model to `histories` by maximum likelihood: L-BFGS over
    /// the parameters' logarithms, with the likelihood's gradient.
    pub fn fit(histories: &[History]) -> Result<BgNbdFit, String> {
        let sample = Sample::new(histories)?;
        let fitted = maximise_likelihood(
            |params| {
                sample.log_likelihood(&BgNbd {
                    r: params[0],
                    alpha: params[1],
                    a: params[2],
                    b: params[3],
                })
            },
            histories.len(),
            [1.0; 4],
            500,
        )?;
        let p = &fitted.params;
        Ok(BgNbdFit {
            model: BgNbd {
                r: p[0],
                alpha: p[1],
                a: p[2],
                b: p[3],
            },
            log_likelihood: fitted.log_likelihood,
            iterations: fitted.iterations,
        })
    }
}

/// The histories a fit reads: how many customers have each repeat count,
/// for the terms that depend on it alone, and how many have each history,
/// for the others (times in whole days repeat often).
struct Sample {
    /// Distinct histories, and how many customers have each.
    histories: Vec<(History, f64)>,
    /// Customers by repeat count.
    by_x: Vec<f64>,
}

impl Sample {
    fn new(histories: &[History]) -> Result<Self, String> {
        if histories.is_empty() {
            return Err("no customer to fit on".into());
        }
        let mut by_x: Vec<f64> = Vec::new();
        let mut distinct: HashMap<[u64; 3], (History, f64)> = HashMap::new();
        for h in histories {
            let whole = h.x >= 0.0 && h.x.fract() == 0.0 && h.x < 1e7;
            if !(whole && h.t_x >= 0.0 && h.t >= h.t_x) {
                return Err(format!("a history outside the model: {h:?}"));
            }
            let x = h.x as usize;
            if by_x.len() <= x {
                by_x.resize(x + 1, 0.0);
            }
            by_x[x] += 1.0;
            distinct
                .entry([h.x.to_bits(), h.t_x.to_bits(), h.t.to_bits()])
                .or_insert((*h, 0.0))
                .1 += 1.0;
        }
        // In a fixed order, for the same sums on every run.
        let mut histories: Vec<([u64; 3], (History, f64))> = distinct.into_iter().collect();
        histories.sort_unstable_by_key(|(key, _)| *key);
        Ok(Sample {
            histories: histories.into_iter().map(|(_, counted)| counted).collect(),
            by_x,
        })
    }

    /// The log-likelihood summed over the histories (equation 6), and its
    /// gradient by (r, α, a, b).
    fn log_likelihood(&self, model: &BgNbd) -> (f64, [f64; 4]) {
        let BgNbd { r, alpha, a, b } = *model;
        // The terms of x alone: ln Γ(r + x) − ln Γ(r) = Σ_{k<x} ln(r + k),
        // and so on, summed a repeat count at a time.
        let (mut value, mut gradient) = (0.0, [0.0; 4]);
        let (mut ln_r, mut ln_b, mut ln_ab) = (0.0, 0.0, 0.0);
        let (mut inv_r, mut inv_b, mut inv_ab) = (0.0, 0.0, 0.0);
        for (x, &count) in self.by_x.iter().enumerate() {
            if x > 0 {
                let k = (x - 1) as f64;
                ln_r += (r + k).ln();
                ln_b += (b + k).ln();
                ln_ab += (a + b + k).ln();
                inv_r += 1.0 / (r + k);
                inv_b += 1.0 / (b + k);
                inv_ab += 1.0 / (a + b + k);
            }
            if count == 0.0 {
                continue;
            }
            value += count * (ln_r + r * alpha.ln() + ln_b - ln_ab);
            gradient[0] += count * (inv_r + alpha.ln());
            gradient[1] += count * r / alpha;
            gradient[2] -= count * inv_ab;
            gradient[3] += count * (inv_b - inv_ab);
        }
        // The terms of the times, a customer at a time.
        let (times, by_time) = sum_in_order(
            &self.histories,
            |&(h, n), value: &mut f64, gradient: &mut [f64; 4]| {
                let rx = r + h.x;
                let ln_t = (alpha + h.t).ln();
                let a3 = -rx * ln_t;
                if h.x == 0.0 {
                    *value += n * a3;
                    gradient[0] -= n * ln_t;
                    gradient[1] -= n * rx / (alpha + h.t);
                    return;
                }
                let ln_tx = (alpha + h.t_x).ln();
                let a4 = a.ln() - (b + h.x - 1.0).ln() - rx * ln_tx;
                let high = a3.max(a4);
                let (e3, e4) = ((a3 - high).exp(), (a4 - high).exp());
                *value += n * (high + (e3 + e4).ln());
                // The share of the second term, which says the customer
                // dropped out after their last purchase.
                let w = e4 / (e3 + e4);
                gradient[0] -= n * ((1.0 - w) * ln_t + w * ln_tx);
                gradient[1] -= n * rx * ((1.0 - w) / (alpha + h.t) + w / (alpha + h.t_x));
                gradient[2] += n * w / a;
                gradient[3] -= n * w / (b + h.x - 1.0);
            },
        );
        value += times;
        for (total, part) in gradient.iter_mut().zip(by_time) {
            *total += part;
        }
        (value, gradient)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fit::assert_gradient;
    use super::*;

    /// The summed likelihood agrees with the per-customer one, and its
    /// gradient with finite differences.
    #[test]
    fn the_summed_likelihood_and_its_gradient_are_right() {
        let histories = [
            History {
                x: 0.0,
                t_x: 0.0,
                t: 30.0,
            },
            History {
                x: 2.0,
                t_x: 30.43,
                t: 38.86,
            },
            History {
                x: 7.0,
                t_x: 12.0,
                t: 50.5,
            },
            History {
                x: 1.0,
                t_x: 1.71,
                t: 38.86,
            },
            History {
                x: 2.0,
                t_x: 3.0,
                t: 3.5,
            },
        ];
        let sample = Sample::new(&histories).unwrap();
        let model = BgNbd {
            r: 0.7,
            alpha: 3.1,
            a: 1.3,
            b: 2.2,
        };
        let (value, gradient) = sample.log_likelihood(&model);
        let each: f64 = histories.iter().map(|h| model.log_likelihood(h)).sum();
        assert!((value - each).abs() < 1e-9, "{value} vs {each}");
        let at = |params: [f64; 4]| {
            let [r, alpha, a, b] = params;
            sample.log_likelihood(&BgNbd { r, alpha, a, b }).0
        };
        let params = [model.r, model.alpha, model.a, model.b];
        assert_gradient(at, params, gradient);
    }

    #[test]
    fn histories_outside_the_model_are_refused() {
        for bad in [
            History {
                x: 1.5,
                t_x: 1.0,
                t: 2.0,
            },
            History {
                x: -1.0,
                t_x: 0.0,
                t: 2.0,
            },
            History {
                x: 1.0,
                t_x: 3.0,
                t: 2.0,
            },
            History {
                x: 1.0,
                t_x: f64::NAN,
                t: 2.0,
            },
        ] {
            assert!(BgNbd::fit(&[bad]).is_err(), "{bad:?}");
        }
        assert!(BgNbd::fit(&[]).is_err());
    }
}

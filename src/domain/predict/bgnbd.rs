//! The BG/NBD model (Fader, Hardie and Lee 2005): while active, a customer
//! buys as a Poisson process with a rate drawn from Gamma(r, α); after any
//! purchase they become inactive with a probability drawn from
//! Beta(a, b). Equation numbers are the paper's.

use statrs::function::gamma::ln_gamma;

use super::fit::minimise;
use super::hyp2f1::hyp2f1;

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
#[derive(Debug, Clone, Copy, PartialEq)]
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
        let odds = a / (b + h.x - 1.0) * ((alpha + h.t) / (alpha + h.t_x)).powf(r + h.x);
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

    /// Fits the model to `histories` by maximum likelihood.
    pub fn fit(histories: &[History]) -> Result<BgNbdFit, String> {
        if histories.is_empty() {
            return Err("no customer to fit on".into());
        }
        let cost = |params: &[f64]| {
            let model = BgNbd {
                r: params[0],
                alpha: params[1],
                a: params[2],
                b: params[3],
            };
            -histories
                .iter()
                .map(|h| model.log_likelihood(h))
                .sum::<f64>()
        };
        let fitted = minimise(cost, &[1.0, 1.0, 1.0, 1.0], 5_000)?;
        let p = &fitted.params;
        Ok(BgNbdFit {
            model: BgNbd {
                r: p[0],
                alpha: p[1],
                a: p[2],
                b: p[3],
            },
            log_likelihood: -fitted.cost,
            iterations: fitted.iterations,
        })
    }
}

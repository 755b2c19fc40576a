//! The Gamma-Gamma model (Fader, Hardie and Lee 2005, "RFM and CLV"): the
//! values of a customer's transactions are Gamma(p, ν) around their own
//! mean, with ν drawn from Gamma(q, γ), here `v`. It is fitted on the
//! customers with at least one repeat transaction, each by the number of
//! them and their mean value, which must be positive.

use serde::{Deserialize, Serialize};
use statrs::function::gamma::{digamma, ln_gamma};

use super::fit::{maximise_likelihood, sum_in_order};

/// One customer's repeat transactions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spend {
    /// How many: at least one.
    pub x: f64,
    /// Their mean value: positive.
    pub mean: f64,
}

/// The fitted parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GammaGamma {
    /// The shape of a transaction's value.
    pub p: f64,
    /// The shape of the customers' rates.
    pub q: f64,
    /// The scale of the customers' rates.
    pub v: f64,
}

/// A fit and how it went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGammaFit {
    /// The parameters.
    pub model: GammaGamma,
    /// The log-likelihood at them, summed over the customers.
    pub log_likelihood: f64,
    /// The optimiser's iterations.
    pub iterations: u64,
}

impl GammaGamma {
    /// The log-likelihood of one customer's mean value, given how many
    /// transactions it is the mean of.
    pub fn log_likelihood(&self, s: &Spend) -> f64 {
        let GammaGamma { p, q, v } = *self;
        let px = p * s.x;
        ln_gamma(px + q) - ln_gamma(px) - ln_gamma(q)
            + q * v.ln()
            + (px - 1.0) * s.mean.ln()
            + px * s.x.ln()
            - (px + q) * (s.x * s.mean + v).ln()
    }

    /// The mean transaction value over all customers, p ν / (q − 1); only
    /// finite for q > 1.
    pub fn population_mean(&self) -> f64 {
        self.p * self.v / (self.q - 1.0)
    }

    /// The expected mean value of a customer's transactions, given `spend`
    /// (equation 5): a weighted mean of theirs and the population's. A
    /// customer without a repeat transaction gets the population's.
    pub fn expected_value(&self, spend: Option<&Spend>) -> f64 {
        let Some(s) = spend else {
            return self.population_mean();
        };
        let weight = self.p * s.x / (self.p * s.x + self.q - 1.0);
        (1.0 - weight) * self.population_mean() + weight * s.mean
    }

    /// Fits the model by maximum likelihood: L-BFGS over the parameters'
    /// logarithms, with the likelihood's gradient. Every spend must have a
    /// whole x of at least 1 and a positive mean.
    pub fn fit(spends: &[Spend]) -> Result<GammaGammaFit, String> {
        let sample = Sample::new(spends)?;
        let fitted = maximise_likelihood(
            |params| {
                sample.log_likelihood(&GammaGamma {
                    p: params[0],
                    q: params[1],
                    v: params[2],
                })
            },
            spends.len(),
            [1.0; 3],
            500,
        )?;
        let p = &fitted.params;
        Ok(GammaGammaFit {
            model: GammaGamma {
                p: p[0],
                q: p[1],
                v: p[2],
            },
            log_likelihood: fitted.log_likelihood,
            iterations: fitted.iterations,
        })
    }
}

/// The spends a fit reads: how many customers have each count, for the
/// terms of the count alone, and each one's count, mean and its logarithm.
struct Sample {
    /// Customers by count.
    by_x: Vec<f64>,
    /// (x, mean, ln mean) of each customer.
    spends: Vec<(f64, f64, f64)>,
}

impl Sample {
    fn new(spends: &[Spend]) -> Result<Self, String> {
        if spends.is_empty() {
            return Err("no customer with a repeat purchase of positive value".into());
        }
        let mut by_x: Vec<f64> = Vec::new();
        let mut kept = Vec::with_capacity(spends.len());
        for s in spends {
            let whole = s.x >= 1.0 && s.x.fract() == 0.0 && s.x < 1e7;
            if !(whole && s.mean > 0.0 && s.mean.is_finite()) {
                return Err(format!("a spend outside the model: {s:?}"));
            }
            let x = s.x as usize;
            if by_x.len() <= x {
                by_x.resize(x + 1, 0.0);
            }
            by_x[x] += 1.0;
            kept.push((s.x, s.mean, s.mean.ln()));
        }
        Ok(Sample { by_x, spends: kept })
    }

    /// The log-likelihood summed over the spends, and its gradient by
    /// (p, q, v).
    fn log_likelihood(&self, model: &GammaGamma) -> (f64, [f64; 3]) {
        let GammaGamma { p, q, v } = *model;
        let (mut value, mut gradient) = (0.0, [0.0; 3]);
        for (x, &count) in self.by_x.iter().enumerate() {
            if count == 0.0 {
                continue;
            }
            let x = x as f64;
            let px = p * x;
            value +=
                count * (ln_gamma(px + q) - ln_gamma(px) - ln_gamma(q) + q * v.ln() + px * x.ln());
            gradient[0] += count * x * (digamma(px + q) - digamma(px) + x.ln());
            gradient[1] += count * (digamma(px + q) - digamma(q) + v.ln());
            gradient[2] += count * q / v;
        }
        let (by_spend, spend_gradient) = sum_in_order(
            &self.spends,
            |&(x, mean, ln_mean), value: &mut f64, gradient: &mut [f64; 3]| {
                let px = p * x;
                let total = x * mean + v;
                let ln_total = total.ln();
                *value += (px - 1.0) * ln_mean - (px + q) * ln_total;
                gradient[0] += x * (ln_mean - ln_total);
                gradient[1] -= ln_total;
                gradient[2] -= (px + q) / total;
            },
        );
        value += by_spend;
        for (total, part) in gradient.iter_mut().zip(spend_gradient) {
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
        let spends = [
            Spend { x: 1.0, mean: 12.5 },
            Spend { x: 3.0, mean: 40.0 },
            Spend { x: 3.0, mean: 7.25 },
            Spend {
                x: 11.0,
                mean: 19.0,
            },
        ];
        let sample = Sample::new(&spends).unwrap();
        let model = GammaGamma {
            p: 4.0,
            q: 2.5,
            v: 11.0,
        };
        let (value, gradient) = sample.log_likelihood(&model);
        let each: f64 = spends.iter().map(|s| model.log_likelihood(s)).sum();
        assert!((value - each).abs() < 1e-9, "{value} vs {each}");
        let at = |[p, q, v]: [f64; 3]| sample.log_likelihood(&GammaGamma { p, q, v }).0;
        let params = [model.p, model.q, model.v];
        assert_gradient(at, params, gradient);
    }

    #[test]
    fn spends_outside_the_model_are_refused() {
        for bad in [
            Spend { x: 0.0, mean: 10.0 },
            Spend { x: 1.5, mean: 10.0 },
            Spend { x: 2.0, mean: 0.0 },
            Spend {
                x: 2.0,
                mean: f64::NAN,
            },
        ] {
            assert!(GammaGamma::fit(&[bad]).is_err(), "{bad:?}");
        }
        assert!(GammaGamma::fit(&[]).is_err());
    }
}

//! The Gamma-Gamma model (Fader, Hardie and Lee 2005, "RFM and CLV"): the
//! values of a customer's transactions are Gamma(p, ν) around their own
//! mean, with ν drawn from Gamma(q, γ), here `v`. It is fitted on the
//! customers with at least one repeat transaction, each by the number of
//! them and their mean value, which must be positive.

use statrs::function::gamma::ln_gamma;

use super::fit::minimise;

/// One customer's repeat transactions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spend {
    /// How many: at least one.
    pub x: f64,
    /// Their mean value: positive.
    pub mean: f64,
}

/// The fitted parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
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

    /// Fits the model by maximum likelihood; every spend must have x ≥ 1
    /// and a positive mean.
    pub fn fit(spends: &[Spend]) -> Result<GammaGammaFit, String> {
        if spends.is_empty() {
            return Err("no customer with a repeat purchase of positive value".into());
        }
        if let Some(bad) = spends.iter().find(|s| s.x < 1.0 || s.mean <= 0.0) {
            return Err(format!("a spend outside the model: {bad:?}"));
        }
        let cost = |params: &[f64]| {
            let model = GammaGamma {
                p: params[0],
                q: params[1],
                v: params[2],
            };
            -spends.iter().map(|s| model.log_likelihood(s)).sum::<f64>()
        };
        let fitted = minimise(cost, &[1.0, 1.0, 1.0], 5_000)?;
        let p = &fitted.params;
        Ok(GammaGammaFit {
            model: GammaGamma {
                p: p[0],
                q: p[1],
                v: p[2],
            },
            log_likelihood: -fitted.cost,
            iterations: fitted.iterations,
        })
    }
}

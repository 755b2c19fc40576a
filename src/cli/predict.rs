//! Flags of predictions: when the model is fitted again in the background,
//! and how lifetime value is counted.

use std::time::Duration;

use clap::Args;

use super::parse_duration;
use crate::domain::predict::ClvSettings;
use crate::engine::PredictionSettings;

/// Prediction flags of `segmentd serve`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The horizon of `features.clv_365d`, in days.
    #[arg(long, env = "SEGMENTD_CLV_HORIZON_DAYS", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    clv_horizon_days: u32,
    /// The discount rate of lifetime value per month of 30 days (`0.01`
    /// is 1%).
    #[arg(long, env = "SEGMENTD_CLV_MONTHLY_DISCOUNT_RATE", default_value_t = 0.01, value_parser = parse_rate)]
    clv_monthly_discount_rate: f64,
    /// The model is fitted again in the background once the purchases it
    /// would fit on differ from the fitted ones by this share (`0.05` is
    /// 5%)...
    #[arg(long, env = "SEGMENTD_PREDICTION_REFIT_CHANGE", default_value_t = 0.05, value_parser = parse_rate)]
    prediction_refit_change: f64,
    /// ...or once the model is this old (`24h`).
    #[arg(long, env = "SEGMENTD_PREDICTION_REFIT_AFTER", default_value = "24h", value_parser = parse_duration)]
    prediction_refit_after: Duration,
    /// How often the background looks at whether the model is due for a
    /// fit (`1m`).
    #[arg(long, env = "SEGMENTD_PREDICTION_CHECK_EVERY", default_value = "1m", value_parser = parse_duration)]
    prediction_check_every: Duration,
}

impl PredictArgs {
    /// The settings the flags give.
    pub fn settings(&self) -> PredictionSettings {
        PredictionSettings {
            clv: ClvSettings {
                horizon_days: self.clv_horizon_days,
                monthly_discount_rate: self.clv_monthly_discount_rate,
            },
            refit_change: self.prediction_refit_change,
            refit_after: self.prediction_refit_after,
            check_every: self.prediction_check_every.max(Duration::from_millis(100)),
        }
    }
}

/// A rate from 0 to 10 (1000%).
fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("expected a number such as 0.05, got {text:?}"))?;
    if (0.0..=10.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("expected a rate from 0 to 10, got {rate}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_checked() {
        assert_eq!(parse_rate("0.01").unwrap(), 0.01);
        assert!(parse_rate("-0.1").is_err());
        assert!(parse_rate("NaN").is_err());
        assert!(parse_rate("x").is_err());
    }
}

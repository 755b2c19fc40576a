//! Maximum likelihood over positive parameters: Nelder-Mead (from the
//! `argmin` crate) over their logarithms, so that every step stays in the
//! domain.

use argmin::core::{CostFunction, Error as ArgminError, Executor, State};
use argmin::solver::neldermead::NelderMead;

/// A negative log-likelihood over the logarithms of the parameters.
struct LogSpace<F>(F);

impl<F: Fn(&[f64]) -> f64> CostFunction for LogSpace<F> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, logs: &Self::Param) -> Result<f64, ArgminError> {
        let params: Vec<f64> = logs.iter().map(|log| log.exp()).collect();
        let cost = (self.0)(&params);
        // A region where the likelihood is not finite is as bad as can be.
        Ok(if cost.is_finite() { cost } else { f64::MAX })
    }
}

/// What a fit found.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    /// The parameters.
    pub params: Vec<f64>,
    /// The negative log-likelihood there.
    pub cost: f64,
    /// The optimiser's iterations.
    pub iterations: u64,
}

/// Minimises `cost` over positive parameters, starting from `start`.
pub(super) fn minimise(
    cost: impl Fn(&[f64]) -> f64,
    start: &[f64],
    max_iterations: u64,
) -> Result<Fitted, String> {
    let logs: Vec<f64> = start.iter().map(|value| value.ln()).collect();
    // The simplex: the start, and one step along each axis.
    let mut simplex = vec![logs.clone()];
    for axis in 0..logs.len() {
        let mut vertex = logs.clone();
        vertex[axis] += 0.5;
        simplex.push(vertex);
    }
    let solver = NelderMead::new(simplex)
        .with_sd_tolerance(1e-12)
        .map_err(|error| error.to_string())?;
    let result = Executor::new(LogSpace(cost), solver)
        .configure(|state| state.max_iters(max_iterations))
        .run()
        .map_err(|error| error.to_string())?;
    let state = result.state();
    let best = state
        .get_best_param()
        .ok_or_else(|| "the optimiser found no parameters".to_owned())?;
    Ok(Fitted {
        params: best.iter().map(|log| log.exp()).collect(),
        cost: state.get_best_cost(),
        iterations: state.get_iter(),
    })
}

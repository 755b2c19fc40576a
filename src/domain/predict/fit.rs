//! Maximum likelihood over positive parameters: L-BFGS with a Moré-Thuente
//! line search, from the `argmin` crate, over the parameters' logarithms so
//! that every step stays in the domain.

use std::sync::Mutex;

use rayon::prelude::*;

use argmin::core::{CostFunction, Error as ArgminError, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

/// What a fit found.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    /// The parameters.
    pub params: Vec<f64>,
    /// The log-likelihood there, summed over the customers.
    pub log_likelihood: f64,
    /// The optimiser's iterations.
    pub iterations: u64,
}

/// A negative log-likelihood and its gradient over the parameters, seen
/// over their logarithms; the last point asked for is kept, for the line
/// search asks for the cost and the gradient of one point in turn.
struct SmoothLogSpace<F> {
    evaluate: F,
    last: Mutex<Option<Point>>,
}

/// A point over the logarithms, the cost there and its gradient.
type Point = (Vec<f64>, f64, Vec<f64>);

impl<F: Fn(&[f64]) -> (f64, Vec<f64>)> SmoothLogSpace<F> {
    fn at(&self, logs: &[f64]) -> (f64, Vec<f64>) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((known, cost, gradient)) = last.as_ref() {
            if known.as_slice() == logs {
                return (*cost, gradient.clone());
            }
        }
        // Far steps of the line search stay where the functions are finite.
        let params: Vec<f64> = logs
            .iter()
            .map(|log| log.clamp(-30.0, 30.0).exp())
            .collect();
        let (cost, by_param) = (self.evaluate)(&params);
        // d/d(ln θ) = θ d/dθ.
        let gradient: Vec<f64> = by_param.iter().zip(&params).map(|(d, p)| d * p).collect();
        *last = Some((logs.to_vec(), cost, gradient.clone()));
        (cost, gradient)
    }
}

impl<F: Fn(&[f64]) -> (f64, Vec<f64>)> CostFunction for SmoothLogSpace<F> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, logs: &Self::Param) -> Result<f64, ArgminError> {
        let (cost, _) = self.at(logs);
        Ok(if cost.is_finite() { cost } else { f64::MAX })
    }
}

impl<F: Fn(&[f64]) -> (f64, Vec<f64>)> Gradient for SmoothLogSpace<F> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, logs: &Self::Param) -> Result<Vec<f64>, ArgminError> {
        let (_, gradient) = self.at(logs);
        if gradient.iter().all(|d| d.is_finite()) {
            Ok(gradient)
        } else {
            Err(ArgminError::msg("the gradient is not finite there"))
        }
    }
}

/// Maximises a log-likelihood over `customers`, summed, which
/// `log_likelihood` gives with its gradient, over positive parameters,
/// starting from `start`: L-BFGS with a Moré-Thuente line search on the
/// negative log-likelihood per customer, so that the first step is of the
/// order of one.
pub(super) fn maximise_likelihood<const N: usize>(
    log_likelihood: impl Fn(&[f64]) -> (f64, [f64; N]),
    customers: usize,
    start: [f64; N],
    max_iterations: u64,
) -> Result<Fitted, String> {
    let n = customers as f64;
    let logs: Vec<f64> = start.iter().map(|value| value.ln()).collect();
    let problem = SmoothLogSpace {
        evaluate: |params: &[f64]| {
            let (value, gradient) = log_likelihood(params);
            (-value / n, gradient.iter().map(|d| -d / n).collect())
        },
        last: Mutex::new(None),
    };
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 7)
        .with_tolerance_grad(1e-9)
        .map_err(|error| error.to_string())?
        .with_tolerance_cost(1e-14)
        .map_err(|error| error.to_string())?;
    let result = Executor::new(problem, solver)
        .configure(|state| state.param(logs).max_iters(max_iterations))
        .run()
        .map_err(|error| error.to_string())?;
    let state = result.state();
    let best = state
        .get_best_param()
        .ok_or_else(|| "the optimiser found no parameters".to_owned())?;
    Ok(Fitted {
        params: best
            .iter()
            .map(|log| log.clamp(-30.0, 30.0).exp())
            .collect(),
        log_likelihood: -state.get_best_cost() * n,
        iterations: state.get_iter(),
    })
}

/// Items summed a chunk at a time on every core.
const CHUNK: usize = 8192;

/// Sums `term` over `items` (a likelihood and its gradient) on every core,
/// in fixed chunks added in order: the same sum, to the last bit, on every
/// run and every machine.
pub(super) fn sum_in_order<T: Sync, const N: usize>(
    items: &[T],
    term: impl Fn(&T, &mut f64, &mut [f64; N]) + Sync,
) -> (f64, [f64; N]) {
    let parts: Vec<(f64, [f64; N])> = items
        .par_chunks(CHUNK)
        .map(|chunk| {
            let (mut value, mut gradient) = (0.0, [0.0; N]);
            for item in chunk {
                term(item, &mut value, &mut gradient);
            }
            (value, gradient)
        })
        .collect();
    let (mut value, mut gradient) = (0.0, [0.0; N]);
    for (part, by) in parts {
        value += part;
        for (total, d) in gradient.iter_mut().zip(by) {
            *total += d;
        }
    }
    (value, gradient)
}

/// Asserts that `gradient` is the gradient of `at` at `params`, by central
/// finite differences.
#[cfg(test)]
pub(super) fn assert_gradient<const N: usize>(
    at: impl Fn([f64; N]) -> f64,
    params: [f64; N],
    gradient: [f64; N],
) {
    for i in 0..N {
        let step = 1e-6 * params[i];
        let (mut up, mut down) = (params, params);
        up[i] += step;
        down[i] -= step;
        let numeric = (at(up) - at(down)) / (2.0 * step);
        assert!(
            (gradient[i] - numeric).abs() < 1e-5 * numeric.abs().max(1.0),
            "parameter {i}: {} vs {numeric}",
            gradient[i]
        );
    }
}

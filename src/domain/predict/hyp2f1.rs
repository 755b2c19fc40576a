//! The Gaussian hypergeometric function 2F1(a, b; c; z) for the arguments
//! the BG/NBD conditional expectation gives it: a, b, c positive and
//! 0 ≤ z < 1, where its power series converges.

/// The most terms summed before giving up: a series that needs more is
/// `None`, so that no argument makes one call slow.
const MAX_TERMS: usize = 100_000;

/// 2F1(a, b; c; z) = Σ (a)ₙ (b)ₙ / (c)ₙ zⁿ / n!, for a, b, c > 0 and
/// 0 ≤ z < 1; `None` outside that domain, when the sum overflows, or when
/// it would take more than [`MAX_TERMS`] terms.
///
/// The sum stops once the terms left are bounded below its precision:
/// from term n on, each ratio of a term to the one before is at most
/// ρ = z · max(1, (a + n) / (n + 1)) · max(1, (b + n) / (c + n)), since
/// both fractions move monotonically towards 1; so when ρ < 1 the rest is
/// at most term · ρ / (1 − ρ).
pub fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> Option<f64> {
    let positive = |x: f64| x > 0.0 && x.is_finite();
    if !((0.0..1.0).contains(&z) && positive(a) && positive(b) && positive(c)) {
        return None;
    }
    let mut term = 1.0f64;
    let mut sum = 1.0f64;
    for n in 0..MAX_TERMS {
        let n = n as f64;
        term *= (a + n) * (b + n) / ((c + n) * (n + 1.0)) * z;
        sum += term;
        if !sum.is_finite() {
            return None;
        }
        let next = n + 1.0;
        let bound = z * ((a + next) / (next + 1.0)).max(1.0) * ((b + next) / (c + next)).max(1.0);
        if bound < 1.0 && term * bound / (1.0 - bound) <= f64::EPSILON * sum {
            return Some(sum);
        }
    }
    None
}

/// 2F1(a, b; c; z) at each of `zs`, in one pass that shares the series'
/// coefficients: about the cost of the largest z's series, plus a
/// multiply-add per term and z. `None` where [`hyp2f1`] would be `None`
/// for some z, and also when the coefficients alone overflow (then the
/// values one at a time may still be found).
///
/// The sum stops once the largest z's tail is bounded below its
/// precision, as in [`hyp2f1`]; the tail of a smaller z is smaller, term
/// by term.
pub fn hyp2f1_each(a: f64, b: f64, c: f64, zs: &[f64]) -> Option<Vec<f64>> {
    let positive = |x: f64| x > 0.0 && x.is_finite();
    if !(positive(a) && positive(b) && positive(c)) {
        return None;
    }
    if !zs.iter().all(|z| (0.0..1.0).contains(z)) {
        return None;
    }
    let Some((widest, &z)) = zs
        .iter()
        .enumerate()
        .max_by(|(_, x), (_, y)| x.total_cmp(y))
    else {
        return Some(Vec::new());
    };
    let mut coefficient = 1.0f64;
    let mut powers = vec![1.0f64; zs.len()];
    let mut sums = vec![1.0f64; zs.len()];
    for n in 0..MAX_TERMS {
        let n = n as f64;
        coefficient *= (a + n) * (b + n) / ((c + n) * (n + 1.0));
        for ((power, sum), &z) in powers.iter_mut().zip(&mut sums).zip(zs) {
            *power *= z;
            *sum += coefficient * *power;
        }
        let (term, sum) = (coefficient * powers[widest], sums[widest]);
        if !(coefficient.is_finite() && sum.is_finite()) {
            return None;
        }
        let next = n + 1.0;
        let bound = z * ((a + next) / (next + 1.0)).max(1.0) * ((b + next) / (c + next)).max(1.0);
        if bound < 1.0 && term * bound / (1.0 - bound) <= f64::EPSILON * sum {
            return Some(sums);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(found: f64, expected: f64) {
        assert!(
            (found - expected).abs() <= 1e-12 * expected.abs().max(1.0),
            "{found} vs {expected}"
        );
    }

    /// Against closed forms (Abramowitz and Stegun 15.1.3–15.1.8) and a
    /// value computed with mpmath.
    #[test]
    fn agrees_with_known_values() {
        for z in [0.0f64, 0.1, 0.5, 0.9, 0.99] {
            // 2F1(1, 1; 2; z) = −ln(1 − z) / z.
            let expected = if z == 0.0 { 1.0 } else { -(1.0 - z).ln() / z };
            close(hyp2f1(1.0, 1.0, 2.0, z).unwrap(), expected);
            // 2F1(a, b; b; z) = (1 − z)^−a.
            close(hyp2f1(2.5, 3.0, 3.0, z).unwrap(), (1.0 - z).powf(-2.5));
            // 2F1(1/2, 1; 3/2; z²) = artanh(z) / z.
            let expected = if z == 0.0 { 1.0 } else { z.atanh() / z };
            close(hyp2f1(0.5, 1.0, 1.5, z * z).unwrap(), expected);
        }
        // Against mpmath (30 digits): the CDNOW sample's first customer,
        // 39 weeks ahead, and a slowly converging case.
        let z = 39.0 / (4.4135 + 38.86 + 39.0);
        let value = hyp2f1(2.2426, 4.4258, 0.7929 + 2.4258 + 1.0, z).unwrap();
        assert!(
            (value / 4.574_342_653_511_501 - 1.0).abs() < 1e-12,
            "{value}"
        );
        let value = hyp2f1(3.7, 12.25, 5.5, 0.93).unwrap();
        assert!(
            (value / 220_890_707_909.205_88 - 1.0).abs() < 1e-10,
            "{value}"
        );
    }

    /// Parameters far out, as a fit that the data do not identify can
    /// give, are summed quickly or refused, never slowly.
    #[test]
    fn far_out_parameters_are_quick() {
        let started = std::time::Instant::now();
        let value = hyp2f1(0.5, 9.4e12, 1.9e13, 0.6).unwrap();
        // (b)ₙ / (c)ₙ is about (b / c)ⁿ: 2F1(a, 1; 1; z · b / c).
        let expected = (1.0 - 0.6 * 9.4e12 / 1.9e13f64).powf(-0.5);
        assert!(
            (value / expected - 1.0).abs() < 1e-9,
            "{value} vs {expected}"
        );
        assert_eq!(hyp2f1(1e9, 1e9, 1.0, 0.999), None);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    /// Many at once are each the one alone.
    #[test]
    fn each_agrees_with_one_at_a_time() {
        for (a, b, c) in [
            (2.2426, 4.4258, 4.2187),
            (0.3, 12.0, 0.9),
            (3.7, 12.25, 5.5),
        ] {
            let zs = [0.0, 0.1, 0.42, 0.5, 0.77, 0.93];
            let each = hyp2f1_each(a, b, c, &zs).unwrap();
            for (z, value) in zs.iter().zip(each) {
                let alone = hyp2f1(a, b, c, *z).unwrap();
                assert!(
                    (value / alone - 1.0).abs() < 1e-13,
                    "{a} {b} {c} {z}: {value} vs {alone}"
                );
            }
        }
        assert_eq!(hyp2f1_each(1.0, 1.0, 2.0, &[]), Some(vec![]));
        assert_eq!(hyp2f1_each(1.0, 1.0, 2.0, &[0.5, 1.0]), None);
    }

    #[test]
    fn is_none_outside_its_domain() {
        assert_eq!(hyp2f1(1.0, 1.0, 2.0, 1.0), None);
        assert_eq!(hyp2f1(1.0, 1.0, 2.0, -0.5), None);
        assert_eq!(hyp2f1(1.0, 1.0, 0.0, 0.5), None);
        assert_eq!(hyp2f1(f64::NAN, 1.0, 2.0, 0.5), None);
    }
}

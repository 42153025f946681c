//! Mean and 95 % confidence interval over repetitions (Student's t).

use serde::{Deserialize, Serialize};

/// Two-sided 97.5 % quantile of Student's t with `df` degrees of freedom (the 95 % CI multiplier).
pub fn student_t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => TABLE[df - 1],
        31..=60 => 2.000,
        61..=120 => 1.980,
        _ => 1.960,
    }
}

/// Mean of a sample with the half-width of its 95 % confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanCi {
    /// Arithmetic mean.
    pub mean: f64,
    /// Half-width of the 95 % CI (t · s / √n); `None` for a single value (no spread can be estimated).
    pub ci95: Option<f64>,
    /// Number of values.
    pub n: usize,
}

impl MeanCi {
    /// The mean and CI of `values`; `None` when empty.
    pub fn of(values: &[f64]) -> Option<Self> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        if n == 1 {
            return Some(Self { mean, ci95: None, n });
        }
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        Some(Self { mean, ci95: Some(student_t_975(n - 1) * (variance / n as f64).sqrt()), n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_ci_matches_a_worked_example() {
        // Values 10, 12, 14: mean 12, s = 2, t(2) = 4.303, half-width = 4.303·2/√3 = 4.9687.
        let ci = MeanCi::of(&[10.0, 12.0, 14.0]).unwrap();
        assert_eq!(ci.mean, 12.0);
        assert!((ci.ci95.unwrap() - 4.9687).abs() < 1e-3, "{ci:?}");
        assert_eq!(ci.n, 3);
    }

    #[test]
    fn single_value_and_empty() {
        assert_eq!(MeanCi::of(&[5.0]).unwrap(), MeanCi { mean: 5.0, ci95: None, n: 1 });
        assert!(MeanCi::of(&[]).is_none());
    }

    #[test]
    fn t_quantiles_decrease_towards_the_normal() {
        assert_eq!(student_t_975(1), 12.706);
        assert_eq!(student_t_975(10), 2.228);
        assert_eq!(student_t_975(1000), 1.960);
        for df in 1..200 {
            assert!(student_t_975(df) >= student_t_975(df + 1));
        }
    }
}

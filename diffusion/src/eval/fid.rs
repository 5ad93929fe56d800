//! The Fréchet distance between two sets of feature vectors, each summarized as a Gaussian (Heusel et al.
//! 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", §3; with
//! Inception features it is the FID; here the features are those of [`crate::eval::classifier`]):
//! ```text
//! d² = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½)
//! tr (Σ₁ Σ₂)^½ = tr (Σ₁^½ Σ₂ Σ₁^½)^½       (Σ₁ Σ₂ is similar to the symmetric Σ₁^½ Σ₂ Σ₁^½, so they share
//!                                          their eigenvalues, and the square roots of those sum to the trace)
//! ```
//! Both square roots come from symmetric eigendecompositions A = V diag(λ) Vᵀ ⇒ A^½ = V diag(√λ) Vᵀ,
//! computed by the cyclic Jacobi method (Golub & Van Loan, "Matrix Computations", §8.5): rotate away each
//! off-diagonal entry in turn until none is left. Slow for big matrices, exact enough, and short.
//!
//! The number means little alone: it depends on the features and shrinks with the sample count. Print it next
//! to its floor (two disjoint halves of real data) and its ceiling (real data against noise).

use autograd::Tensor;

/// Mean [d] and covariance [d·d, row-major; divided by n − 1] of the rows of `features` [n, d], in f64.
pub fn mean_cov(features: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let (n, d) = (features.shape()[0], features.shape()[1]);
    let mut mean = vec![0.0; d];
    for row in features.data().chunks(d) {
        mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64);
    }
    mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
    let mut cov = vec![0.0; d * d];
    for row in features.data().chunks(d) {
        let centred: Vec<f64> = row.iter().zip(&mean).map(|(&v, m)| v as f64 - m).collect();
        for i in 0..d {
            for j in i..d {
                cov[i * d + j] += centred[i] * centred[j];
            }
        }
    }
    let denominator = n.saturating_sub(1).max(1) as f64;
    for i in 0..d {
        for j in i..d {
            cov[i * d + j] /= denominator;
            cov[j * d + i] = cov[i * d + j];
        }
    }
    (mean, cov)
}

/// Eigenvalues and eigenvectors of the symmetric `a` (n·n, row-major) by cyclic Jacobi rotations: returns
/// (λ, V) with V's columns the eigenvectors, A = V diag(λ) Vᵀ.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(a.len(), n * n, "symmetric_eigen: {} entries for a {n}×{n} matrix", a.len());
    let mut a = a.to_vec();
    let mut v = vec![0.0; n * n];
    (0..n).for_each(|i| v[i * n + i] = 1.0);
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation (c, s) in the (p, q) plane that zeroes a_pq: t = tan θ, the smaller root of
                // t² + 2θ't − 1 = 0 with θ' = (a_qq − a_pp)/(2 a_pq).
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for r in 0..n {
                    let (arp, arq) = (a[r * n + p], a[r * n + q]);
                    a[r * n + p] = c * arp - s * arq;
                    a[r * n + q] = s * arp + c * arq;
                }
                for r in 0..n {
                    let (apr, aqr) = (a[p * n + r], a[q * n + r]);
                    a[p * n + r] = c * apr - s * aqr;
                    a[q * n + r] = s * apr + c * aqr;
                }
                for r in 0..n {
                    let (vrp, vrq) = (v[r * n + p], v[r * n + q]);
                    v[r * n + p] = c * vrp - s * vrq;
                    v[r * n + q] = s * vrp + c * vrq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// The square root of a symmetric positive semi-definite matrix (eigenvalues below 0, rounding noise, count
/// as 0).
pub fn sqrt_psd(a: &[f64], n: usize) -> Vec<f64> {
    let (lambda, v) = symmetric_eigen(a, n);
    let root: Vec<f64> = lambda.iter().map(|&l| l.max(0.0).sqrt()).collect();
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            out[i * n + j] = (0..n).map(|k| v[i * n + k] * root[k] * v[j * n + k]).sum();
        }
    }
    out
}

/// tr (Σ₁ Σ₂)^½ via the symmetric Σ₁^½ Σ₂ Σ₁^½ (see the module doc).
pub fn trace_sqrt_product(s1: &[f64], s2: &[f64], n: usize) -> f64 {
    let r = sqrt_psd(s1, n);
    let matmul = |x: &[f64], y: &[f64]| {
        let mut out = vec![0.0; n * n];
        for i in 0..n {
            for k in 0..n {
                let xik = x[i * n + k];
                for j in 0..n {
                    out[i * n + j] += xik * y[k * n + j];
                }
            }
        }
        out
    };
    let mut m = matmul(&matmul(&r, s2), &r);
    // Symmetrize away rounding before the eigendecomposition.
    for i in 0..n {
        for j in i + 1..n {
            let avg = 0.5 * (m[i * n + j] + m[j * n + i]);
            m[i * n + j] = avg;
            m[j * n + i] = avg;
        }
    }
    symmetric_eigen(&m, n).0.iter().map(|&l| l.max(0.0).sqrt()).sum()
}

/// The Fréchet distance d² between the Gaussians (μ₁, Σ₁) and (μ₂, Σ₂) in `d` dimensions.
pub fn frechet_distance(mu1: &[f64], s1: &[f64], mu2: &[f64], s2: &[f64], d: usize) -> f64 {
    let mean_term: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b).powi(2)).sum();
    let trace = |s: &[f64]| (0..d).map(|i| s[i * d + i]).sum::<f64>();
    (mean_term + trace(s1) + trace(s2) - 2.0 * trace_sqrt_product(s1, s2, d)).max(0.0)
}

/// The Fréchet distance between two sets of feature rows [n₁, d] and [n₂, d].
pub fn frechet_distance_of(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape()[1], b.shape()[1], "frechet_distance_of: features {:?} and {:?}", a.shape(), b.shape());
    let (mu1, s1) = mean_cov(a);
    let (mu2, s2) = mean_cov(b);
    frechet_distance(&mu1, &s1, &mu2, &s2, a.shape()[1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn random_spd(n: usize, seed: u64) -> Vec<f64> {
        let b = Tensor::randn(&[n, n], &mut StdRng::seed_from_u64(seed));
        let b: Vec<f64> = b.data().iter().map(|&v| v as f64).collect();
        let mut s = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                s[i * n + j] =
                    (0..n).map(|k| b[i * n + k] * b[j * n + k]).sum::<f64>() + if i == j { 0.1 } else { 0.0 };
            }
        }
        s
    }

    #[test]
    fn eigendecomposition_reconstructs_the_matrix_with_orthonormal_vectors() {
        let n = 13;
        let a = random_spd(n, 1);
        let (lambda, v) = symmetric_eigen(&a, n);
        for i in 0..n {
            for j in 0..n {
                let back: f64 = (0..n).map(|k| v[i * n + k] * lambda[k] * v[j * n + k]).sum();
                assert!((back - a[i * n + j]).abs() < 1e-9 * (1.0 + a[i * n + j].abs()), "A[{i},{j}]");
                let dot: f64 = (0..n).map(|k| v[k * n + i] * v[k * n + j]).sum();
                assert!((dot - (i == j) as u8 as f64).abs() < 1e-10, "VᵀV[{i},{j}]");
            }
        }
        let r = sqrt_psd(&a, n);
        for i in 0..n {
            for j in 0..n {
                let sq: f64 = (0..n).map(|k| r[i * n + k] * r[k * n + j]).sum();
                assert!((sq - a[i * n + j]).abs() < 1e-8 * (1.0 + a[i * n + j].abs()));
            }
        }
    }

    #[test]
    fn closed_forms_of_the_distance() {
        // Diagonal covariances: Σ (σ₁ᵢ − σ₂ᵢ)² over standard deviations, plus the squared mean distance.
        let (var1, var2) = ([1.0, 4.0, 9.0], [4.0, 4.0, 1.0]);
        let diag = |v: &[f64; 3]| {
            let mut s = vec![0.0; 9];
            (0..3).for_each(|i| s[i * 3 + i] = v[i]);
            s
        };
        let d = frechet_distance(&[0.0, 1.0, 0.0], &diag(&var1), &[3.0, 1.0, 0.0], &diag(&var2), 3);
        let expected = 9.0 + (1.0f64 - 2.0).powi(2) + 0.0 + (3.0f64 - 1.0).powi(2);
        assert!((d - expected).abs() < 1e-9, "{d} vs {expected}");
        // Identical Gaussians: 0. The distance is symmetric although Σ₁Σ₂ ≠ Σ₂Σ₁.
        let (s1, s2) = (random_spd(9, 2), random_spd(9, 3));
        let mu = vec![0.5; 9];
        assert!(frechet_distance(&mu, &s1, &mu, &s1, 9).abs() < 1e-8);
        let (d12, d21) = (frechet_distance(&mu, &s1, &mu, &s2, 9), frechet_distance(&mu, &s2, &mu, &s1, 9));
        assert!(d12 > 1.0 && (d12 - d21).abs() < 1e-8 * d12, "{d12} {d21}");
    }

    #[test]
    fn samples_of_one_distribution_are_closer_than_samples_of_two() {
        let mut rng = StdRng::seed_from_u64(4);
        let a = Tensor::randn(&[2000, 4], &mut rng);
        let b = Tensor::randn(&[2000, 4], &mut rng);
        let shifted = Tensor::from_vec(&[2000, 4], b.data().iter().map(|v| v * 2.0 + 0.5).collect());
        let same = frechet_distance_of(&a, &b);
        let other = frechet_distance_of(&a, &shifted);
        // N(0, I) vs N(0.5, 4I) in 4 dims: 4·0.25 + 4·(2 − 1)² = 5.
        assert!(same < 0.05, "{same}");
        assert!((other - 5.0).abs() < 0.5, "{other}");
    }
}

//! The update rules of the samplers after DDIM, written in the coordinates where they are simplest.
//!
//! Every VP model (x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε) is also a "variance exploding" one (Karras et al. 2022,
//! "Elucidating the Design Space of Diffusion-Based Generative Models", §3 and Table 1): with
//! ```text
//! σ = √((1 − ᾱ)/ᾱ),   x̃ = x/√ᾱ = x_0 + σ ε,   D(x̃, σ) = x̂_0 (the denoiser),   λ = −ln σ (half the log-SNR)
//! ```
//! the probability-flow ODE is dx̃/dσ = (x̃ − D)/σ, and sampling integrates it (or its SDE) from σ_max down to
//! σ = 0. In these coordinates:
//! ```text
//! Euler (= DDIM with η = 0):   x̃' = x̃ + (σ' − σ)·d,   d = (x̃ − D)/σ
//! Heun (EDM Algorithm 1):      x̃* = Euler step;  d' = (x̃* − D(x̃*, σ'))/σ';  x̃' = x̃ + (σ' − σ)(d + d')/2
//! Euler ancestral:             σ_up = min(σ', σ'√(σ² − σ'²)/σ), σ_down = √(σ'² − σ_up²);
//!                              x̃' = x̃ + (σ_down − σ)·d + σ_up z
//! ```
//! and the multistep solvers in λ, with h = λ' − λ (so e^(−h) = σ'/σ) and the denoised outputs of the last
//! steps m₀ (now), m₁, m₂ at λ, λ₁, λ₂ (Lu et al. 2022, "DPM-Solver++"; diffusers'
//! `DPMSolverMultistepScheduler` is the reference for the formulas):
//! ```text
//! order 1 (DDIM):   x̃' = e^(−h) x̃ − (e^(−h) − 1) m₀
//! 2M:               x̃' = order 1 − ½(e^(−h) − 1) D₁,   D₁ = (m₀ − m₁)/r₀,   r₀ = (λ − λ₁)/h
//! 3M:               x̃' = order 1 + ((e^(−h) − 1)/h + 1) D₁ − ((e^(−h) − 1 + h)/h² − ½) D₂,
//!                   D₁⁰ = (m₀ − m₁)/r₀, D₁¹ = (m₁ − m₂)/r₁, D₁ = D₁⁰ + r₀/(r₀ + r₁)(D₁⁰ − D₁¹), D₂ = (D₁⁰ − D₁¹)/(r₀ + r₁)
//! SDE 2M:           x̃' = e^(−2h) x̃ + (1 − e^(−2h)) (m₀ + ½ D₁) + σ' √(1 − e^(−2h)) z
//! ```
//! UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework", the B(h) = e^(−h) − 1 "bh2"
//! variant; diffusers' `UniPCMultistepScheduler` the reference) is [`unipc_predict`] and [`unipc_correct`].
//! Each function here takes x̃ and the denoised outputs as slices and returns the new x̃.

/// σ of a timestep with cumulative signal ᾱ.
pub fn sigma_of(alpha_bar: f64) -> f64 {
    ((1.0 - alpha_bar) / alpha_bar).sqrt()
}

/// out = Σ_k c_k · v_k, elementwise.
fn combine(terms: &[(f64, &[f32])]) -> Vec<f32> {
    let n = terms[0].1.len();
    (0..n).map(|i| terms.iter().map(|(c, v)| *c as f32 * v[i]).sum()).collect()
}

/// One Euler step of the probability-flow ODE from σ to σ' (σ' = 0 gives D).
pub fn euler(x: &[f32], denoised: &[f32], sigma: f64, sigma_next: f64) -> Vec<f32> {
    // x̃' = x̃ + (σ' − σ)(x̃ − D)/σ = (σ'/σ) x̃ + (1 − σ'/σ) D
    let r = sigma_next / sigma;
    combine(&[(r, x), (1.0 - r, denoised)])
}

/// Heun's correction of an Euler step: the average of the slopes at σ (from D) and at σ' (from D', the
/// denoiser at the Euler step's x̃*).
pub fn heun(
    x: &[f32],
    denoised: &[f32],
    x_euler: &[f32],
    denoised_next: &[f32],
    sigma: f64,
    sigma_next: f64,
) -> Vec<f32> {
    // d = (x̃ − D)/σ, d' = (x̃* − D')/σ';  x̃' = x̃ + (σ' − σ)(d + d')/2
    let dt = sigma_next - sigma;
    let (a, b) = (dt / (2.0 * sigma), dt / (2.0 * sigma_next));
    combine(&[(1.0 + a, x), (-a, denoised), (b, x_euler), (-b, denoised_next)])
}

/// The split of an ancestral step from σ to σ': (σ_down, σ_up), σ_down² + σ_up² = σ'².
pub fn ancestral_split(sigma: f64, sigma_next: f64) -> (f64, f64) {
    let up = (sigma_next * (sigma * sigma - sigma_next * sigma_next).max(0.0).sqrt() / sigma).min(sigma_next);
    ((sigma_next * sigma_next - up * up).max(0.0).sqrt(), up)
}

/// One Euler ancestral step: deterministic to σ_down, then fresh noise `z` of scale σ_up.
pub fn euler_ancestral(x: &[f32], denoised: &[f32], sigma: f64, sigma_next: f64, z: &[f32]) -> Vec<f32> {
    let (down, up) = ancestral_split(sigma, sigma_next);
    let mut out = euler(x, denoised, sigma, down);
    out.iter_mut().zip(z).for_each(|(o, z)| *o += up as f32 * z);
    out
}

/// A denoised output of an earlier step and its λ.
pub struct Past<'a> {
    pub denoised: &'a [f32],
    pub lambda: f64,
}

/// One DPM-Solver++ multistep step of order `past.len() + 1` (1 to 3) from λ to λ': `now` is m₀ at λ,
/// `past` m₁ (and m₂), newest first.
pub fn dpm_solver_pp(x: &[f32], now: &[f32], lambda: f64, lambda_next: f64, past: &[Past]) -> Vec<f32> {
    let h = lambda_next - lambda;
    let em = (-h).exp_m1(); // e^(−h) − 1
    let decay = (-h).exp();
    match past {
        [] => combine(&[(decay, x), (-em, now)]),
        [p1] => {
            // x̃' = e^(−h) x̃ − (e^(−h) − 1)(m₀ + ½ D₁),  D₁ = (m₀ − m₁)/r₀
            let r0 = (lambda - p1.lambda) / h;
            let c = 0.5 / r0;
            combine(&[(decay, x), (-em * (1.0 + c), now), (em * c, p1.denoised)])
        }
        [p1, p2, ..] => {
            let (r0, r1) = ((lambda - p1.lambda) / h, (p1.lambda - p2.lambda) / h);
            // In terms of m₀, m₁, m₂: D₁⁰ = (m₀ − m₁)/r₀, D₁¹ = (m₁ − m₂)/r₁.
            let (k1, k2) = (em / h + 1.0, (em + h) / (h * h) - 0.5); // the coefficients of D₁ and D₂
            let w = r0 / (r0 + r1);
            // D₁ = (1 + w) D₁⁰ − w D₁¹,  D₂ = (D₁⁰ − D₁¹)/(r₀ + r₁)
            let (a1, b1) = ((1.0 + w) * k1 - k2 / (r0 + r1), -w * k1 + k2 / (r0 + r1)); // of D₁⁰, D₁¹
            let (c0, c1, c2) = (a1 / r0, -a1 / r0 + b1 / r1, -b1 / r1); // of m₀, m₁, m₂
            combine(&[(decay, x), (-em + c0, now), (c1, p1.denoised), (c2, p2.denoised)])
        }
    }
}

/// One step of the SDE variant of DPM-Solver++(2M) (order 1 without `past`), with noise `z`.
pub fn dpm_solver_pp_sde(
    x: &[f32],
    now: &[f32],
    lambda: f64,
    lambda_next: f64,
    past: Option<&Past>,
    sigma_next: f64,
    z: &[f32],
) -> Vec<f32> {
    let h = lambda_next - lambda;
    let keep = (-2.0 * h).exp(); // e^(−2h)
    let (gain, noise) = (1.0 - keep, sigma_next * (1.0 - keep).max(0.0).sqrt());
    match past {
        None => combine(&[(keep, x), (gain, now), (noise, z)]),
        Some(p1) => {
            // (1 − e^(−2h)) (m₀ + ½ D₁),  D₁ = (m₀ − m₁)/r₀
            let c = 0.5 * h / (lambda - p1.lambda);
            combine(&[(keep, x), (gain * (1.0 + c), now), (-gain * c, p1.denoised), (noise, z)])
        }
    }
}

/// UniPC's coefficients for order `order` over the points at ratios `rks` (r_k = (λ_k − λ)/h of the past
/// points, then 1): the R matrix (rows r^(i−1)) and b (bh2: B(h) = e^(−h) − 1), for h = λ' − λ.
fn unipc_system(h: f64, rks: &[f64], order: usize) -> (Vec<Vec<f64>>, Vec<f64>, f64) {
    let hh = -h;
    let h_phi_1 = hh.exp_m1();
    let b_h = hh.exp_m1();
    let mut h_phi_k = h_phi_1 / hh - 1.0;
    let mut factorial = 1.0;
    let (mut r, mut b) = (Vec::new(), Vec::new());
    for i in 1..=order {
        r.push(rks.iter().map(|rk| rk.powi(i as i32 - 1)).collect());
        b.push(h_phi_k * factorial / b_h);
        factorial *= (i + 1) as f64;
        h_phi_k = h_phi_k / hh - 1.0 / factorial;
    }
    (r, b, b_h)
}

/// Solves the small system a·x = b (at most 3×3) by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs())).unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            let pivot_row = a[col].clone();
            a[row].iter_mut().zip(&pivot_row).skip(col).for_each(|(v, p)| *v -= f * p);
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x
}

/// The order-`past.len() + 1` UniPC predictor (UniP) from λ to λ': `now` is m₀, `past` the earlier
/// outputs, newest first. x̃' = e^(−h) x̃ − (e^(−h) − 1) m₀ − B(h) Σ_k ρ_k (m_k − m₀)/r_k.
pub fn unipc_predict(x: &[f32], now: &[f32], lambda: f64, lambda_next: f64, past: &[Past]) -> Vec<f32> {
    let h = lambda_next - lambda;
    let order = past.len() + 1;
    let mut rks: Vec<f64> = past.iter().map(|p| (p.lambda - lambda) / h).collect();
    rks.push(1.0);
    let (r, b, b_h) = unipc_system(h, &rks, order);
    let rhos: Vec<f64> = match order {
        1 => vec![],
        2 => vec![0.5],
        _ => solve(r[..order - 1].iter().map(|row| row[..order - 1].to_vec()).collect(), b[..order - 1].to_vec()),
    };
    let (mut terms, c_now) = unipc_terms(x, now, h, b_h, past, &rhos, &rks);
    terms[1].0 += c_now;
    combine(&terms)
}

/// The terms both UniPC updates share: e^(−h) x̃ − (e^(−h) − 1) m₀ − B(h) Σ_k ρ_k (m_k − m₀)/r_k over `past`,
/// with the m₀ part of the sum returned apart (the caller adds it to m₀'s coefficient).
fn unipc_terms<'a>(
    x: &'a [f32],
    now: &'a [f32],
    h: f64,
    b_h: f64,
    past: &[Past<'a>],
    rhos: &[f64],
    rks: &[f64],
) -> (Vec<(f64, &'a [f32])>, f64) {
    let mut terms = vec![((-h).exp(), x), (-(-h).exp_m1(), now)];
    let mut c_now = 0.0;
    for (k, p) in past.iter().enumerate() {
        let c = -b_h * rhos[k] / rks[k];
        terms.push((c, p.denoised));
        c_now -= c;
    }
    (terms, c_now)
}

/// The UniPC corrector (UniC) of order `past.len() + 1`: given the step from λ (where the sample was
/// `x_before`, with output m₀ = `before`, and `past` earlier ones) to λ', and the output `after` at the
/// predicted sample, the corrected sample at λ'. Its only evaluation is the one the next step needs anyway.
pub fn unipc_correct(
    x_before: &[f32],
    before: &[f32],
    after: &[f32],
    lambda: f64,
    lambda_next: f64,
    past: &[Past],
) -> Vec<f32> {
    let h = lambda_next - lambda;
    let order = past.len() + 1;
    let mut rks: Vec<f64> = past.iter().map(|p| (p.lambda - lambda) / h).collect();
    rks.push(1.0);
    let (r, b, b_h) = unipc_system(h, &rks, order);
    let rhos = if order == 1 { vec![0.5] } else { solve(r, b) };
    // x̃' = e^(−h) x̃ − (e^(−h) − 1) m₀ − B(h) (Σ_k ρ_k (m_k − m₀)/r_k + ρ_last (m' − m₀))
    let (mut terms, c_before) = unipc_terms(x_before, before, h, b_h, past, &rhos, &rks);
    let c_after = -b_h * rhos[order - 1];
    terms.push((c_after, after));
    terms[1].0 += c_before - c_after;
    combine(&terms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_small_solver_solves() {
        let a = vec![vec![2.0, 1.0, -1.0], vec![-3.0, -1.0, 2.0], vec![-2.0, 1.0, 2.0]];
        let x = solve(a, vec![8.0, -11.0, -3.0]);
        for (got, want) in x.iter().zip([2.0, 3.0, -1.0]) {
            assert!((got - want).abs() < 1e-12, "{x:?}");
        }
    }

    /// DPM-Solver++(3M) as diffusers writes it (D₁, D₂ from the divided differences) equals this file's
    /// expansion in m₀, m₁, m₂.
    #[test]
    fn the_3m_expansion_is_diffusers_formula() {
        let (x, m0, m1, m2) = (1.2f64, 0.7f64, 0.4f64, -0.3f64);
        let (lambda2, lambda1, lambda, lambda_next) = (-0.9f64, -0.4, 0.1, 0.45);
        let (h, r0, r1) = (
            lambda_next - lambda,
            (lambda - lambda1) / (lambda_next - lambda),
            (lambda1 - lambda2) / (lambda_next - lambda),
        );
        let (d1_0, d1_1) = ((m0 - m1) / r0, (m1 - m2) / r1);
        let d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1);
        let d2 = (d1_0 - d1_1) / (r0 + r1);
        let em = (-h).exp() - 1.0;
        let want = (-h).exp() * x - em * m0 + (em / h + 1.0) * d1 - ((em + h) / (h * h) - 0.5) * d2;
        let (p1, p2) = ([m1 as f32], [m2 as f32]);
        let past = [Past { denoised: &p1, lambda: lambda1 }, Past { denoised: &p2, lambda: lambda2 }];
        let got = dpm_solver_pp(&[x as f32], &[m0 as f32], lambda, lambda_next, &past)[0];
        assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
    }

    /// With constant denoised outputs every solver is exact and they all agree: x̃' = D + (σ'/σ)(x̃ − D).
    #[test]
    fn a_constant_denoiser_is_integrated_exactly_by_every_rule() {
        let (x, d) = (vec![3.0f32, -1.0], vec![0.5f32, 0.25]);
        let (sigma, sigma_next) = (2.0f64, 0.5f64);
        let (lambda, lambda_next) = (-sigma.ln(), -sigma_next.ln());
        let want: Vec<f32> = x.iter().zip(&d).map(|(x, d)| d + 0.25 * (x - d)).collect();
        let past = [Past { denoised: &d, lambda: lambda - 0.3 }, Past { denoised: &d, lambda: lambda - 0.7 }];
        let results = [
            euler(&x, &d, sigma, sigma_next),
            heun(&x, &d, &euler(&x, &d, sigma, sigma_next), &d, sigma, sigma_next),
            dpm_solver_pp(&x, &d, lambda, lambda_next, &[]),
            dpm_solver_pp(&x, &d, lambda, lambda_next, &past[..1]),
            dpm_solver_pp(&x, &d, lambda, lambda_next, &past),
            unipc_predict(&x, &d, lambda, lambda_next, &past[..1]),
            unipc_predict(&x, &d, lambda, lambda_next, &past),
            unipc_correct(&x, &d, &d, lambda, lambda_next, &past),
        ];
        for (i, got) in results.iter().enumerate() {
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "rule {i}: {got:?} want {want:?}");
            }
        }
        let (down, up) = ancestral_split(sigma, sigma_next);
        assert!((down * down + up * up - sigma_next * sigma_next).abs() < 1e-12 && up <= sigma_next);
    }
}

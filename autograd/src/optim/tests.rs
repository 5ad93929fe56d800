use super::*;
use crate::params::{ParamId, ParamStore};
use crate::tape::Gradients;
use crate::tensor::Tensor;

/// Runs `opt` on a one-element parameter starting at p0 over the gradient sequence; returns the final value.
fn run(opt: &mut dyn Optimizer, p0: f32, grads: &[f32]) -> f32 {
    let mut params = ParamStore::new();
    let id = params.add("p", Tensor::from_vec(&[1], vec![p0]));
    for &g in grads {
        let mut gr = Gradients::default();
        gr.set_param(id, Tensor::from_vec(&[1], vec![g]));
        opt.step(&mut params, &gr);
    }
    params.get(id).data()[0]
}

#[test]
fn adam_with_a_constant_gradient_moves_lr_per_step() {
    // With g constant, m_t = g(1 − β₁ᵗ) and v_t = g²(1 − β₂ᵗ), so the bias corrections cancel exactly and
    // every step is lr · g / (|g| + ε): after n steps p = p₀ − n · lr · sign(g) (to ε).
    let p = run(&mut Adam::new(0.01), 1.0, &[0.3; 10]);
    assert!((p - (1.0 - 10.0 * 0.01)).abs() < 1e-5, "{p}");
}

#[test]
fn adam_adam_l2_and_adamw_match_pytorch_algorithm() {
    // Values from adam_reference.py (float64, PyTorch's algorithm step by step).
    let grads = [1.0, -2.0, 0.5, 3.0, -0.25];
    let adam = run(&mut Adam::new(0.1), 0.5, &grads);
    let adam_l2 = {
        let mut opt = Adam::new(0.1);
        opt.weight_decay = 0.1;
        run(&mut opt, 0.5, &grads)
    };
    let adamw = run(&mut Adam::adamw(0.1, 0.1), 0.5, &grads);
    for (got, want) in [(adam, 0.381_239_85), (adam_l2, 0.371_000_48), (adamw, 0.359_71)] {
        assert!((got - want).abs() < 2e-6, "{got} vs {want}");
    }
}

#[test]
fn adamw_with_zero_gradient_only_decays() {
    // g = 0 keeps m = v = 0, so the Adam step is 0/(0 + ε) = 0 and p = p₀ (1 − lr·wd)ⁿ exactly.
    let p = run(&mut Adam::adamw(0.1, 0.5), 2.0, &[0.0; 3]);
    assert!((p - 2.0 * 0.95f32.powi(3)).abs() < 1e-6);
}

#[test]
fn sgd_momentum_accumulates_velocity() {
    // g = 1 each step, μ = 0.9: buffers 1, 1.9, 2.71, so p = 1 − 0.1·(1 + 1.9 + 2.71) = 0.439.
    let p = run(&mut Sgd::new(0.1, 0.9), 1.0, &[1.0; 3]);
    assert!((p - 0.439).abs() < 1e-6, "{p}");
    // Nesterov: steps use g + μ·b = 1.9, 2.71, 3.439, so p = 1 − 0.1·8.049 = 0.1951.
    let mut nesterov = Sgd::new(0.1, 0.9);
    nesterov.nesterov = true;
    let p = run(&mut nesterov, 1.0, &[1.0; 3]);
    assert!((p - 0.1951).abs() < 1e-6, "{p}");
}

#[test]
fn parameters_without_gradient_are_untouched() {
    let mut params = ParamStore::new();
    let a = params.add("a", Tensor::ones(&[2]));
    let b = params.add("b", Tensor::ones(&[2]));
    let mut g = Gradients::default();
    g.set_param(a, Tensor::ones(&[2]));
    let mut opt = Adam::adamw(0.1, 0.1);
    opt.step(&mut params, &g);
    assert_eq!(params.get(b).data(), &[1.0, 1.0]);
    assert!(opt.state()[b.0].is_none());
}

#[test]
fn clip_grad_norm_scales_to_the_bound() {
    let mut g = Gradients::default();
    g.set_param(ParamId(0), Tensor::from_vec(&[2], vec![3.0, 0.0]));
    g.set_param(ParamId(1), Tensor::from_vec(&[1], vec![4.0]));
    let norm = clip_grad_norm(&mut g, 1.0);
    assert_eq!(norm, 5.0); // √(9 + 16)
    assert!((g.param(ParamId(0)).unwrap().data()[0] - 0.6).abs() < 1e-6);
    assert!((g.param(ParamId(1)).unwrap().data()[0] - 0.8).abs() < 1e-6);
    // Below the bound nothing changes.
    assert!((clip_grad_norm(&mut g, 10.0) - 1.0).abs() < 1e-5);
    assert!((g.param(ParamId(1)).unwrap().data()[0] - 0.8).abs() < 1e-6);
}

#[test]
fn ema_follows_its_recurrence() {
    let mut params = ParamStore::new();
    let id = params.add("w", Tensor::zeros(&[1]));
    let mut ema = Ema::new(&params, 0.5);
    params.get_mut(id).data_mut()[0] = 1.0;
    // Warmup: d₀ = min(0.5, 1/10) = 0.1, d₁ = min(0.5, 2/11) = 2/11, then 0.5 from n = 8 on ((1+n)/(10+n) ≥ 0.5).
    ema.update(&params);
    assert!((ema.params().get(id).data()[0] - 0.9).abs() < 1e-6); // 0.1·0 + 0.9·1
    ema.update(&params);
    assert!((ema.params().get(id).data()[0] - (1.0 - 0.1 * 2.0 / 11.0)).abs() < 1e-6);
    for _ in 2..8 {
        ema.update(&params);
    }
    assert_eq!(ema.current_decay(), 0.5);
}

/// The warmup caps every decay at (1 + n)/(10 + n), 2,250/2,259 ≈ 0.99602 at the main job's last (2,250th)
/// update: over 2,250 updates 0.998 and 0.999 give the same average to the bit (the README's "The recipe"),
/// while 0.995, capped from the 1,791st update on, does not.
#[test]
fn ema_decays_above_the_warmups_cap_give_the_same_average() {
    let mut params = ParamStore::new();
    let id = params.add("w", Tensor::zeros(&[3]));
    let mut emas = [0.999, 0.998, 0.995].map(|d| Ema::new(&params, d));
    for n in 0..2250 {
        params.get_mut(id).data_mut().copy_from_slice(&[n as f32, (n as f32 * 0.37).sin(), 1.0 / (1.0 + n as f32)]);
        emas.iter_mut().for_each(|ema| ema.update(&params));
    }
    let avg = |i: usize| emas[i].params().get(id).data().to_vec();
    assert_eq!(avg(0), avg(1));
    assert_ne!(avg(0), avg(2));
    let cap = emas[0].current_decay(); // the decay of the 2,251st update: 2,251/2,260
    assert!(cap < 0.9961 && cap > 0.996, "{cap}");
}

#[test]
fn adam_update_is_bit_identical_at_every_simd_level() {
    let n = 100_003;
    let g = Tensor::randn_seeded(&[n], 1);
    let h = AdamStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
        decoupled: true,
        step_size: 1e-3 / (1.0 - 0.9f32.powi(3)),
        bias_correction2_sqrt: (1.0 - 0.999f32.powi(3)).sqrt(),
    };
    let run = |level| {
        let (mut p, mut m, mut v) = (Tensor::randn_seeded(&[n], 2).into_vec(), vec![0.1; n], vec![0.2; n]);
        adam_update_at(level, &mut p, g.data(), &mut m, &mut v, h);
        (p, m, v)
    };
    let baseline = run(crate::cpu::Simd::Baseline);
    for level in crate::cpu::available() {
        assert!(run(level) == baseline, "{level:?}");
    }
}

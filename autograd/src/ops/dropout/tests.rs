use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::gradcheck::gradcheck;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

#[test]
fn dropout_gradcheck_with_a_fixed_mask() {
    // The closure reseeds, so every evaluation draws the same mask and the function is deterministic.
    gradcheck(&[Tensor::randn_seeded(&[4, 9], 1)], |t, v| t.dropout(&v[0], 0.3, &mut StdRng::seed_from_u64(5)))
        .unwrap();
}

#[test]
fn dropout_keeps_the_mean_and_drops_about_p() {
    let x = Var::constant(Tensor::ones(&[100_000]));
    let y = Tape::new().dropout(&x, 0.25, &mut StdRng::seed_from_u64(0));
    let zeros = y.value().data().iter().filter(|&&v| v == 0.0).count() as f32 / 100_000.0;
    let mean = y.value().data().iter().sum::<f32>() / 100_000.0;
    assert!((zeros - 0.25).abs() < 0.01, "dropped {zeros}");
    assert!((mean - 1.0).abs() < 0.02, "mean {mean}");
    assert!(y.value().data().iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
}

#[test]
#[should_panic(expected = "dropout: p = 1 must be in [0, 1)")]
fn dropout_rejects_p_one() {
    Tape::new().dropout(&Var::constant(Tensor::ones(&[2])), 1.0, &mut StdRng::seed_from_u64(0));
}

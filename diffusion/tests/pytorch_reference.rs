//! The `small` U-Net against its PyTorch twin: the output at fixed inputs and a few parameter gradients of
//! a fixed loss, from `reference/small_unet.txt`, which `reference/small_unet.py` wrote (its docstring
//! gives the weights formula, the inputs and the loss; this test needs no Python). Every kind of layer the
//! U-Net has is on the path: 3×3 convolutions at stride 1 and 2, 1×1 convolutions, group norm (fused with
//! SiLU and alone), attention, nearest upsampling, concatenation, the time embedding and its MLP.

use autograd::{ParamId, ParamStore, Tape, Tensor};
use diffusion::model::unet::{UNet, UNetConfig};

/// `values[j] = f(j)` in float64, rounded to float32, as the script computes them.
fn formula(n: usize, f: impl Fn(f64) -> f64) -> Vec<f32> {
    (0..n).map(|j| f(j as f64) as f32).collect()
}

/// The script's weights: parameter i's element j from sin(0.7 j + 1.9 i + 0.3).
fn fill(params: &mut ParamStore) {
    for i in 0..params.len() {
        let t = params.get_mut(ParamId(i));
        let (n, shape) = (t.numel(), t.shape().to_vec());
        let fan_in = (n / shape[0]) as f64;
        let values = formula(n, |j| {
            let v = (0.7 * j + 1.9 * i as f64 + 0.3).sin();
            if shape.len() >= 2 {
                v / fan_in.sqrt()
            } else {
                0.5 + 0.25 * v
            }
        });
        *t = Tensor::from_vec(&shape, values);
    }
}

/// The fixture's lines: (kind, parameter index, the twin's name, values).
fn reference() -> Vec<(String, i64, String, Vec<f32>)> {
    let text = include_str!("reference/small_unet.txt");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|line| {
            let mut it = line.split_whitespace();
            let (kind, index, name) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
            let count: usize = it.next().unwrap().parse().unwrap();
            let values: Vec<f32> = it.map(|v| v.parse().unwrap()).collect();
            assert_eq!(values.len(), count, "{name}");
            (kind.to_string(), index.parse().unwrap(), name.to_string(), values)
        })
        .collect()
}

/// max |a − b| relative to the largest |b|.
fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn the_small_unet_matches_its_pytorch_twin_in_output_and_gradients() {
    let mut params = ParamStore::new();
    let model = UNet::new(UNetConfig::small(), &mut params, 0);
    assert_eq!(params.len(), 126);
    fill(&mut params);

    let mut tape = Tape::new();
    let x = tape.constant(Tensor::from_vec(&[2, 1, 28, 28], formula(2 * 784, |j| (0.05 * j + 0.1).sin())));
    let y = model.forward(&mut tape, &params, &x, &[3.0, 500.0], None, None);
    let r = tape.constant(Tensor::from_vec(y.shape(), formula(y.value().numel(), |j| (0.03 * j).cos())));
    let weighted = tape.mul(&y, &r);
    let loss = tape.mean_all(&weighted);
    let output = y.value().data().to_vec();
    let grads = tape.backward(&loss);

    let mut checked = 0;
    for (kind, index, name, values) in reference() {
        let (ours, what) = if kind == "output" {
            (output.clone(), "the output".to_string())
        } else {
            let id = ParamId(index as usize);
            let grad = grads.param(id).unwrap_or_else(|| panic!("no gradient for {}", params.name(id)));
            (grad.data()[..values.len()].to_vec(), format!("∂L/∂{} (the twin's {name})", params.name(id)))
        };
        let error = relative_error(&ours, &values);
        // f32 rounding through some 60 layers, summed in another order than PyTorch sums (seen: at most 1.3e-5).
        assert!(error < 1e-4, "{what}: relative error {error:e}");
        eprintln!("{what}: {} values, relative error {error:.2e}", values.len());
        checked += 1;
    }
    assert_eq!(checked, 7, "the output and six gradients");
}

//! `scheduler/scheduler_config.json`: the run's noise schedule and prediction target as diffusers'
//! `DDPMScheduler`, and back.
//!
//! | this project                      | `DDPMScheduler`                                                   |
//! |-----------------------------------|-------------------------------------------------------------------|
//! | `linear` (DDPM's, scaled for T)   | `beta_schedule` "linear", `beta_start` 1e-4·1000/T, `beta_end` 0.02·1000/T |
//! | `cosine` (Nichol & Dhariwal)      | "squaredcos_cap_v2"                                               |
//! | `sigmoid` (1e-4 … 0.02)           | "sigmoid", 1e-4, 0.02                                             |
//! | ε, x₀, v prediction               | `prediction_type` "epsilon", "sample", "v_prediction"             |
//!
//! Read back, any `beta_schedule` diffusers has ("scaled_linear" too), `trained_betas` and
//! `rescale_betas_zero_snr` give the schedule; the settings of diffusers' own sampler (`variance_type`,
//! `clip_sample`, `timestep_spacing`, …) are read and checked but do not matter here: this project's samplers
//! are chosen by flag.

use serde_json::{json, Value};

use super::json::Config;
use super::unet_config::DIFFUSERS_VERSION;
use crate::error::{Error, Result};
use crate::process::objective::Prediction;
use crate::process::schedule::{NoiseSchedule, TIMESTEPS};

/// The scheduler_config.json of a run with `schedule` (named `name` in its file: linear, cosine, sigmoid;
/// any other, such as a schedule read from diffusers, is written as its `trained_betas`) and `prediction`, or
/// why `DDPMScheduler` cannot express it.
pub fn to_json(name: &str, schedule: &NoiseSchedule, prediction: Prediction) -> std::result::Result<Value, String> {
    let timesteps = schedule.steps();
    let scale = 1000.0 / timesteps as f64;
    let (kind, start, end, betas) = match name {
        "linear" => ("linear", 1e-4 * scale, 0.02 * scale, Value::Null),
        "cosine" => ("squaredcos_cap_v2", 1e-4, 0.02, Value::Null),
        "sigmoid" => ("sigmoid", 1e-4, 0.02, Value::Null),
        "flow" => return Err("its flow-matching schedule has no DDPMScheduler counterpart".into()),
        _ => ("linear", 1e-4, 0.02, json!(schedule.beta)),
    };
    let prediction_type = match prediction {
        Prediction::Epsilon => "epsilon",
        Prediction::Sample => "sample",
        Prediction::Velocity => "v_prediction",
        Prediction::Flow => return Err("flow matching's velocity has no DDPMScheduler prediction_type".into()),
    };
    Ok(json!({
        "_class_name": "DDPMScheduler",
        "_diffusers_version": DIFFUSERS_VERSION,
        "beta_end": end,
        "beta_schedule": kind,
        "beta_start": start,
        "clip_sample": true,
        "clip_sample_range": 1.0,
        "dynamic_thresholding_ratio": 0.995,
        "num_train_timesteps": timesteps,
        "prediction_type": prediction_type,
        "rescale_betas_zero_snr": false,
        "sample_max_value": 1.0,
        "steps_offset": 0,
        "thresholding": false,
        "timestep_spacing": "leading",
        "trained_betas": betas,
        "variance_type": "fixed_small",
    }))
}

/// The schedule, its name for messages, and the prediction target of a scheduler_config.json
/// (`DDPMScheduler`'s, or any scheduler's with the same keys: DDIM, DPM-Solver, Euler, …).
pub fn from_json(file: &Config) -> Result<(NoiseSchedule, String, Prediction)> {
    let steps = file.usize_or("num_train_timesteps", 1000)?;
    if !TIMESTEPS.contains(&steps) {
        return Err(
            file.error("num_train_timesteps", format!("out of range ({} to {})", TIMESTEPS.start(), TIMESTEPS.end()))
        );
    }
    let (start, end) = (file.f64_or("beta_start", 1e-4)?, file.f64_or("beta_end", 0.02)?);
    let kind = file.str_or("beta_schedule", "linear")?.to_string();
    let (schedule, name) = match file.optional_f64s("trained_betas")? {
        Some(betas) if betas.len() != steps => {
            return Err(file.error("trained_betas", format!("{} values for num_train_timesteps {steps}", betas.len())));
        }
        Some(betas) => (NoiseSchedule::from_betas(betas), "trained_betas".to_string()),
        None => {
            let linspace = |a: f64, b: f64| (0..steps).map(move |i| a + (b - a) * i as f64 / (steps - 1) as f64);
            // This project's name for the schedule when it is one of its own (written back the same way).
            let scale = 1000.0 / steps as f64;
            let ours = |name: &str, a: f64, b: f64| {
                let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * y.abs();
                if close(start, a) && close(end, b) {
                    name.to_string()
                } else {
                    format!("{kind} {start} … {end}")
                }
            };
            match kind.as_str() {
                "linear" => (NoiseSchedule::linear(steps, start, end), ours("linear", 1e-4 * scale, 0.02 * scale)),
                "scaled_linear" => (
                    NoiseSchedule::from_betas(linspace(start.sqrt(), end.sqrt()).map(|b| b * b).collect()),
                    format!("scaled_linear {start} … {end}"),
                ),
                "squaredcos_cap_v2" => (NoiseSchedule::cosine(steps), "cosine".to_string()),
                "sigmoid" => (NoiseSchedule::sigmoid(steps, start, end), ours("sigmoid", 1e-4, 0.02)),
                _ => {
                    return Err(file.error(
                        "beta_schedule",
                        "this project knows linear, scaled_linear, squaredcos_cap_v2 and sigmoid",
                    ))
                }
            }
        }
    };
    let zero_snr = file.bool_or("rescale_betas_zero_snr", false)?;
    let schedule = if zero_snr { schedule.rescale_zero_terminal_snr() } else { schedule };
    // Every β in (0, 1]: 1 only at the end of a zero-terminal-SNR schedule.
    if let Some((t, beta)) = schedule
        .beta
        .iter()
        .enumerate()
        .find(|(t, b)| !(**b > 0.0 && (**b < 1.0 || zero_snr && *t + 1 == steps && **b <= 1.0)))
    {
        return Err(Error::format(file.path, format!("gives β_{t} = {beta}, outside (0, 1)")));
    }
    let prediction = match file.str_or("prediction_type", "epsilon")? {
        "epsilon" => Prediction::Epsilon,
        "sample" => Prediction::Sample,
        "v_prediction" => Prediction::Velocity,
        _ => return Err(file.error("prediction_type", "this project knows epsilon, sample and v_prediction")),
    };
    // The scheduler's own sampling settings: read (so that they are not refused as unknown), not used.
    for key in [
        "variance_type",
        "timestep_spacing",
        "clip_sample",
        "clip_sample_range",
        "thresholding",
        "dynamic_thresholding_ratio",
        "sample_max_value",
        "steps_offset",
    ] {
        file.value(key);
    }
    Ok((schedule, if zero_snr { format!("{name}, zero terminal SNR") } else { name }, prediction))
}

//! An exponential moving average of the weights (`optim.ema_decay`): after every optimizer step
//! `ema ← decay·ema + (1 − decay)·w`, one multi-tensor `_foreach_lerp_` per device, nothing read
//! on the host. Kept in fp32 on the parameters' device, saved beside the weights
//! (`ema.safetensors`), and swapped into the model for evaluation.
use crate::shim;
use tch::{Kind, Tensor};

/// Why saved EMA weights do not fit the run.
#[derive(Debug, thiserror::Error)]
#[error(
    "the EMA weights {0}; resume from a checkpoint written with the same model and optim.ema_decay"
)]
pub struct EmaError(String);

impl EmaError {
    /// A checkpoint without `ema.safetensors` continued by a run that keeps an average.
    pub fn missing() -> Self {
        Self("are missing (the checkpoint was written without optim.ema_decay)".into())
    }
}

/// The averaged weights of a model's parameters.
pub struct Ema {
    decay: f64,
    warmup: bool,
    names: Vec<String>,
    /// The parameters themselves (shallow: they change with every step).
    params: Vec<Tensor>,
    /// The average, one fp32 tensor per parameter, same device.
    shadow: Vec<Tensor>,
}

impl Ema {
    /// Starts the average at the current weights of `named` (a model's parameters by name).
    pub fn new(named: &[(String, Tensor)], decay: f64, warmup: bool) -> Self {
        let (names, params): (Vec<_>, Vec<_>) = named
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .unzip();
        let shadow = params
            .iter()
            .map(|t| t.detach().to_kind(Kind::Float).copy())
            .collect();
        Self {
            decay,
            warmup,
            names,
            params,
            shadow,
        }
    }

    /// The decay after `step` completed steps: `ema_decay`, or with the warm-up
    /// `min(ema_decay, (1 + step) / (10 + step))` (TensorFlow's `num_updates` rule), so early
    /// weights, far from trained, fade quickly.
    pub fn decay_at(&self, step: u64) -> f64 {
        let ramp = (1.0 + step as f64) / (10.0 + step as f64);
        match self.warmup {
            true => self.decay.min(ramp),
            false => self.decay,
        }
    }

    /// Folds the weights after step `step` into the average.
    pub fn update(&mut self, step: u64) {
        let weight = 1.0 - self.decay_at(step);
        tch::no_grad(|| {
            // The kernel wants one dtype per list: fp32 parameters directly, others (a bf16
            // model) through an fp32 view of their current values.
            if self.params.iter().all(|p| p.kind() == Kind::Float) {
                shim::foreach_lerp_(&self.shadow, &self.params, weight)
            } else {
                let fp32: Vec<Tensor> =
                    self.params.iter().map(|p| p.to_kind(Kind::Float)).collect();
                shim::foreach_lerp_(&self.shadow, &fp32, weight)
            }
        })
        .unwrap_or_else(|e| panic!("EMA update after step {step}: {e}"));
    }

    /// The averaged weights by name, for `ema.safetensors`.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.names
            .iter()
            .cloned()
            .zip(self.shadow.iter().map(Tensor::shallow_clone))
            .collect()
    }

    /// Restores the average from a checkpoint's `ema.safetensors`: the same names and shapes.
    pub fn load(&mut self, saved: Vec<(String, Tensor)>) -> Result<(), EmaError> {
        let mut saved: std::collections::HashMap<String, Tensor> = saved.into_iter().collect();
        tch::no_grad(|| {
            for (name, shadow) in self.names.iter().zip(&mut self.shadow) {
                let t = saved
                    .remove(name)
                    .ok_or_else(|| EmaError(format!("have no {name}")))?;
                if t.size() != shadow.size() {
                    return Err(EmaError(format!(
                        "hold {name} as {:?}, the model has {:?}",
                        t.size(),
                        shadow.size()
                    )));
                }
                shadow.copy_(&t);
            }
            match saved.keys().next() {
                Some(extra) => Err(EmaError(format!("hold {extra}, which the model has not"))),
                None => Ok(()),
            }
        })
    }

    /// Exchanges the model's weights and the average: call once to evaluate the average, and
    /// again to go back (exact: the values are swapped through a copy, not recomputed).
    pub fn swap(&mut self) {
        tch::no_grad(|| {
            for (p, s) in self.params.iter_mut().zip(&mut self.shadow) {
                let current = p.detach().to_kind(Kind::Float).copy();
                p.copy_(s);
                s.copy_(&current);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three updates against the hand-computed average, the warm-up's decay, the swap and back.
    #[test]
    fn the_average_follows_the_weights_at_the_decay() {
        let w = Tensor::from_slice(&[1.0f32, -2.0]);
        let mut ema = Ema::new(&[("w".into(), w.shallow_clone())], 0.9, false);
        let mut expected = [1.0f64, -2.0];
        for (i, value) in [[2.0f32, 0.0], [4.0, 1.0], [0.0, 3.0]].iter().enumerate() {
            tch::no_grad(|| w.shallow_clone().copy_(&Tensor::from_slice(value)));
            ema.update(i as u64 + 1);
            for (e, v) in expected.iter_mut().zip(value) {
                *e = 0.9 * *e + 0.1 * f64::from(*v);
            }
        }
        let got: Vec<f32> = Vec::try_from(&ema.tensors()[0].1).unwrap();
        for (g, e) in got.iter().zip(expected) {
            assert!((f64::from(*g) - e).abs() < 1e-6, "{got:?} vs {expected:?}");
        }
        ema.swap();
        let swapped: Vec<f32> = Vec::try_from(&w).unwrap();
        assert_eq!(swapped, got);
        ema.swap();
        assert_eq!(Vec::<f32>::try_from(&w).unwrap(), vec![0.0, 3.0]);

        let warm = Ema::new(&[("w".into(), w.shallow_clone())], 0.999, true);
        assert_eq!(warm.decay_at(0), 0.1);
        assert_eq!(warm.decay_at(90), 0.91);
        assert_eq!(warm.decay_at(1_000_000), 0.999);
    }

    #[test]
    fn saved_weights_must_fit() {
        let w = Tensor::zeros([2], (Kind::Float, tch::Device::Cpu));
        let mut ema = Ema::new(&[("w".into(), w)], 0.9, false);
        let e = ema
            .load(vec![(
                "w".into(),
                Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)),
            )])
            .unwrap_err();
        assert!(
            e.to_string().contains("hold w as [3], the model has [2]"),
            "{e}"
        );
        let e = ema.load(vec![]).unwrap_err();
        assert!(e.to_string().contains("have no w"), "{e}");
    }
}

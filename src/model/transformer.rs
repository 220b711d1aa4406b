//! The building blocks both towers share: linear and LayerNorm layers, multi-head attention,
//! the MLP and the pre-LN encoder layer, each named as in Hugging Face's `modeling_clip.py` so
//! the `nn::Path` tree is the safetensors name tree.
use super::lora::{Adapter, LoraConfig, LoraTarget, LoraTower};
use super::spec::Activation;
use crate::shim::{Recomputable, recompute_in_backward};
use tch::{Kind, Tensor, nn};

/// How a weight matrix is drawn. The towers differ (OpenCLIP gives the text tower explicit
/// normal stds and leaves the vision tower at PyTorch's defaults), so each caller picks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WeightInit {
    /// `N(0, std²)`.
    Normal(f64),
    /// `U(-bound, bound)`.
    Uniform(f64),
}

impl WeightInit {
    fn init(self) -> nn::Init {
        match self {
            WeightInit::Normal(stdev) => nn::Init::Randn { mean: 0.0, stdev },
            WeightInit::Uniform(bound) => nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        }
    }

    /// PyTorch's `nn.Linear`/`nn.Conv2d` default (kaiming uniform with a = √5): `U(±1/√fan_in)`.
    pub(crate) fn torch_default(fan_in: i64) -> Self {
        WeightInit::Uniform(1.0 / (fan_in as f64).sqrt())
    }
}

/// Creates a `[shape]` weight called `weight` under `p`.
pub(crate) fn weight(p: &nn::Path, shape: &[i64], init: WeightInit) -> Tensor {
    p.var("weight", shape, init.init())
}

/// `y = x Wᵀ + b`, plus a LoRA update once an adapter is attached. Biases start at zero:
/// OpenCLIP's attention zeroes them and zero is the common choice for the rest; it keeps init
/// independent of the fan-in rule.
#[derive(Debug)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    adapter: Option<Adapter>,
}

impl Linear {
    pub(crate) fn new(p: &nn::Path, inp: i64, out: i64, bias: bool, init: WeightInit) -> Self {
        let weight = weight(p, &[out, inp], init);
        let bias = bias.then(|| p.zeros("bias", &[out]));
        Self {
            weight,
            bias,
            adapter: None,
        }
    }

    /// Gives the layer (at path `p`) a LoRA adapter.
    fn attach(&mut self, p: &nn::Path, cfg: &LoraConfig) {
        let size = self.weight.size();
        self.adapter = Some(Adapter::new(p, size[1], size[0], cfg));
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.linear(&self.weight, self.bias.as_ref());
        match &self.adapter {
            Some(a) => y + a.forward(x),
            None => y,
        }
    }

    /// Another handle on the same parameters.
    fn share(&self) -> Self {
        Self {
            weight: self.weight.shallow_clone(),
            bias: self.bias.as_ref().map(Tensor::shallow_clone),
            adapter: self.adapter.as_ref().map(Adapter::share),
        }
    }

    fn parameters(&self, out: &mut Vec<Tensor>) {
        out.push(self.weight.shallow_clone());
        out.extend(self.bias.as_ref().map(Tensor::shallow_clone));
        if let Some(a) = &self.adapter {
            a.parameters(out);
        }
    }
}

/// LayerNorm over the last dimension, gain 1 and bias 0 at init.
#[derive(Debug)]
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    width: i64,
    eps: f64,
}

impl LayerNorm {
    pub(crate) fn new(p: &nn::Path, width: i64, eps: f64) -> Self {
        Self {
            weight: p.ones("weight", &[width]),
            bias: p.zeros("bias", &[width]),
            width,
            eps,
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm(
            [self.width],
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )
    }

    fn share(&self) -> Self {
        Self {
            weight: self.weight.shallow_clone(),
            bias: self.bias.shallow_clone(),
            ..*self
        }
    }

    fn parameters(&self, out: &mut Vec<Tensor>) {
        out.extend([self.weight.shallow_clone(), self.bias.shallow_clone()]);
    }
}

/// Weight inits of one encoder stack's four kinds of matrices.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerInit {
    pub(crate) qkv: WeightInit,
    pub(crate) out_proj: WeightInit,
    pub(crate) fc1: WeightInit,
    pub(crate) fc2: WeightInit,
}

impl LayerInit {
    /// Every matrix xavier-uniform (`U(±√(6 / (fan_in + fan_out)))`), as HF's SigLIP init.
    pub(crate) fn xavier(width: i64, mlp_width: i64) -> Self {
        let bound = |a: i64, b: i64| WeightInit::Uniform((6.0 / (a + b) as f64).sqrt());
        Self {
            qkv: bound(width, width),
            out_proj: bound(width, width),
            fc1: bound(width, mlp_width),
            fc2: bound(mlp_width, width),
        }
    }
}

/// Shape of one encoder stack.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StackSpec {
    pub(crate) width: i64,
    pub(crate) layers: i64,
    pub(crate) heads: i64,
    pub(crate) mlp_width: i64,
    pub(crate) activation: Activation,
    pub(crate) eps: f64,
    /// Text attends only to earlier positions; vision attends everywhere.
    pub(crate) causal: bool,
}

/// Multi-head self-attention with separate q/k/v projections (HF's layout, not OpenCLIP's
/// fused `in_proj_weight`), computed by libtorch's fused `scaled_dot_product_attention`.
#[derive(Debug)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: i64,
    causal: bool,
}

impl Attention {
    fn new(p: &nn::Path, s: &StackSpec, init: &LayerInit) -> Self {
        let w = s.width;
        Self {
            q_proj: Linear::new(&(p / "q_proj"), w, w, true, init.qkv),
            k_proj: Linear::new(&(p / "k_proj"), w, w, true, init.qkv),
            v_proj: Linear::new(&(p / "v_proj"), w, w, true, init.qkv),
            out_proj: Linear::new(&(p / "out_proj"), w, w, true, init.out_proj),
            heads: s.heads,
            causal: s.causal,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, t, w) = x.size3().expect("attention input is [batch, seq, width]");
        let head_dim = w / self.heads;
        // [B, T, W] -> [B, heads, T, head_dim], the layout SDPA expects.
        let split = |y: Tensor| y.view([b, t, self.heads, head_dim]).transpose(1, 2);
        let q = split(self.q_proj.forward(x));
        let k = split(self.k_proj.forward(x));
        let v = split(self.v_proj.forward(x));
        // scale None = 1/√head_dim, as HF and OpenCLIP.
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            self.causal,
            None,
            false,
        );
        self.out_proj
            .forward(&y.transpose(1, 2).contiguous().view([b, t, w]))
    }

    fn share(&self) -> Self {
        Self {
            q_proj: self.q_proj.share(),
            k_proj: self.k_proj.share(),
            v_proj: self.v_proj.share(),
            out_proj: self.out_proj.share(),
            ..*self
        }
    }

    fn parameters(&self, out: &mut Vec<Tensor>) {
        for l in [&self.q_proj, &self.k_proj, &self.v_proj, &self.out_proj] {
            l.parameters(out);
        }
    }
}

/// `fc2(act(fc1(x)))`.
#[derive(Debug)]
pub(crate) struct Mlp {
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl Mlp {
    pub(crate) fn new(p: &nn::Path, s: &StackSpec, init: &LayerInit) -> Self {
        Self {
            fc1: Linear::new(&(p / "fc1"), s.width, s.mlp_width, true, init.fc1),
            fc2: Linear::new(&(p / "fc2"), s.mlp_width, s.width, true, init.fc2),
            activation: s.activation,
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.fc1.forward(x);
        let h = match self.activation {
            Activation::QuickGelu => &h * (&h * 1.702).sigmoid(),
            Activation::Gelu => h.gelu("none"),
            Activation::GeluTanh => h.gelu("tanh"),
        };
        self.fc2.forward(&h)
    }

    fn share(&self) -> Self {
        Self {
            fc1: self.fc1.share(),
            fc2: self.fc2.share(),
            ..*self
        }
    }
}

/// Pre-LN block: `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
#[derive(Debug)]
struct EncoderLayer {
    self_attn: Attention,
    layer_norm1: LayerNorm,
    mlp: Mlp,
    layer_norm2: LayerNorm,
}

impl EncoderLayer {
    fn new(p: &nn::Path, s: &StackSpec, init: &LayerInit) -> Self {
        Self {
            self_attn: Attention::new(&(p / "self_attn"), s, init),
            layer_norm1: LayerNorm::new(&(p / "layer_norm1"), s.width, s.eps),
            mlp: Mlp::new(&(p / "mlp"), s, init),
            layer_norm2: LayerNorm::new(&(p / "layer_norm2"), s.width, s.eps),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let x = x + self.self_attn.forward(&self.layer_norm1.forward(x));
        &x + self.mlp.forward(&self.layer_norm2.forward(&x))
    }

    /// Another handle on the same parameters, for the graph of a checkpointed forward to own.
    fn share(&self) -> Self {
        Self {
            self_attn: self.self_attn.share(),
            layer_norm1: self.layer_norm1.share(),
            mlp: self.mlp.share(),
            layer_norm2: self.layer_norm2.share(),
        }
    }
}

impl EncoderLayer {
    /// The linear layer `target` names, and its path under the layer's `p`.
    fn linear_mut<'p>(
        &mut self,
        p: &nn::Path<'p>,
        target: LoraTarget,
    ) -> (&mut Linear, nn::Path<'p>) {
        let a = &mut self.self_attn;
        let (l, group) = match target {
            LoraTarget::QProj => (&mut a.q_proj, "self_attn"),
            LoraTarget::KProj => (&mut a.k_proj, "self_attn"),
            LoraTarget::VProj => (&mut a.v_proj, "self_attn"),
            LoraTarget::OutProj => (&mut a.out_proj, "self_attn"),
            LoraTarget::Fc1 => (&mut self.mlp.fc1, "mlp"),
            LoraTarget::Fc2 => (&mut self.mlp.fc2, "mlp"),
        };
        (l, p / group / target.module())
    }
}

impl Recomputable for EncoderLayer {
    fn forward(&self, x: &Tensor) -> Tensor {
        EncoderLayer::forward(self, x)
    }

    fn parameters(&self) -> Vec<Tensor> {
        let mut out = Vec::with_capacity(16);
        self.self_attn.parameters(&mut out);
        self.layer_norm1.parameters(&mut out);
        self.mlp.fc1.parameters(&mut out);
        self.mlp.fc2.parameters(&mut out);
        self.layer_norm2.parameters(&mut out);
        out
    }
}

/// `encoder.layers.{i}`: the stack of encoder layers.
#[derive(Debug)]
pub(crate) struct Encoder {
    layers: Vec<EncoderLayer>,
    /// Activation checkpointing: keep only each layer's input in training and recompute the
    /// layer in the backward pass (`model.grad_checkpointing`).
    pub(crate) checkpointed: bool,
}

impl Encoder {
    /// `p` is the tower's `encoder` path.
    pub(crate) fn new(p: &nn::Path, s: &StackSpec, init: &LayerInit) -> Self {
        let layers_path = p / "layers";
        let layers = (0..s.layers)
            .map(|i| EncoderLayer::new(&(&layers_path / i), s, init))
            .collect();
        Self {
            layers,
            checkpointed: false,
        }
    }

    /// Attaches `cfg`'s adapters to the blocks of `tower` it adapts; `p` is the encoder path
    /// the stack was created under.
    pub(crate) fn attach_adapters(&mut self, p: &nn::Path, cfg: &LoraConfig, tower: LoraTower) {
        let n = self.layers.len();
        let layers_path = p / "layers";
        for (i, layer) in self.layers.iter_mut().enumerate() {
            if !cfg.adapts_layer(tower, i, n) {
                continue;
            }
            let lp = &layers_path / i;
            for &target in &cfg.targets {
                let (linear, path) = layer.linear_mut(&lp, target);
                linear.attach(&path, cfg);
            }
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let mut x = x.shallow_clone();
        for layer in &self.layers {
            x = if self.checkpointed {
                // Fails only where the layer itself would (the message says why).
                recompute_in_backward(layer.share(), &x)
                    .unwrap_or_else(|e| panic!("checkpointed encoder layer: {e}"))
            } else {
                layer.forward(&x)
            };
        }
        x
    }
}

/// Gathers `x[b, idx[b], :]` on the device, with no host round trip.
pub(crate) fn gather_rows(x: &Tensor, idx: &Tensor) -> Tensor {
    let (b, _, w) = x.size3().expect("gather_rows input is [batch, seq, width]");
    let idx = idx
        .to_kind(Kind::Int64)
        .view([b, 1, 1])
        .expand([b, 1, w], false);
    x.gather(1, &idx, false).squeeze_dim(1)
}

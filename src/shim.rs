//! Safe wrappers over `csrc/shim.cpp`, the C ABI for libtorch features tch does not expose.
//!
//! Every function that can fail on the C++ side reports through an error string, so a libtorch
//! exception becomes a Rust error rather than an abort.
use std::ffi::{CStr, c_char, c_void};

unsafe extern "C" {
    fn cliptrain_free_str(s: *mut c_char);
    fn cliptrain_torch_version() -> *mut c_char;
    fn cliptrain_build_config() -> *mut c_char;
    fn cliptrain_parallel_info() -> *mut c_char;
    fn cliptrain_cpu_capability() -> *mut c_char;
    fn cliptrain_tensor_is_exclusive(t: *const torch_sys::C_tensor) -> i32;
    fn cliptrain_cuda_versions(cudart: *mut i64, cudnn: *mut i64, err: *mut *mut c_char) -> i32;
}

/// Takes ownership of a malloc'd string from the shim.
fn take_string(p: *mut c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the shim returns NUL-terminated strings from strdup, freed exactly once here.
    unsafe {
        let s = CStr::from_ptr(p).to_string_lossy().into_owned();
        cliptrain_free_str(p);
        s
    }
}

/// Version of the libtorch headers the binary was compiled against, e.g. "2.11.0".
pub fn torch_version() -> String {
    // SAFETY: no arguments; returns an owned string.
    take_string(unsafe { cliptrain_torch_version() })
}

/// libtorch's description of its own build (`torch.__config__.show()` in Python).
pub fn build_config() -> String {
    // SAFETY: as above.
    take_string(unsafe { cliptrain_build_config() })
}

/// Thread pools and parallel backend (`torch.__config__.parallel_info()`).
pub fn parallel_info() -> String {
    // SAFETY: as above.
    take_string(unsafe { cliptrain_parallel_info() })
}

/// SIMD capability ATen's CPU kernels use, e.g. "AVX2".
pub fn cpu_capability() -> String {
    // SAFETY: as above.
    take_string(unsafe { cliptrain_cpu_capability() })
}

/// CUDA runtime and cuDNN versions of the loaded CUDA backend (libtorch_cuda).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaBuild {
    /// e.g. 13000 for CUDA 13.0.
    pub runtime: i64,
    /// e.g. 91900 for cuDNN 9.19.0.
    pub cudnn: i64,
}

/// The CUDA backend's build versions, or the reason it is not loaded in this process.
pub fn cuda_build() -> Result<CudaBuild, String> {
    let (mut cudart, mut cudnn) = (0i64, 0i64);
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: out-pointers are valid for the call; err is either left null or set to a malloc'd string.
    let rc = unsafe { cliptrain_cuda_versions(&mut cudart, &mut cudnn, &mut err) };
    if rc == 0 {
        Ok(CudaBuild {
            runtime: cudart,
            cudnn,
        })
    } else {
        Err(take_string(err))
    }
}

/// True when `t` is the only handle on its tensor and its storage: nothing else (a shallow
/// clone, a view, an autograd-saved input) can observe its memory.
pub fn is_exclusive(t: &tch::Tensor) -> bool {
    // SAFETY: `as_ptr` is a live at::Tensor* for the duration of the call.
    unsafe { cliptrain_tensor_is_exclusive(t.as_ptr()) == 1 }
}

unsafe extern "C" {
    fn cliptrain_tensor_clear_grad(t: *const torch_sys::C_tensor);
    fn cliptrain_autocast_enter(
        device: i32,
        dtype: i32,
        prev_enabled: *mut i32,
        prev_dtype: *mut i32,
        err: *mut *mut c_char,
    ) -> i32;
    fn cliptrain_autocast_exit(device: i32, prev_enabled: i32, prev_dtype: i32);
}

/// Drops `t`'s gradient so `t.grad()` is undefined again (torch's `set_to_none`).
pub fn clear_grad(t: &tch::Tensor) {
    // SAFETY: `as_ptr` is a live at::Tensor* for the duration of the call. The gradient lives in
    // the tensor's shared autograd metadata (`mutable_grad` is a const method in ATen), so the
    // handle itself is not modified.
    unsafe { cliptrain_tensor_clear_grad(t.as_ptr()) }
}

/// Autocast state saved by [`autocast_enter`] and restored by [`autocast_exit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutocastPrev {
    enabled: i32,
    dtype: i32,
}

/// Enables autocast for a device type (`cuda` false = CPU) with bf16 (`fp16` false) or fp16,
/// returning the previous state to restore.
pub fn autocast_enter(cuda: bool, fp16: bool) -> Result<AutocastPrev, String> {
    let (mut enabled, mut dtype) = (0i32, 0i32);
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: out-pointers are valid for the call; err is left null or set to a malloc'd string.
    let rc = unsafe {
        cliptrain_autocast_enter(
            i32::from(cuda),
            i32::from(fp16),
            &mut enabled,
            &mut dtype,
            &mut err,
        )
    };
    if rc == 0 {
        Ok(AutocastPrev { enabled, dtype })
    } else {
        Err(take_string(err))
    }
}

/// Leaves an autocast scope opened by [`autocast_enter`] on the same device type.
pub fn autocast_exit(cuda: bool, prev: AutocastPrev) {
    // SAFETY: plain values; the shim never throws across the boundary.
    unsafe { cliptrain_autocast_exit(i32::from(cuda), prev.enabled, prev.dtype) }
}

// ---- optimizer kernels (csrc/optim.cpp) ----

type TensorPtr = *const torch_sys::C_tensor;

unsafe extern "C" {
    fn cliptrain_fused_adamw_step(
        params: *const TensorPtr,
        grads: *const TensorPtr,
        exp_avgs: *const TensorPtr,
        exp_avg_sqs: *const TensorPtr,
        steps: *const TensorPtr,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        found_inf: TensorPtr,
        err: *mut *mut c_char,
    ) -> i32;
    fn cliptrain_foreach_norm(
        ts: *const TensorPtr,
        n: usize,
        out: *mut *mut torch_sys::C_tensor,
        err: *mut *mut c_char,
    ) -> i32;
    fn cliptrain_foreach_mul_(
        ts: *const TensorPtr,
        n: usize,
        factor: TensorPtr,
        err: *mut *mut c_char,
    ) -> i32;
    fn cliptrain_foreach_lerp_(
        ts: *const TensorPtr,
        targets: *const TensorPtr,
        n: usize,
        weight: f64,
        err: *mut *mut c_char,
    ) -> i32;
    fn cliptrain_amp_unscale_(
        grads: *const TensorPtr,
        n: usize,
        found_inf: TensorPtr,
        inv_scale: TensorPtr,
        err: *mut *mut c_char,
    ) -> i32;
}

/// The at::Tensor pointers of `ts`, valid while `ts` is borrowed.
fn ptrs<T: std::borrow::Borrow<tch::Tensor>>(ts: &[T]) -> Vec<TensorPtr> {
    ts.iter().map(|t| t.borrow().as_ptr()).collect()
}

/// Turns a shim status and its error string into a `Result`.
fn status(rc: i32, err: *mut c_char) -> Result<(), String> {
    if rc == 0 {
        Ok(())
    } else {
        Err(take_string(err))
    }
}

/// Hyper-parameters of one [`fused_adamw_step`] call (one torch param group).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWHyper {
    /// The group's learning rate (the step's rate times the group's multiplier).
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Decoupled weight decay; 0 for the no-decay groups.
    pub weight_decay: f64,
    pub eps: f64,
}

/// The tensors of one [`fused_adamw_step`] call, index-aligned: fp32 parameters, their fp32
/// gradients, fp32 moments, and fp32 0-dim step counts, all on one device.
pub struct AdamWLists<'a> {
    pub params: &'a [&'a tch::Tensor],
    pub grads: &'a [&'a tch::Tensor],
    pub exp_avgs: &'a [&'a tch::Tensor],
    pub exp_avg_sqs: &'a [&'a tch::Tensor],
    pub steps: &'a [&'a tch::Tensor],
}

/// One `torch.optim.AdamW(fused=True)` step over `lists` (ATen's `_fused_adamw_`): the step
/// counts are incremented first and, with `found_inf` (fp32, one element, 1.0 = skip this
/// step), decremented by it afterwards, as torch does; a skipped step changes nothing. No tensor
/// is read on the host.
pub fn fused_adamw_step(
    lists: &AdamWLists<'_>,
    hyper: AdamWHyper,
    found_inf: Option<&tch::Tensor>,
) -> Result<(), String> {
    let n = lists.params.len();
    let all = [lists.grads, lists.exp_avgs, lists.exp_avg_sqs, lists.steps];
    if all.iter().any(|l| l.len() != n) {
        return Err(format!(
            "fused AdamW: lists of different lengths (params {n}, grads/exp_avgs/exp_avg_sqs/steps {:?})",
            all.map(|l| l.len())
        ));
    }
    let [p, g, m, v, s] = [
        lists.params,
        lists.grads,
        lists.exp_avgs,
        lists.exp_avg_sqs,
        lists.steps,
    ]
    .map(ptrs);
    let inf = found_inf.map_or(std::ptr::null(), |t| t.as_ptr());
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: the five arrays hold `n` live at::Tensor pointers borrowed for the call; `inf` is
    // null or live; err is left null or set to a malloc'd string.
    let rc = unsafe {
        cliptrain_fused_adamw_step(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            s.as_ptr(),
            n,
            hyper.lr,
            hyper.beta1,
            hyper.beta2,
            hyper.weight_decay,
            hyper.eps,
            inf,
            &mut err,
        )
    };
    status(rc, err)
}

/// The L2 norm of each tensor (`torch._foreach_norm`), in the tensors' dtype and on their device.
pub fn foreach_norm(ts: &[tch::Tensor]) -> Result<Vec<tch::Tensor>, String> {
    let p = ptrs(ts);
    let mut out: Vec<*mut torch_sys::C_tensor> = vec![std::ptr::null_mut(); ts.len()];
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: `p` holds live pointers; `out` has room for one result per input, each a new
    // at::Tensor* that tch takes ownership of below.
    let rc = unsafe { cliptrain_foreach_norm(p.as_ptr(), p.len(), out.as_mut_ptr(), &mut err) };
    status(rc, err)?;
    // SAFETY: on success every slot holds a fresh, owned at::Tensor*.
    Ok(out
        .into_iter()
        .map(|t| unsafe { tch::Tensor::from_ptr(t) })
        .collect())
}

/// Multiplies every tensor of `ts` in place by the 0-dim tensor `factor`
/// (`torch._foreach_mul_`), without reading `factor` on the host.
pub fn foreach_mul_(ts: &[tch::Tensor], factor: &tch::Tensor) -> Result<(), String> {
    let p = ptrs(ts);
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: `p` and `factor` are live for the call; err as above.
    let rc = unsafe { cliptrain_foreach_mul_(p.as_ptr(), p.len(), factor.as_ptr(), &mut err) };
    status(rc, err)
}

/// Moves every tensor of `ts` towards the same-index tensor of `targets` by `weight`, in place
/// (`torch._foreach_lerp_`: `t += weight·(target − t)`), reading nothing on the host.
pub fn foreach_lerp_(
    ts: &[tch::Tensor],
    targets: &[tch::Tensor],
    weight: f64,
) -> Result<(), String> {
    if ts.len() != targets.len() {
        return Err(format!(
            "foreach_lerp_: {} tensors but {} targets",
            ts.len(),
            targets.len()
        ));
    }
    let (p, q) = (ptrs(ts), ptrs(targets));
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: `p` and `q` hold `len` live tensors borrowed for the call; err as above.
    let rc = unsafe { cliptrain_foreach_lerp_(p.as_ptr(), q.as_ptr(), p.len(), weight, &mut err) };
    status(rc, err)
}

/// fp16 loss scaling's unscale (`torch._amp_foreach_non_finite_check_and_unscale_`): multiplies
/// every gradient in place by `inv_scale` (one element) and sets `found_inf` (fp32, one element)
/// to 1.0 when any gradient holds an inf or NaN. It never resets `found_inf` to 0, so one flag
/// can collect several calls. All tensors must be on one device; nothing is read on the host.
pub fn amp_unscale_(
    grads: &[tch::Tensor],
    found_inf: &tch::Tensor,
    inv_scale: &tch::Tensor,
) -> Result<(), String> {
    let p = ptrs(grads);
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: all pointers are live for the call. The kernel writes into `found_inf`'s storage,
    // not the handle, which the shim copies before passing it on.
    let rc = unsafe {
        cliptrain_amp_unscale_(
            p.as_ptr(),
            p.len(),
            found_inf.as_ptr(),
            inv_scale.as_ptr(),
            &mut err,
        )
    };
    status(rc, err)
}

unsafe extern "C" {
    fn cliptrain_empty_pinned(
        sizes: *const i64,
        ndim: i32,
        dtype: i32,
        out: *mut *mut torch_sys::C_tensor,
        err: *mut *mut c_char,
    ) -> i32;
}

/// An uninitialised CPU tensor of `shape` in pinned (page-locked) memory from libtorch's caching
/// host allocator, so a `non_blocking` copy to a CUDA device is asynchronous. `kind` is u8 or
/// int64 (what batches hold). Fails without a usable CUDA backend.
pub fn empty_pinned(shape: &[i64], kind: tch::Kind) -> Result<tch::Tensor, String> {
    // c10::ScalarType values (c10/core/ScalarType.h).
    let dtype = match kind {
        tch::Kind::Uint8 => 0,
        tch::Kind::Int64 => 4,
        other => return Err(format!("pinned tensors of {other:?} are not supported")),
    };
    let mut out: *mut torch_sys::C_tensor = std::ptr::null_mut();
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: `shape` is valid for `ndim` values during the call; out and err are valid
    // out-pointers, set to a new at::Tensor* or a malloc'd string.
    let rc = unsafe {
        cliptrain_empty_pinned(
            shape.as_ptr(),
            shape.len() as i32,
            dtype,
            &mut out,
            &mut err,
        )
    };
    if rc != 0 {
        return Err(take_string(err));
    }
    // SAFETY: a heap at::Tensor* that nothing else owns; the tch Tensor now frees it.
    Ok(unsafe { tch::Tensor::from_ptr(out) })
}

// ---- activation checkpointing (csrc/recompute.cpp) ---------------------------------------------

type RunFn = unsafe extern "C" fn(*mut c_void, TensorPtr) -> *mut torch_sys::C_tensor;
type ReleaseFn = unsafe extern "C" fn(*mut c_void);

unsafe extern "C" {
    fn cliptrain_recompute_in_backward(
        x: TensorPtr,
        params: *const TensorPtr,
        n: usize,
        run: RunFn,
        user: *mut c_void,
        release: ReleaseFn,
        out: *mut *mut torch_sys::C_tensor,
        err: *mut *mut c_char,
    ) -> i32;
    fn cliptrain_grad_enabled() -> i32;
}

/// Whether autograd records operations on this thread now (off inside `tch::no_grad`).
pub fn grad_enabled() -> bool {
    // SAFETY: reads a thread-local flag; no arguments.
    unsafe { cliptrain_grad_enabled() != 0 }
}

/// A block of a network whose activations may be dropped after the forward pass and
/// recomputed in the backward ([`recompute_in_backward`]). Its forward must be a pure function
/// of its input and parameters (no randomness), so the recomputation repeats it exactly.
pub trait Recomputable: Send + 'static {
    fn forward(&self, x: &tch::Tensor) -> tch::Tensor;
    /// Every parameter the forward reads (gradients reach them through the recomputation).
    fn parameters(&self) -> Vec<tch::Tensor>;
}

/// `block.forward(x)`, keeping none of the block's activations when grad mode is on: the
/// backward pass runs the block again (in the forward's autocast state) and differentiates
/// that. The graph owns `block` (handles sharing the parameters' storage) until it is freed,
/// so it stays valid however long the output lives. With grad mode off it is a plain call.
pub fn recompute_in_backward<B: Recomputable>(
    block: B,
    x: &tch::Tensor,
) -> Result<tch::Tensor, String> {
    let params = block.parameters();
    let ptrs: Vec<TensorPtr> = params.iter().map(|p| p.as_ptr()).collect();
    let user = Box::into_raw(Box::new(block)).cast::<c_void>();
    let mut out: *mut torch_sys::C_tensor = std::ptr::null_mut();
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: x and the parameters are live at::Tensor* for the call (the shim copies the
    // handles it keeps); `user` is a Box the shim owns from here on and hands back exactly once
    // to `release_block::<B>`; out and err are valid out-pointers.
    let rc = unsafe {
        cliptrain_recompute_in_backward(
            x.as_ptr(),
            ptrs.as_ptr(),
            ptrs.len(),
            run_block::<B>,
            user,
            release_block::<B>,
            &mut out,
            &mut err,
        )
    };
    if rc != 0 {
        return Err(take_string(err));
    }
    // SAFETY: a heap at::Tensor* that nothing else owns; the tch Tensor now frees it.
    Ok(unsafe { tch::Tensor::from_ptr(out) })
}

/// The shim's `run`: the block's forward on `x`, as a new heap at::Tensor*; null if it
/// panicked (a panic must not unwind into C++), which the shim turns into an error.
unsafe extern "C" fn run_block<B: Recomputable>(
    user: *mut c_void,
    x: TensorPtr,
) -> *mut torch_sys::C_tensor {
    // SAFETY: `user` is the Box<B> made by `recompute_in_backward`, alive until
    // `release_block`; x is a live at::Tensor* for the call, shallow-cloned into a handle of
    // our own.
    let (block, x) = unsafe {
        (
            &*user.cast::<B>(),
            tch::Tensor::clone_from_ptr(x.cast_mut()),
        )
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| block.forward(&x))) {
        Ok(mut y) => {
            let p = y.as_mut_ptr();
            // The shim takes the at::Tensor* over and deletes it.
            std::mem::forget(y);
            p
        }
        Err(_) => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn release_block<B: Recomputable>(user: *mut c_void) {
    // SAFETY: called exactly once by the shim, with the Box<B> it was given.
    drop(unsafe { Box::from_raw(user.cast::<B>()) });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tch::{Kind, Tensor};

    /// `y = tanh(x · w)`, counting its runs and its releases.
    struct Counted {
        w: Tensor,
        runs: Arc<AtomicUsize>,
        released: Arc<AtomicUsize>,
    }

    impl Recomputable for Counted {
        fn forward(&self, x: &Tensor) -> Tensor {
            self.runs.fetch_add(1, Ordering::SeqCst);
            (x * &self.w).tanh()
        }

        fn parameters(&self) -> Vec<Tensor> {
            vec![self.w.shallow_clone()]
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.released.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_recomputed_block_runs_again_in_the_backward_and_gets_the_exact_gradients() {
        let x = Tensor::from_slice(&[0.3f64, -1.2, 0.7]).set_requires_grad(true);
        let w = Tensor::from_slice(&[1.5f64, 0.5, -2.0]).set_requires_grad(true);
        let (runs, released) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let block = || Counted {
            w: w.shallow_clone(),
            runs: runs.clone(),
            released: released.clone(),
        };
        let y = recompute_in_backward(block(), &x).unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        y.sum(Kind::Double).backward();
        assert_eq!(runs.load(Ordering::SeqCst), 2, "recomputed in the backward");
        // d tanh(xw)/dx = w (1 - tanh²), d/dw = x (1 - tanh²).
        let t = (&x * &w).tanh().detach();
        let d = 1.0 - &t * &t;
        assert!(x.grad().allclose(&(&w.detach() * &d), 1e-12, 1e-12, false));
        assert!(w.grad().allclose(&(&x.detach() * &d), 1e-12, 1e-12, false));
        drop(y);
        assert_eq!(
            released.load(Ordering::SeqCst),
            1,
            "the graph released the block"
        );

        // Without grad mode it is a plain call, and nothing is kept.
        let y = tch::no_grad(|| recompute_in_backward(block(), &x).unwrap());
        assert!(!y.requires_grad());
        assert_eq!(
            (runs.load(Ordering::SeqCst), released.load(Ordering::SeqCst)),
            (3, 2)
        );
    }

    /// Pinned batch memory needs the CUDA backend: without a GPU the allocation fails with an error
    /// (no abort), and with one the tensor is pinned.
    #[test]
    fn pinned_batch_tensors_are_page_locked_or_an_error() {
        match super::empty_pinned(&[2, 3, 4, 4], tch::Kind::Uint8) {
            Ok(t) => {
                assert!(tch::Cuda::is_available());
                assert_eq!((t.size(), t.kind()), (vec![2, 3, 4, 4], tch::Kind::Uint8));
                assert!(t.is_pinned(tch::Device::Cuda(0)));
            }
            Err(e) => {
                assert!(!tch::Cuda::is_available(), "{e}");
                assert!(!e.is_empty());
            }
        }
        assert!(super::empty_pinned(&[2], tch::Kind::Float).is_err());
    }
}

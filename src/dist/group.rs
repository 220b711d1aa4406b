//! Safe wrappers over `csrc/dist.cpp`: one c10d process group and its collectives on tch tensors.
use super::DistError;
use std::ffi::{CStr, CString, c_char};
use std::time::Duration;
use tch::{Device, Kind, Tensor};

#[repr(C)]
struct RawGroup {
    _private: [u8; 0],
}

#[repr(C)]
struct RawWork {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn cliptrain_dist_new(
        master_addr: *const c_char,
        master_port: u16,
        rank: i32,
        world_size: i32,
        backend: i32,
        timeout_ms: i64,
        out: *mut *mut RawGroup,
        err: *mut *mut c_char,
    ) -> i32;
    fn cliptrain_dist_free(d: *mut RawGroup);
    fn cliptrain_dist_has_nccl() -> i32;
    fn cliptrain_dist_all_reduce(
        d: *mut RawGroup,
        t: *const torch_sys::C_tensor,
        op: i32,
        err: *mut *mut c_char,
    ) -> i32;
    fn cliptrain_dist_all_reduce_start(
        d: *mut RawGroup,
        t: *const torch_sys::C_tensor,
        op: i32,
        work: *mut *mut RawWork,
        err: *mut *mut c_char,
    ) -> i32;
    fn cliptrain_dist_work_wait(d: *mut RawGroup, work: *mut RawWork, err: *mut *mut c_char)
    -> i32;
    fn cliptrain_dist_work_free(work: *mut RawWork);
    fn cliptrain_dist_all_gather(
        d: *mut RawGroup,
        out: *const torch_sys::C_tensor,
        input: *const torch_sys::C_tensor,
        err: *mut *mut c_char,
    ) -> i32;
    fn cliptrain_dist_broadcast(
        d: *mut RawGroup,
        t: *const torch_sys::C_tensor,
        root: i32,
        err: *mut *mut c_char,
    ) -> i32;
    fn cliptrain_dist_barrier(d: *mut RawGroup, err: *mut *mut c_char) -> i32;
    fn cliptrain_free_str(s: *mut c_char);
}

/// Takes a malloc'd error message from the shim.
fn take_err(p: *mut c_char) -> String {
    if p.is_null() {
        return "unknown error (no message)".into();
    }
    // SAFETY: the shim sets *err to a NUL-terminated strdup'd string, released exactly once here.
    unsafe {
        let s = CStr::from_ptr(p).to_string_lossy().into_owned();
        cliptrain_free_str(p);
        s
    }
}

/// The c10d backend: Gloo moves CPU tensors, NCCL CUDA tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Gloo,
    Nccl,
}

impl Backend {
    /// The backend for tensors on `device`.
    pub fn for_device(device: Device) -> Self {
        if device.is_cuda() {
            Backend::Nccl
        } else {
            Backend::Gloo
        }
    }

    /// Whether this binary can create the backend (NCCL needs a build with `CLIPTRAIN_NCCL=1`).
    pub fn compiled_in(self) -> bool {
        // SAFETY: no arguments.
        self == Backend::Gloo || unsafe { cliptrain_dist_has_nccl() } == 1
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Avg,
}

impl ReduceOp {
    fn code(self) -> i32 {
        match self {
            ReduceOp::Sum => 0,
            ReduceOp::Avg => 1,
        }
    }
}

/// A c10d process group joined through a `TCPStore` at the master address. Every collective
/// must be called by every rank in the same order; a rank that died or stopped calling makes
/// the others' collectives fail after the group's timeout (never block forever).
pub struct ProcessGroup {
    raw: *mut RawGroup,
    rank: usize,
    world_size: usize,
    timeout: Duration,
}

/// An all-reduce in flight, from [`ProcessGroup::all_reduce_start`].
#[must_use = "an unfinished all-reduce leaves its tensor undefined"]
pub struct Work {
    raw: *mut RawWork,
    op: &'static str,
}

impl ProcessGroup {
    /// Joins (rank 0: hosts) the store at `master_addr:master_port` and creates the process
    /// group; waits up to `timeout` for every rank to arrive.
    pub fn join(
        master_addr: &str,
        master_port: u16,
        rank: usize,
        world_size: usize,
        backend: Backend,
        timeout: Duration,
    ) -> Result<Self, DistError> {
        let addr = CString::new(master_addr).map_err(|_| DistError::Init {
            addr: master_addr.into(),
            port: master_port,
            rank,
            world_size,
            msg: "the address contains a NUL byte".into(),
        })?;
        let mut raw: *mut RawGroup = std::ptr::null_mut();
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: valid C string and out-pointers for the duration of the call.
        let rc = unsafe {
            cliptrain_dist_new(
                addr.as_ptr(),
                master_port,
                rank as i32,
                world_size as i32,
                match backend {
                    Backend::Gloo => 0,
                    Backend::Nccl => 1,
                },
                timeout.as_millis() as i64,
                &mut raw,
                &mut err,
            )
        };
        if rc != 0 {
            return Err(DistError::Init {
                addr: master_addr.into(),
                port: master_port,
                rank,
                world_size,
                msg: take_err(err),
            });
        }
        Ok(Self {
            raw,
            rank,
            world_size,
            timeout,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    fn check(&self, op: &'static str, rc: i32, err: *mut c_char) -> Result<(), DistError> {
        if rc == 0 {
            return Ok(());
        }
        Err(DistError::Collective {
            op,
            rank: self.rank,
            world_size: self.world_size,
            timeout_s: self.timeout.as_secs_f64(),
            msg: take_err(err),
        })
    }

    fn dense(&self, op: &'static str, t: &Tensor) -> Result<(), DistError> {
        if t.is_contiguous() {
            return Ok(());
        }
        Err(DistError::Collective {
            op,
            rank: self.rank,
            world_size: self.world_size,
            timeout_s: self.timeout.as_secs_f64(),
            msg: "the tensor is not contiguous (c10d needs dense buffers)".into(),
        })
    }

    /// Reduces `t` in place over all ranks (every rank ends with the same values).
    pub fn all_reduce(&self, t: &Tensor, op: ReduceOp) -> Result<(), DistError> {
        self.dense("all_reduce", t)?;
        let mut err = std::ptr::null_mut();
        // SAFETY: a live group and a live at::Tensor*; err is left null or set by the shim.
        let rc = unsafe { cliptrain_dist_all_reduce(self.raw, t.as_ptr(), op.code(), &mut err) };
        self.check("all_reduce", rc, err)
    }

    /// Starts an in-place all-reduce of `t` and returns at once; `t` must stay alive and
    /// untouched until [`Work::wait`].
    pub fn all_reduce_start(&self, t: &Tensor, op: ReduceOp) -> Result<Work, DistError> {
        self.dense("all_reduce", t)?;
        let mut work = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        // SAFETY: as above; `work` receives an owned handle on success.
        let rc = unsafe {
            cliptrain_dist_all_reduce_start(self.raw, t.as_ptr(), op.code(), &mut work, &mut err)
        };
        self.check("all_reduce", rc, err)?;
        Ok(Work {
            raw: work,
            op: "all_reduce",
        })
    }

    /// Waits for `work` (started on this group) to finish.
    pub fn wait(&self, mut work: Work) -> Result<(), DistError> {
        let raw = std::mem::replace(&mut work.raw, std::ptr::null_mut());
        let mut err = std::ptr::null_mut();
        // SAFETY: `raw` came from this group and is consumed here (the shim frees it).
        let rc = unsafe { cliptrain_dist_work_wait(self.raw, raw, &mut err) };
        self.check(work.op, rc, err)
    }

    /// Every rank's `t` (same shape on all ranks) concatenated along dim 0 in rank order.
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor, DistError> {
        let input = t.contiguous();
        let mut shape = input.size();
        if shape.is_empty() {
            shape.push(1);
        }
        shape[0] *= self.world_size as i64;
        let out = Tensor::empty(&shape, (input.kind(), input.device()));
        let mut err = std::ptr::null_mut();
        // SAFETY: live group and tensors; `out` is allocated to the gathered size.
        let rc =
            unsafe { cliptrain_dist_all_gather(self.raw, out.as_ptr(), input.as_ptr(), &mut err) };
        self.check("all_gather", rc, err)?;
        Ok(out)
    }

    /// Copies rank `root`'s `t` into every other rank's `t`, in place.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<(), DistError> {
        self.dense("broadcast", t)?;
        let mut err = std::ptr::null_mut();
        // SAFETY: live group and tensor.
        let rc = unsafe { cliptrain_dist_broadcast(self.raw, t.as_ptr(), root as i32, &mut err) };
        self.check("broadcast", rc, err)
    }

    /// Returns once every rank has reached it.
    pub fn barrier(&self) -> Result<(), DistError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: live group.
        let rc = unsafe { cliptrain_dist_barrier(self.raw, &mut err) };
        self.check("barrier", rc, err)
    }

    /// Every rank's bytes, indexed by rank (lengths may differ).
    pub fn all_gather_bytes(
        &self,
        bytes: &[u8],
        device: Device,
    ) -> Result<Vec<Vec<u8>>, DistError> {
        let len = Tensor::from_slice(&[bytes.len() as i64]).to_device(device);
        let lens: Vec<i64> =
            Vec::try_from(self.all_gather(&len)?.to_device(Device::Cpu)).expect("an int64 vector");
        let max = lens.iter().copied().max().unwrap_or(0);
        let padded = Tensor::zeros([max], (Kind::Uint8, Device::Cpu));
        if !bytes.is_empty() {
            padded
                .narrow(0, 0, bytes.len() as i64)
                .copy_(&Tensor::from_slice(bytes));
        }
        let all = self
            .all_gather(&padded.to_device(device))?
            .to_device(Device::Cpu);
        let flat: Vec<u8> = Vec::try_from(all).expect("a uint8 vector");
        Ok(lens
            .iter()
            .enumerate()
            .map(|(r, &n)| flat[r * max as usize..r * max as usize + n as usize].to_vec())
            .collect())
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        // Reached only when an earlier collective failed and this one is abandoned: release the
        // handle (c10d keeps the tensors alive until its worker is done with them).
        if !self.raw.is_null() {
            // SAFETY: an owned handle from cliptrain_dist_all_reduce_start, freed once.
            unsafe { cliptrain_dist_work_free(self.raw) }
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` came from cliptrain_dist_new and is freed exactly once.
        unsafe { cliptrain_dist_free(self.raw) }
    }
}

//! The torchrun environment contract, so `torchrun`, SLURM wrappers, Kubernetes operators and
//! `cliptrain launch` can all start ranks the same way.
use super::DistError;

/// Where this process sits in a multi-process job, as torchrun describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    pub local_world_size: usize,
    pub master_addr: String,
    pub master_port: u16,
}

impl DistEnv {
    /// Reads the process environment; `None` when `WORLD_SIZE` is unset (a plain single
    /// process).
    pub fn from_env() -> Result<Option<Self>, DistError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// As [`from_env`](Self::from_env), over any variable lookup (for tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, DistError> {
        let Some(world) = get("WORLD_SIZE") else {
            return Ok(None);
        };
        let num = |var: &'static str, value: &str| -> Result<usize, DistError> {
            value.trim().parse().map_err(|_| DistError::Env {
                var,
                value: value.into(),
                reason: "must be a non-negative integer".into(),
            })
        };
        let required = |var: &'static str| {
            get(var).ok_or_else(|| DistError::Env {
                var,
                value: String::new(),
                reason: "must be set when WORLD_SIZE is (torchrun sets both)".into(),
            })
        };
        let world_size = num("WORLD_SIZE", &world)?;
        if world_size == 0 {
            return Err(DistError::Env {
                var: "WORLD_SIZE",
                value: world,
                reason: "must be at least 1".into(),
            });
        }
        let rank_s = required("RANK")?;
        let rank = num("RANK", &rank_s)?;
        if rank >= world_size {
            return Err(DistError::Env {
                var: "RANK",
                value: rank_s,
                reason: format!("must be below WORLD_SIZE = {world_size}"),
            });
        }
        let local_rank = match get("LOCAL_RANK") {
            Some(v) => num("LOCAL_RANK", &v)?,
            None => rank,
        };
        let local_world_size = match get("LOCAL_WORLD_SIZE") {
            Some(v) => num("LOCAL_WORLD_SIZE", &v)?.max(1),
            None => world_size,
        };
        let master_addr = get("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into());
        let port_s = get("MASTER_PORT").unwrap_or_else(|| "29500".into());
        let master_port = port_s.trim().parse().map_err(|_| DistError::Env {
            var: "MASTER_PORT",
            value: port_s.clone(),
            reason: "must be a TCP port (1-65535)".into(),
        })?;
        Ok(Some(Self {
            rank,
            world_size,
            local_rank,
            local_world_size,
            master_addr,
            master_port,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Option<DistEnv>, DistError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DistEnv::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn torchrun_variables_are_read() {
        assert_eq!(parse(&[]).unwrap(), None);
        let e = parse(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "1234"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            e,
            DistEnv {
                rank: 3,
                world_size: 4,
                local_rank: 1,
                local_world_size: 2,
                master_addr: "node0".into(),
                master_port: 1234
            }
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = parse(&[("WORLD_SIZE", "2"), ("RANK", "2")]).unwrap_err();
        assert!(e.to_string().starts_with("RANK = \"2\""), "{e}");
        let e = parse(&[("WORLD_SIZE", "2")]).unwrap_err();
        assert!(e.to_string().contains("RANK"), "{e}");
        let e = parse(&[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_PORT", "x")]).unwrap_err();
        assert!(e.to_string().contains("MASTER_PORT"), "{e}");
    }
}

//! The one wasmtime `Engine`: component model, async calls, fuel, epoch interruption
//! driven by a single ticker thread, and the pooling allocator (falling back to on-demand
//! allocation where the address space cannot hold the pool).

use std::hash::Hasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::error::SandboxError;

/// Which instance allocator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocatorChoice {
    /// Pooling, or on-demand if the pool cannot be reserved.
    #[default]
    Auto,
    Pooling,
    OnDemand,
}

/// The allocator actually in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "allocator", rename_all = "snake_case")]
pub enum AllocatorInUse {
    Pooling,
    OnDemand { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    pub allocator: AllocatorChoice,
    /// Attempts running at once; more wait for a slot. The pool is sized from this.
    pub max_concurrent_attempts: u32,
    /// Hard ceiling on each linear memory (and the pool's slot size).
    pub max_memory_bytes: u64,
    /// Epoch tick: how often a running guest yields to the async runtime and how
    /// precisely deadlines fire.
    pub epoch_tick_us: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            allocator: AllocatorChoice::Auto,
            max_concurrent_attempts: 1024,
            max_memory_bytes: 256 << 20,
            epoch_tick_us: 1_000,
        }
    }
}

/// The engine plus its ticker. Dropping the last handle stops the ticker.
pub struct SandboxEngine {
    pub(crate) engine: Engine,
    allocator: AllocatorInUse,
    config: EngineConfig,
    compat_key: String,
    ticker: Option<Ticker>,
}

struct Ticker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn base_config() -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.consume_fuel(true);
    c.epoch_interruption(true);
    c
}

fn pooling_config(cfg: &EngineConfig) -> PoolingAllocationConfig {
    let n = cfg.max_concurrent_attempts.max(1);
    let mut p = PoolingAllocationConfig::default();
    // A Rust component has a few core instances, one memory and a few tables; Python and
    // JS components more. Slots are virtual address space, committed only when used.
    p.total_component_instances(n)
        .total_core_instances(n.saturating_mul(8))
        .max_core_instances_per_component(32)
        .total_memories(n.saturating_mul(2))
        .max_memories_per_component(4)
        .total_tables(n.saturating_mul(8))
        .max_tables_per_component(32)
        .total_stacks(n)
        .max_memory_size(cfg.max_memory_bytes as usize)
        .linear_memory_keep_resident(64 << 10)
        .table_keep_resident(16 << 10);
    p
}

impl SandboxEngine {
    pub fn new(cfg: EngineConfig) -> Result<Arc<Self>, SandboxError> {
        let on_demand = |reason: String| -> Result<(Engine, AllocatorInUse), SandboxError> {
            let mut c = base_config();
            c.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            let e = Engine::new(&c).map_err(|e| {
                SandboxError::internal(format!("cannot create wasmtime engine: {e:#}"))
            })?;
            Ok((e, AllocatorInUse::OnDemand { reason }))
        };
        let (engine, allocator) = match cfg.allocator {
            AllocatorChoice::OnDemand => on_demand("configured".into())?,
            choice => {
                let mut c = base_config();
                c.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(&cfg)));
                match Engine::new(&c) {
                    Ok(e) => (e, AllocatorInUse::Pooling),
                    Err(e) if choice == AllocatorChoice::Auto => {
                        tracing::warn!(error = %format!("{e:#}"), "pooling allocator unavailable; using on-demand allocation");
                        on_demand(format!("pooling allocator unavailable: {e:#}"))?
                    }
                    Err(e) => {
                        return Err(SandboxError::internal(format!(
                            "cannot create pooling engine: {e:#}"
                        )));
                    }
                }
            }
        };

        let compat_key = {
            let mut h = Blake3Hasher(blake3::Hasher::new());
            std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
            h.0.finalize().to_hex()[..16].to_string()
        };

        let stop = Arc::new(AtomicBool::new(false));
        let tick = Duration::from_micros(cfg.epoch_tick_us.max(100));
        let handle = {
            let (engine, stop) = (engine.clone(), stop.clone());
            std::thread::Builder::new()
                .name("tasker-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| {
                    SandboxError::internal(format!("cannot start the epoch ticker: {e}"))
                })?
        };
        Ok(Arc::new(Self {
            engine,
            allocator,
            config: cfg,
            compat_key,
            ticker: Some(Ticker {
                stop,
                handle: Some(handle),
            }),
        }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn allocator(&self) -> &AllocatorInUse {
        &self.allocator
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Short hex digest of `Engine::precompile_compatibility_hash`: part of every
    /// precompiled-cache key, since a `.cwasm` only loads into an engine configured alike.
    pub fn compat_key(&self) -> &str {
        &self.compat_key
    }

    pub fn ticker_running(&self) -> bool {
        self.ticker.is_some()
    }
}

/// Feeds `Hash` output into blake3, so the cache key is stable across processes
/// (std's `DefaultHasher` promises no stability).
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn finish(&self) -> u64 {
        let b = self.0.finalize();
        u64::from_le_bytes(b.as_bytes()[..8].try_into().expect("8 bytes"))
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

//! `shoal demo`: the seed's program without the model. Each process splits the
//! prompts, then every collective is run and its result checked, so a launch
//! of the demo is also an end-to-end test of the runtime.

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use candle_core::{DType, Device, Tensor};
use clap::{Args, ValueEnum};
use shoal_dist::{Backend, DistributedState, GroupOptions, ProcessGroup, ReduceOp};

#[derive(Debug, Args)]
pub struct DemoCmd {
    /// Prompts to split between the processes.
    #[arg(long = "prompt", default_values_t = ["a dog".to_string(), "a cat".to_string(), "a chicken".to_string()])]
    prompts: Vec<String>,
    /// Pad every process's share to the same length (accelerate's apply_padding).
    #[arg(long)]
    apply_padding: bool,
    /// Start N processes with `spawn` + `init_process_group` instead of reading a launcher's environment.
    #[arg(long)]
    spawn: Option<usize>,
    /// Process-group backend: cpu (through the store) or nccl (CUDA tensors).
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Seconds any one collective may wait (default: $SHOAL_TIMEOUT or 600).
    #[arg(long)]
    timeout: Option<f64>,
    /// Fault injection for the launcher's tests: this rank misbehaves.
    #[arg(long, hide = true)]
    fail_rank: Option<usize>,
    /// Fault injection: how it misbehaves.
    #[arg(long, hide = true, value_enum, default_value_t = Fault::Exit3)]
    fail_mode: Fault,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Fault {
    /// Exit with code 3.
    Exit3,
    /// Kill itself with SIGKILL.
    Kill,
    /// Never enter the barrier.
    Hang,
    /// Kill itself with SIGKILL before the tensor collectives (peers wait in NCCL).
    KillEarly,
    /// Hang before the tensor collectives (peers wait in NCCL until the watchdog fires).
    HangEarly,
}

pub fn run(c: DemoCmd) -> Result<()> {
    let backend: Backend = c.backend.parse()?;
    let mut opts = GroupOptions::from_env(&std::env::vars().collect())?;
    if let Some(t) = c.timeout {
        ensure!(
            t.is_finite() && t > 0.0,
            super::UsageError(format!("invalid --timeout {t}: must be positive"))
        );
        opts.timeout = Duration::from_secs_f64(t);
    }
    if let Some(n) = c.spawn {
        if n == 0 {
            bail!(super::UsageError(
                "invalid --spawn 0: need at least 1 process".into()
            ));
        }
        // The seed's `mp.spawn(run_inference, args=(world_size,), nprocs=world_size)`.
        shoal_launch::spawn(n, |rank, world| -> Result<()> {
            let pg = shoal_dist::init_process_group(&c.backend, rank, world)?;
            let gpus = shoal_dist::cuda_device_count();
            let state = DistributedState::from_parts(pg.env().clone(), shoal_dist::VisibleDevices::All, gpus);
            body(&c, &state, &pg)
        })?;
        println!("spawn: {n} processes finished");
        return Ok(());
    }
    let state = DistributedState::new()?;
    let pg = state.process_group(backend, opts)?;
    body(&c, &state, &pg)
}

fn body(c: &DemoCmd, state: &DistributedState, pg: &ProcessGroup) -> Result<()> {
    let (rank, world) = (state.process_index(), state.num_processes());
    let tag = format!("rank {rank}/{world}");
    let part = state.split_between_processes(&c.prompts, c.apply_padding)?;
    println!(
        "{tag}: prompts {:?} (indices {:?}, {} real) on {}",
        part.items,
        part.indices,
        part.real_len,
        state.device_spec()
    );

    // Objects: all-gather in rank order, never flattened; gather to rank 0; broadcast.
    let all: Vec<Vec<usize>> = pg.all_gather_object(&part.indices)?;
    let mut real: Vec<usize> = Vec::new();
    for (r, idx) in all.iter().enumerate() {
        let expect = shoal_dist::split_indices(c.prompts.len(), r, world, c.apply_padding);
        ensure!(
            idx == &expect,
            "{tag}: all_gather_object: rank {r} sent {idx:?}, expected {expect:?}"
        );
        real.extend(&idx[..shoal_dist::split_range(c.prompts.len(), r, world).len()]);
    }
    ensure!(
        real == (0..c.prompts.len()).collect::<Vec<_>>(),
        "{tag}: the real items do not cover the input"
    );
    let gathered = pg.gather_object(&rank, 0)?;
    if rank == 0 {
        ensure!(
            gathered == Some((0..world).collect()),
            "{tag}: gather_object gave {gathered:?}"
        );
    }
    let word: String = pg.broadcast_object(Some(&"from rank 0".to_string()), 0)?;
    ensure!(word == "from rank 0", "{tag}: broadcast_object gave {word:?}");

    // Tensors on this process's device (CUDA with NCCL), in each dtype:
    // all-reduce, all-gather, broadcast, send/recv around a ring.
    let device = if pg.backend() == Backend::Nccl {
        state.device()?
    } else {
        Device::Cpu
    };
    if c.fail_rank == Some(rank) && matches!(c.fail_mode, Fault::KillEarly | Fault::HangEarly) {
        inject(c.fail_mode, &tag);
    }
    let n = world as f32;
    let host =
        |t: &Tensor| -> Result<Vec<f32>> { Ok(t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.to_vec1()?) };
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let tag = format!("{tag} {dtype:?} on {device:?}");
        let t = Tensor::new(&[(rank + 1) as f32, rank as f32], &device)?.to_dtype(dtype)?;
        let sum = host(&pg.all_reduce(&t, ReduceOp::Sum)?)?;
        ensure!(
            sum == [n * (n + 1.) / 2., n * (n - 1.) / 2.],
            "{tag}: all_reduce sum gave {sum:?}"
        );
        let max = host(&pg.all_reduce(&t, ReduceOp::Max)?)?;
        ensure!(max == [n, n - 1.], "{tag}: all_reduce max gave {max:?}");
        let parts = pg.all_gather(&t)?;
        ensure!(
            parts.len() == world,
            "{tag}: all_gather gave {} parts",
            parts.len()
        );
        for (r, p) in parts.iter().enumerate() {
            ensure!(
                host(p)? == [(r + 1) as f32, r as f32],
                "{tag}: all_gather slot {r} is wrong"
            );
        }
        let b = pg.broadcast(Some(&t), world - 1, &device)?;
        ensure!(
            host(&b)? == [n, n - 1.],
            "{tag}: broadcast from the last rank is wrong"
        );
        if world > 1 {
            let (next, prev) = ((rank + 1) % world, (rank + world - 1) % world);
            // Even ranks send first, odd ranks receive first: NCCL send/recv block.
            let got = if rank % 2 == 0 {
                pg.send(&t, next)?;
                pg.recv(prev, &device)?
            } else {
                let g = pg.recv(prev, &device)?;
                pg.send(&t, next)?;
                g
            };
            ensure!(
                host(&got)? == [(prev + 1) as f32, prev as f32],
                "{tag}: recv from rank {prev} is wrong"
            );
        }
    }

    if c.fail_rank == Some(rank) && matches!(c.fail_mode, Fault::Exit3 | Fault::Kill | Fault::Hang) {
        inject(c.fail_mode, &tag);
    }
    pg.barrier()?;
    println!("{tag}: all collectives ok");
    if state.is_main_process() {
        println!(
            "demo: {world} process(es), {} prompt(s), every collective checked",
            c.prompts.len()
        );
    }
    Ok(())
}

fn inject(mode: Fault, tag: &str) {
    tracing::warn!("{tag}: injecting fault {mode:?}");
    match mode {
        Fault::Exit3 => std::process::exit(3),
        Fault::Kill | Fault::KillEarly => {
            // SAFETY: raising a signal on our own process.
            unsafe {
                libc::raise(libc::SIGKILL);
            }
        }
        Fault::Hang | Fault::HangEarly => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    }
}

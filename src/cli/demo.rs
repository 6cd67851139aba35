//! `shoal demo`: the seed's program without the model. Each process splits the
//! prompts, then every collective is run and its result checked, so a launch
//! of the demo is also an end-to-end test of the runtime.

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use candle_core::{Device, Tensor};
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
}

pub fn run(c: DemoCmd) -> Result<()> {
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
            let pg = shoal_dist::init_process_group("cpu", rank, world)?;
            let state = DistributedState::from_parts(pg.env().clone(), shoal_dist::VisibleDevices::All, 0);
            body(&c, &state, &pg)
        })?;
        println!("spawn: {n} processes finished");
        return Ok(());
    }
    let state = DistributedState::new()?;
    let pg = state.process_group(Backend::Cpu, opts)?;
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

    // Tensors: all-reduce, all-gather, broadcast, send/recv around a ring.
    let t = Tensor::new(&[(rank + 1) as f32, rank as f32], &Device::Cpu)?;
    let sum: Vec<f32> = pg.all_reduce(&t, ReduceOp::Sum)?.to_vec1()?;
    let n = world as f32;
    ensure!(
        sum == [n * (n + 1.) / 2., n * (n - 1.) / 2.],
        "{tag}: all_reduce sum gave {sum:?}"
    );
    let max: Vec<f32> = pg.all_reduce(&t, ReduceOp::Max)?.to_vec1()?;
    ensure!(max == [n, n - 1.], "{tag}: all_reduce max gave {max:?}");
    let parts = pg.all_gather(&t)?;
    for (r, p) in parts.iter().enumerate() {
        ensure!(
            p.to_vec1::<f32>()? == [(r + 1) as f32, r as f32],
            "{tag}: all_gather slot {r} is wrong"
        );
    }
    let b = pg.broadcast(Some(&t), world - 1, &Device::Cpu)?;
    ensure!(
        b.to_vec1::<f32>()? == [n, n - 1.],
        "{tag}: broadcast from the last rank is wrong"
    );
    if world > 1 {
        let (next, prev) = ((rank + 1) % world, (rank + world - 1) % world);
        pg.send(&t, next)?;
        let got = pg.recv(prev, &Device::Cpu)?;
        ensure!(
            got.to_vec1::<f32>()? == [(prev + 1) as f32, prev as f32],
            "{tag}: recv from rank {prev} is wrong"
        );
    }

    if c.fail_rank == Some(rank) {
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
    eprintln!("{tag}: injecting fault {mode:?}");
    match mode {
        Fault::Exit3 => std::process::exit(3),
        Fault::Kill => {
            // SAFETY: raising a signal on our own process.
            unsafe {
                libc::raise(libc::SIGKILL);
            }
        }
        Fault::Hang => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    }
}

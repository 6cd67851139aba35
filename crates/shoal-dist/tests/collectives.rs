#![allow(clippy::unwrap_used, reason = "a test fails loudly on a broken precondition")]
//! The same collective test bodies against every backend of the `Communicator`
//! seam: the cpu backend here (CI), NCCL in a build with `--features nccl` on a
//! GPU machine (one rank per visible GPU). Each rank is a thread with its own
//! `ProcessGroup`, over a real TCP store.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use shoal_dist::{Backend, GroupOptions, ProcessGroup, ReduceOp, explicit_env};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

fn host(t: &Tensor) -> Vec<f32> {
    t.to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The test bodies: objects, then every tensor collective in f32, f16 and bf16.
fn body(pg: &ProcessGroup, device: &Device) {
    let (rank, world) = (pg.rank(), pg.world_size());
    let all: Vec<usize> = pg.all_gather_object(&(rank * 10)).unwrap();
    assert_eq!(all, (0..world).map(|r| r * 10).collect::<Vec<_>>());
    let word: String = pg.broadcast_object(Some(&"hi".to_string()), 0).unwrap();
    assert_eq!(word, "hi");
    let n = world as f32;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let t = Tensor::new(&[(rank + 1) as f32, rank as f32], device)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let sum = pg.all_reduce(&t, ReduceOp::Sum).unwrap();
        assert_eq!(sum.dtype(), dtype);
        assert_eq!(
            host(&sum),
            [n * (n + 1.) / 2., n * (n - 1.) / 2.],
            "{dtype:?} sum"
        );
        assert_eq!(
            host(&pg.all_reduce(&t, ReduceOp::Max).unwrap()),
            [n, n - 1.],
            "{dtype:?} max"
        );
        let parts = pg.all_gather(&t).unwrap();
        assert_eq!(parts.len(), world);
        for (r, p) in parts.iter().enumerate() {
            assert_eq!(
                host(p),
                [(r + 1) as f32, r as f32],
                "{dtype:?} all_gather slot {r}"
            );
        }
        let b = pg.broadcast(Some(&t), world - 1, device).unwrap();
        assert_eq!(host(&b), [n, n - 1.], "{dtype:?} broadcast");
        if world > 1 {
            let (next, prev) = ((rank + 1) % world, (rank + world - 1) % world);
            let got = if rank % 2 == 0 {
                pg.send(&t, next).unwrap();
                pg.recv(prev, device).unwrap()
            } else {
                let g = pg.recv(prev, device).unwrap();
                pg.send(&t, next).unwrap();
                g
            };
            assert_eq!(
                host(&got),
                [(prev + 1) as f32, prev as f32],
                "{dtype:?} recv from {prev}"
            );
            // The same ring with the shape known to the receiver (no metadata on NCCL).
            let like = Tensor::zeros(2, dtype, device).unwrap();
            let got = if rank % 2 == 0 {
                pg.send_known(&t, next).unwrap();
                pg.recv_like(prev, &like).unwrap()
            } else {
                let g = pg.recv_like(prev, &like).unwrap();
                pg.send_known(&t, next).unwrap();
                g
            };
            assert_eq!((got.dims(), got.dtype()), (like.dims(), dtype));
            assert_eq!(
                host(&got),
                [(prev + 1) as f32, prev as f32],
                "{dtype:?} recv_like from {prev}"
            );
        }
    }
    // Shapes that disagree are an error naming the ranks, never a wrong answer.
    if world > 1 && device.is_cpu() {
        let t = Tensor::zeros(rank + 1, DType::F32, device).unwrap();
        let e = pg.all_gather(&t).unwrap_err().to_string();
        assert!(e.contains("rank 0") && e.contains("rank 1"), "{e}");
        // A tensor of another shape than the receiver expects is an error naming the sender.
        if rank == 0 {
            pg.send_known(&Tensor::zeros(3, DType::F32, device).unwrap(), 1)
                .unwrap();
        } else if rank == 1 {
            let e = pg
                .recv_like(0, &Tensor::zeros(2, DType::F32, device).unwrap())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("rank 0 sent [3] f32 where [2] f32 was expected"),
                "{e}"
            );
        }
    }
    pg.barrier().unwrap();
}

fn run_suite(backend: Backend, world: usize, device: fn(usize) -> Device) {
    let port = free_port();
    let vars: BTreeMap<String, String> = [
        ("MASTER_ADDR".to_string(), "127.0.0.1".to_string()),
        ("MASTER_PORT".to_string(), port.to_string()),
    ]
    .into_iter()
    .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                let vars = vars.clone();
                s.spawn(move || {
                    let env = explicit_env(&vars, rank, world).unwrap();
                    let dev = device(rank);
                    let opts = GroupOptions {
                        timeout: std::time::Duration::from_secs(60),
                        debug: true,
                        token: Some(shoal_dist::Secret::parse("collectives-suite-secret").unwrap()),
                    };
                    let pg = ProcessGroup::with_device(env, backend, opts, Some(dev.clone())).unwrap();
                    body(&pg, &dev);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

/// One test per (backend, world size), all with the same body.
macro_rules! collective_suite {
    ($name:ident, $backend:expr, $world:expr, $device:expr) => {
        #[test]
        fn $name() {
            run_suite($backend, $world, $device);
        }
    };
}

collective_suite!(cpu_one_rank, Backend::Cpu, 1, |_| Device::Cpu);
collective_suite!(cpu_two_ranks, Backend::Cpu, 2, |_| Device::Cpu);
collective_suite!(cpu_three_ranks, Backend::Cpu, 3, |_| Device::Cpu);

#[cfg(feature = "nccl")]
fn gpus() -> usize {
    shoal_dist::cuda_device_count().max(1)
}

#[cfg(feature = "nccl")]
collective_suite!(nccl_one_rank_per_gpu, Backend::Nccl, gpus(), |r| {
    Device::new_cuda(r).unwrap()
});

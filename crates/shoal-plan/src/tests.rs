use super::*;
use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest};

const G: u64 = 1_000_000_000;

fn comp(name: &str, gb: u64) -> Component {
    Component {
        name: name.into(),
        weights: gb * G,
        activations: 0,
    }
}

fn sd() -> Vec<Component> {
    vec![comp("text_encoder", 1), comp("unet", 4), comp("vae", 1)]
}

#[test]
fn balanced_spreads_largest_first_over_the_gpus() {
    let p = plan(
        &sd(),
        &[(Dev::Gpu(0), 24 * G), (Dev::Gpu(1), 24 * G)],
        &Strategy::Balanced,
    )
    .unwrap();
    // Largest (unet) → 0; then the cycle 0,1,1,0 gives 1, 1.
    assert_eq!(p.map["unet"], Dev::Gpu(0));
    assert_eq!(p.map["text_encoder"], Dev::Gpu(1));
    assert_eq!(p.map["vae"], Dev::Gpu(1));
    assert!(p.on_cpu.is_empty());
    assert_eq!(p.used[&Dev::Gpu(1)], 2 * G);
}

#[test]
fn other_gpus_are_tried_before_the_cpu() {
    // diffusers would put c on the CPU with 14 GB free on GPU 0 (semantics §10).
    let c = vec![comp("a", 10), comp("b", 10), comp("c", 10)];
    let caps = [(Dev::Gpu(0), 24 * G), (Dev::Gpu(1), 12 * G), (Dev::Cpu, 64 * G)];
    let p = plan(&c, &caps, &Strategy::Balanced).unwrap();
    assert_eq!(p.map["c"], Dev::Gpu(0));
    assert!(p.on_cpu.is_empty());
}

#[test]
fn cpu_fallback_is_recorded_and_only_when_allowed() {
    let c = vec![comp("a", 10), comp("b", 10), comp("c", 10)];
    let p = plan(
        &c,
        &[(Dev::Gpu(0), 12 * G), (Dev::Cpu, 64 * G)],
        &Strategy::Balanced,
    )
    .unwrap();
    assert_eq!(p.on_cpu, ["b", "c"]);
    let e = plan(&c, &[(Dev::Gpu(0), 12 * G)], &Strategy::Balanced).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, PlanError::DoesNotFit { .. }));
    assert!(
        msg.contains("device 0: 2.00 GB free") && msg.contains("allow CPU placement"),
        "{msg}"
    );
}

#[test]
fn sequential_fills_in_order() {
    let p = plan(
        &sd(),
        &[(Dev::Gpu(0), 5 * G), (Dev::Gpu(1), 24 * G)],
        &Strategy::Sequential,
    )
    .unwrap();
    assert_eq!(p.map["text_encoder"], Dev::Gpu(0));
    assert_eq!(p.map["unet"], Dev::Gpu(0));
    assert_eq!(p.map["vae"], Dev::Gpu(1));
}

#[test]
fn explicit_maps_are_checked() {
    let caps = [(Dev::Gpu(0), 24 * G), (Dev::Gpu(1), 24 * G)];
    let s: Strategy = "unet=1,vae=1,text_encoder=0".parse().unwrap();
    let p = plan(&sd(), &caps, &s).unwrap();
    assert_eq!(p.map["unet"], Dev::Gpu(1));
    let bad: Strategy = "unet=1,vea=1,text_encoder=0".parse().unwrap();
    assert!(
        plan(&sd(), &caps, &bad)
            .unwrap_err()
            .to_string()
            .contains("\"vea\"")
    );
    let missing: Strategy = "unet=1,text_encoder=0".parse().unwrap();
    assert!(
        plan(&sd(), &caps, &missing)
            .unwrap_err()
            .to_string()
            .contains("\"vae\"")
    );
    let gone: Strategy = "unet=3,vae=1,text_encoder=0".parse().unwrap();
    assert!(matches!(
        plan(&sd(), &caps, &gone).unwrap_err(),
        PlanError::UnknownDevice { .. }
    ));
    let full = plan(&sd(), &[(Dev::Gpu(0), 24 * G), (Dev::Gpu(1), 3 * G)], &s).unwrap_err();
    assert!(full.to_string().contains("short by 2.00 GB"), "{full}");
    assert!("unet=x".parse::<Strategy>().is_err());
    assert!("balanced-ish".parse::<Strategy>().is_err());
    assert!("unet=0,unet=1".parse::<Strategy>().is_err());
}

#[test]
fn no_gpu_is_an_error_unless_the_host_is_allowed() {
    for s in [Strategy::Balanced, Strategy::Sequential] {
        assert_eq!(plan(&sd(), &[], &s), Err(PlanError::NoGpu));
        // A cpu budget and no GPU: everything on the host, said so.
        let p = plan(&sd(), &[(Dev::Cpu, 64 * G)], &s).unwrap();
        assert!(p.map.values().all(|d| *d == Dev::Cpu));
        assert_eq!(p.on_cpu.len(), 3);
        let small = plan(&sd(), &[(Dev::Cpu, 2 * G)], &s).unwrap_err().to_string();
        assert!(
            small.contains("of weights +") && small.contains("activation allowance"),
            "{small}"
        );
    }
    // An explicit map is checked against the model before any device, and the
    // host needs no budget when the map names it.
    let typo: Strategy = "unet=1,vea=0".parse().unwrap();
    assert!(matches!(
        plan(&sd(), &[], &typo),
        Err(PlanError::UnknownComponent { ref name, .. }) if name == "vea"
    ));
    let host: Strategy = "unet=cpu,vae=cpu,text_encoder=cpu".parse().unwrap();
    let p = plan(&sd(), &[], &host).unwrap();
    assert_eq!(p.on_cpu.len(), 3);
    assert!(!p.capacity.contains_key(&Dev::Cpu));
    let gpu: Strategy = "unet=0,vae=cpu,text_encoder=cpu".parse().unwrap();
    let e = plan(&sd(), &[], &gpu).unwrap_err().to_string();
    assert!(
        e.contains("device 0 is not available") && e.contains("no GPU is visible"),
        "{e}"
    );
}

#[test]
fn memory_strings() {
    assert_eq!(parse_bytes("20GiB").unwrap(), 20 << 30);
    assert_eq!(parse_bytes("1.5GB").unwrap(), 1_500_000_000);
    assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
    assert_eq!(parse_bytes("100").unwrap(), 100);
    for bad in ["16Gb", "16gb", "16G", "GB", "-1GB", "1e3GB", ""] {
        assert!(parse_bytes(bad).is_err(), "{bad}");
    }
    let m = parse_max_memory("0=20GiB,1=20GiB,cpu=64GiB").unwrap();
    assert_eq!(
        m,
        vec![
            (Dev::Gpu(0), 20 << 30),
            (Dev::Gpu(1), 20 << 30),
            (Dev::Cpu, 64 << 30)
        ]
    );
    assert!(parse_max_memory("0=1GB,0=2GB").is_err());
    assert!(
        parse_max_memory("x=1GB")
            .unwrap_err()
            .to_string()
            .contains("\"x\"")
    );
    assert!(parse_max_memory("0:1GB").is_err());
}

proptest! {
    #[test]
    fn every_component_placed_once_within_capacity(
        sizes in proptest::collection::vec(1u64..20, 1..6),
        caps in proptest::collection::vec(1u64..40, 1..4),
        cpu in any::<bool>(),
    ) {
        let comps: Vec<Component> = sizes.iter().enumerate().map(|(i, s)| comp(&format!("c{i}"), *s)).collect();
        let mut capacity: Vec<(Dev, u64)> = caps.iter().enumerate().map(|(i, c)| (Dev::Gpu(i), c * G)).collect();
        if cpu { capacity.push((Dev::Cpu, 1000 * G)); }
        for s in [Strategy::Balanced, Strategy::Sequential] {
            match plan(&comps, &capacity, &s) {
                Ok(p) => {
                    prop_assert_eq!(p.map.len(), comps.len());
                    for (d, used) in &p.used { prop_assert!(*used <= p.capacity[d]); }
                    prop_assert_eq!(p.on_cpu.len(), p.map.values().filter(|d| **d == Dev::Cpu).count());
                }
                Err(PlanError::DoesNotFit { weights, activations, free, .. }) => {
                    prop_assert!(free.iter().all(|(_, f)| *f < weights + activations));
                }
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
    }
}

//! Issue 6: a device map and model offload give the same image as one device;
//! moving or offloading a mapped pipeline is refused until the map is reset.
#![allow(clippy::unwrap_used, reason = "a test fails loudly on a broken precondition")]

use candle_core::{DType, Device};
use shoal_diffusion::pipeline::{ComponentDevices, Placement};
use shoal_diffusion::{Item, LoadOptions, Params, Pipeline};

fn image(p: &Pipeline) -> Vec<f32> {
    let item = Item {
        prompt: "a red fox".into(),
        negative_prompt: None,
        seed: 3,
        latents: None,
        step_noise: None,
    };
    let params = Params {
        steps: 3,
        guidance: 7.5,
        height: 32,
        width: 32,
    };
    p.generate(&[item], &params, &mut |_, _| {})
        .unwrap()
        .images
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn r6_maps_and_offload_give_the_same_image_and_exclude_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let preset = shoal_diffusion::presets::preset("tiny-sdxl").unwrap();
    shoal_diffusion::make_model(&preset, &dir, 0, DType::F32, &mut |_, _| {}).unwrap();
    let opts = LoadOptions::default();
    let one = Pipeline::load(&dir, &Device::Cpu, DType::F32, &opts).unwrap();
    assert!(one.device_map().is_none());
    let reference = image(&one);

    let mut mapped = Pipeline::load_placed(
        &dir,
        Placement::Map(ComponentDevices::all(&Device::Cpu)),
        DType::F32,
        &opts,
    )
    .unwrap();
    let m = mapped.device_map().unwrap();
    assert_eq!(
        m.keys().collect::<Vec<_>>(),
        ["text_encoder", "text_encoder_2", "unet", "vae"]
    );
    assert!(
        image(&mapped) == reference,
        "a device map must not change the image"
    );
    let e = mapped.to(&Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("reset_device_map"), "{e}");
    assert!(mapped.enable_model_cpu_offload(&Device::Cpu).is_err());
    mapped.reset_device_map().unwrap();
    assert!(mapped.device_map().is_none());
    mapped.enable_model_cpu_offload(&Device::Cpu).unwrap();
    assert!(
        image(&mapped) == reference,
        "model offload must not change the image"
    );
    mapped.enable_sequential_cpu_offload(&Device::Cpu).unwrap();
    assert!(
        image(&mapped) == reference,
        "sequential offload must not change the image"
    );
    mapped.to(&Device::Cpu).unwrap();
    assert!(image(&mapped) == reference);
}

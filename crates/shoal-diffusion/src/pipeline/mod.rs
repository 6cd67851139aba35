//! The text-to-image pipeline: `StableDiffusionPipeline` and
//! `StableDiffusionXLPipeline`, from a diffusers folder.
//!
//! Written from `diffusers src/diffusers/pipelines/stable_diffusion/pipeline_stable_diffusion.py`
//! and `stable_diffusion_xl/pipeline_stable_diffusion_xl.py`. The initial noise
//! of every item comes from a host RNG seeded by the item's own seed, so an
//! image never depends on batching or on how items are split across
//! processes. Latents stay in f32 between UNet calls.

mod generate;

pub use generate::{CfgHalf, CfgPartner, Denoised, StageRing, splitmix};

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::{Map, Value};

use crate::clip::ClipTextModel;
use crate::config::{ClipConfig, ModelIndex, UNetConfig, VaeConfig, read_json};
use crate::error::{Error, Result};
use crate::scheduler::{SchedulerConfig, class_for};
use crate::tokenizer::ClipTokenizer;
use crate::unet::UNet;
use crate::vae::Decoder;
use crate::weights;

/// The largest side accepted, in pixels (a guard against typos such as 51200).
pub const MAX_SIDE: usize = 4096;
/// The most steps accepted.
pub const MAX_STEPS: usize = 1000;

/// How to load a pipeline.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Replaces the model's scheduler class (`ddim`, `euler`, ... or a class name).
    pub scheduler: Option<String>,
    /// Prefer `*.{variant}.safetensors` files (`fp16`).
    pub variant: Option<String>,
    /// Run each item as its own micro-batch, so that no result depends on the
    /// batch it came in (default: on for CPU, off for CUDA, where batching is
    /// what makes a GPU fast). candle's CPU GEMM takes other code paths for
    /// small row counts, so batched rows can differ in the last bit.
    pub batch_invariant: Option<bool>,
    /// Build only these UNet stages (pipeline parallelism: a process holds its
    /// stage's weights alone); `None`: the whole UNet.
    pub unet_stages: Option<Vec<crate::unet::Stage>>,
    /// Load the UNet (its `unet_stages`) and nothing else: a later process of a
    /// UNet pipeline, which never encodes text or decodes.
    pub unet_only: bool,
    /// Before the first call of a new batch shape, collect the cuDNN plans its
    /// UNet call and decode will need and build them on this many threads
    /// ([`crate::nn::prebuild_plans`]); 0: each plan is built on its first use.
    /// Only with the `cudnn` kernels on CUDA.
    pub plan_threads: usize,
    /// Record the UNet's call as a CUDA graph per batch shape and replay it
    /// (`crate::nn::graph`; only where that is sound: a resident UNet on CUDA
    /// with the fast kernels). `None`: on.
    pub cuda_graphs: Option<bool>,
}

/// One image to generate.
#[derive(Debug, Clone)]
pub struct Item {
    /// The prompt.
    pub prompt: String,
    /// The negative prompt (`None`: empty, or zeros for SDXL).
    pub negative_prompt: Option<String>,
    /// The seed of this item's noise.
    pub seed: u64,
    /// Initial noise `(c, h/f, w/f)` instead of seeded noise; like diffusers'
    /// `latents=`, it is scaled by the scheduler's `init_noise_sigma`.
    pub latents: Option<Tensor>,
    /// Ancestral schedulers' per-step noise `(steps, c, h/f, w/f)` instead of
    /// seeded noise (to reproduce another implementation's draws exactly).
    pub step_noise: Option<Tensor>,
}

/// Parameters shared by a batch.
#[derive(Debug, Clone)]
pub struct Params {
    /// Denoising steps.
    pub steps: usize,
    /// Classifier-free guidance scale (CFG runs when above 1).
    pub guidance: f64,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
}

/// What a batch produces.
#[derive(Debug, Clone)]
pub struct Output {
    /// Final latents `(b, c, h/f, w/f)`, f32, before VAE scaling.
    pub latents: Tensor,
    /// Images `(b, 3, h, w)`, f32 in [0, 1].
    pub images: Tensor,
    /// Per item: prompt tokens before truncation (BOS/EOS included).
    pub prompt_tokens: Vec<usize>,
}

enum Encoders {
    Sd {
        tok: ClipTokenizer,
        te: ClipTextModel,
    },
    Xl {
        tok: ClipTokenizer,
        te: ClipTextModel,
        tok2: Box<ClipTokenizer>,
        te2: Box<ClipTextModel>,
    },
}

/// What a model folder's configs say, read without loading any weight.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// The default image side (`sample_size × VAE factor`).
    pub default_size: usize,
    /// The VAE's spatial factor.
    pub vae_scale_factor: usize,
    /// The scheduler class that will run.
    pub scheduler_class: String,
    /// Its config.
    pub scheduler: SchedulerConfig,
}

impl ModelInfo {
    /// Reads and cross-checks the configs (cheap: no weights).
    pub fn read(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        ModelIndex::load(dir)?;
        let unet_path = dir.join("unet").join("config.json");
        let unet: UNetConfig = read_json(&unet_path)?;
        unet.blocks(&unet_path)?;
        let vae_path = dir.join("vae").join("config.json");
        let vae: VaeConfig = read_json(&vae_path)?;
        vae.validate(&vae_path)?;
        let sched = scheduler_config(dir, opts)?;
        Ok(ModelInfo {
            default_size: unet.sample_size.unwrap_or(64).saturating_mul(vae.scale_factor()),
            vae_scale_factor: vae.scale_factor(),
            scheduler_class: sched.class.clone(),
            scheduler: sched,
        })
    }

    /// Checks parameters; errors name the field and the range.
    pub fn check(&self, p: &Params) -> Result<()> {
        let f = self.vae_scale_factor;
        for (field, v) in [("height", p.height), ("width", p.width)] {
            if v == 0 || v % f != 0 || v > MAX_SIDE {
                return Err(Error::invalid(
                    field,
                    v,
                    format!("must be a positive multiple of {f} (the VAE factor), at most {MAX_SIDE}"),
                ));
            }
        }
        if p.steps == 0 || p.steps > MAX_STEPS {
            return Err(Error::invalid(
                "steps",
                p.steps,
                format!("must be between 1 and {MAX_STEPS}"),
            ));
        }
        if !p.guidance.is_finite() || p.guidance < 0.0 {
            return Err(Error::invalid(
                "guidance",
                p.guidance,
                "must be a finite number ≥ 0",
            ));
        }
        // The schedule's own limits (PNDM's Runge-Kutta warm-up needs 4 steps).
        crate::scheduler::Scheduler::new(&self.scheduler, p.steps)?;
        Ok(())
    }
}

fn scheduler_config(dir: &Path, opts: &LoadOptions) -> Result<SchedulerConfig> {
    let sched_path = dir.join("scheduler").join("scheduler_config.json");
    let sched_map: Value = read_json(&sched_path)?;
    let empty = Map::new();
    let override_class = match &opts.scheduler {
        None => None,
        Some(s) => Some(class_for(s).ok_or_else(|| {
            Error::invalid(
                "scheduler",
                s,
                "supported: pndm, ddim, euler, euler-a, dpm++2m (or their diffusers class names)",
            )
        })?),
    };
    SchedulerConfig::from_map(
        sched_map.as_object().unwrap_or(&empty),
        override_class,
        &sched_path,
    )
}

/// Where a pipeline's components run.
#[derive(Debug, Clone)]
// Made once per pipeline; with CUDA a `Device` is large, and boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Placement {
    /// Everything on one device (`pipe.to(device)`).
    Device(Device),
    /// A device per component (`device_map`, the `hf_device_map` analog).
    Map(ComponentDevices),
    /// Model CPU offload: each component is loaded onto this device only while
    /// it runs (text encoders, then the UNet, then the VAE), from memory-mapped
    /// files, and freed after.
    OffloadModel(Device),
    /// Sequential CPU offload: every component's weights are streamed onto the
    /// device one layer at a time for every call (the text encoders' embeddings
    /// and layers, the UNet's ResNets, attention blocks and resamplers, the VAE
    /// decoder's layers) and freed after it.
    OffloadSequential(Device),
}

/// The device of each component.
#[derive(Debug, Clone)]
pub struct ComponentDevices {
    /// `text_encoder`.
    pub text_encoder: Device,
    /// `text_encoder_2` (SDXL).
    pub text_encoder_2: Device,
    /// `unet`.
    pub unet: Device,
    /// `vae`.
    pub vae: Device,
}

impl ComponentDevices {
    /// Every component on `d`.
    pub fn all(d: &Device) -> Self {
        ComponentDevices {
            text_encoder: d.clone(),
            text_encoder_2: d.clone(),
            unet: d.clone(),
            vae: d.clone(),
        }
    }
}

/// Components that stay loaded between calls.
struct Resident {
    /// `None` on a pipeline-stage process that runs UNet stages only.
    encoders: Option<Encoders>,
    unet: UNet,
    vae: Option<Decoder>,
}

/// A component loaded for this call, or borrowed from the resident set.
enum Held<'a, T> {
    Borrowed(&'a T),
    Owned(T),
}

impl<T> std::ops::Deref for Held<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            Held::Borrowed(t) => t,
            Held::Owned(t) => t,
        }
    }
}

/// A loaded pipeline.
pub struct Pipeline {
    resident: Option<Resident>,
    placement: Placement,
    unet_cfg: UNetConfig,
    blocks: Vec<crate::config::BlockSpec>,
    xl: bool,
    variant: Option<String>,
    vae_cfg: VaeConfig,
    vae_dtype: DType,
    sched: SchedulerConfig,
    latent_channels: usize,
    force_zeros: bool,
    dtype: DType,
    dir: PathBuf,
    default_size: usize,
    batch_invariant: bool,
    unet_stages: Option<Vec<crate::unet::Stage>>,
    unet_only: bool,
    plan_threads: usize,
    cuda_graphs: bool,
    /// The batch shapes (items, height, width, joint CFG call) whose plans were built ahead.
    planned: std::sync::Mutex<std::collections::HashSet<(usize, usize, usize, bool)>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Pipeline({}, {:?}, {}, {:?})",
            self.dir.display(),
            self.dtype,
            self.sched.class,
            self.placement
        )
    }
}

/// The text encoder in `dir`, held on `device` or, `streamed`, moved there one
/// part at a time for each call (sequential offload).
fn load_clip(
    dir: &Path,
    dtype: DType,
    device: &Device,
    variant: Option<&str>,
    eos: u32,
    streamed: bool,
) -> Result<ClipTextModel> {
    let cfg_path = dir.join("config.json");
    let cfg: ClipConfig = read_json(&cfg_path)?;
    cfg.validate(&cfg_path)?;
    let files = weights::find_weights(dir, "model", variant)?;
    let vb = weights::load(&files, dtype, device)?;
    if streamed {
        return Ok(ClipTextModel::streamed(vb, &cfg, eos));
    }
    ClipTextModel::new(vb, &cfg, eos).map_err(weights::in_file(&files))
}

/// The hidden width a text encoder's config declares.
fn clip_width(dir: &Path) -> Result<usize> {
    Ok(read_json::<ClipConfig>(&dir.join("config.json"))?.hidden_size)
}

fn unet_only() -> Error {
    Error::invalid(
        "component",
        "text encoder or VAE",
        "this pipeline was loaded with UNet stages only (LoadOptions::unet_only)",
    )
}

fn map_active() -> Error {
    Error::invalid(
        "device_map",
        "active",
        "the pipeline has a device map; call reset_device_map() (or drop --device-map) first",
    )
}

impl Pipeline {
    /// Loads a diffusers folder onto `device` in `dtype` (`from_pretrained`).
    pub fn load(dir: &Path, device: &Device, dtype: DType, opts: &LoadOptions) -> Result<Self> {
        Self::load_placed(dir, Placement::Device(device.clone()), dtype, opts)
    }

    /// Loads a diffusers folder with its components placed as `placement` says.
    pub fn load_placed(dir: &Path, placement: Placement, dtype: DType, opts: &LoadOptions) -> Result<Self> {
        let index = ModelIndex::load(dir)?;
        let unet_cfg_path = dir.join("unet").join("config.json");
        let unet_cfg: UNetConfig = read_json(&unet_cfg_path)?;
        let blocks = unet_cfg.blocks(&unet_cfg_path)?;
        let vae_cfg_path = dir.join("vae").join("config.json");
        let vae_cfg: VaeConfig = read_json(&vae_cfg_path)?;
        vae_cfg.validate(&vae_cfg_path)?;
        let sched = scheduler_config(dir, opts)?;

        // Cross-checks between components, before any weight is read.
        let xl = index.component("text_encoder_2").is_some();
        let text_width = clip_width(&dir.join("text_encoder"))?
            + if xl {
                clip_width(&dir.join("text_encoder_2"))?
            } else {
                0
            };
        if let Some(b) = blocks
            .iter()
            .find(|b| b.cross_attn && b.cross_attention_dim != text_width)
        {
            return Err(Error::Config {
                path: unet_cfg_path,
                field: "cross_attention_dim".into(),
                detail: format!(
                    "{} does not match the text encoder width {text_width}",
                    b.cross_attention_dim
                ),
            });
        }
        if xl != unet_cfg.addition_embed_type.is_some() {
            return Err(Error::Config {
                path: unet_cfg_path,
                field: "addition_embed_type".into(),
                detail: "SDXL needs both text_encoder_2 and addition_embed_type: text_time".into(),
            });
        }
        if unet_cfg.in_channels != vae_cfg.latent_channels {
            return Err(Error::Config {
                path: unet_cfg_path,
                field: "in_channels".into(),
                detail: format!(
                    "{} does not match the VAE's latent_channels {}",
                    unet_cfg.in_channels, vae_cfg.latent_channels
                ),
            });
        }
        // diffusers decodes SDXL's VAE in f32 (`force_upcast`): f16 overflows there.
        let vae_dtype = if vae_cfg.force_upcast { DType::F32 } else { dtype };
        let exec = match &placement {
            Placement::Device(d) | Placement::OffloadModel(d) | Placement::OffloadSequential(d) => d.clone(),
            Placement::Map(m) => m.unet.clone(),
        };
        let mut pipe = Pipeline {
            resident: None,
            unet_cfg: unet_cfg.clone(),
            blocks,
            xl,
            variant: opts.variant.clone(),
            latent_channels: vae_cfg.latent_channels,
            default_size: unet_cfg
                .sample_size
                .unwrap_or(64)
                .saturating_mul(vae_cfg.scale_factor()),
            vae_cfg,
            vae_dtype,
            sched,
            force_zeros: index.force_zeros_for_empty_prompt,
            dtype,
            dir: dir.to_path_buf(),
            batch_invariant: opts.batch_invariant.unwrap_or(exec.is_cpu()),
            unet_stages: opts.unet_stages.clone(),
            unet_only: opts.unet_only,
            plan_threads: opts.plan_threads,
            cuda_graphs: opts.cuda_graphs.unwrap_or(true),
            planned: Default::default(),
            placement,
        };
        pipe.reload()?;
        Ok(pipe)
    }

    fn devices(&self) -> ComponentDevices {
        match &self.placement {
            Placement::Device(d) | Placement::OffloadModel(d) | Placement::OffloadSequential(d) => {
                ComponentDevices::all(d)
            }
            Placement::Map(m) => m.clone(),
        }
    }

    /// Loads the resident components for the current placement (none under
    /// offload, where every weight file is only checked).
    fn reload(&mut self) -> Result<()> {
        self.resident = None;
        if let Placement::OffloadModel(_) | Placement::OffloadSequential(_) = self.placement {
            let v = self.variant.as_deref();
            for (d, stem) in [
                ("text_encoder", "model"),
                ("unet", "diffusion_pytorch_model"),
                ("vae", "diffusion_pytorch_model"),
            ] {
                for f in weights::find_weights(&self.dir.join(d), stem, v)? {
                    weights::preflight(&f)?;
                }
            }
            return Ok(());
        }
        let d = self.devices();
        self.resident = Some(Resident {
            encoders: (!self.unet_only)
                .then(|| self.load_encoders(&d, false))
                .transpose()?,
            unet: self.load_unet(&d.unet)?,
            vae: (!self.unet_only).then(|| self.load_vae(&d.vae)).transpose()?,
        });
        Ok(())
    }

    /// The tokenizers and text encoders, the encoders `streamed` one part at a
    /// time under sequential offload.
    fn load_encoders(&self, d: &ComponentDevices, streamed: bool) -> Result<Encoders> {
        let v = self.variant.as_deref();
        let tok = ClipTokenizer::from_dir(&self.dir.join("tokenizer"))?;
        let te = load_clip(
            &self.dir.join("text_encoder"),
            self.dtype,
            &d.text_encoder,
            v,
            tok.eos_id(),
            streamed,
        )?;
        if !self.xl {
            return Ok(Encoders::Sd { tok, te });
        }
        let tok2 = ClipTokenizer::from_dir(&self.dir.join("tokenizer_2"))?;
        let te2 = load_clip(
            &self.dir.join("text_encoder_2"),
            self.dtype,
            &d.text_encoder_2,
            v,
            tok2.eos_id(),
            streamed,
        )?;
        Ok(Encoders::Xl {
            tok,
            te,
            tok2: Box::new(tok2),
            te2: Box::new(te2),
        })
    }

    fn load_unet(&self, device: &Device) -> Result<UNet> {
        let files = weights::find_weights(
            &self.dir.join("unet"),
            "diffusion_pytorch_model",
            self.variant.as_deref(),
        )?;
        let vb = weights::load(&files, self.dtype, device)?;
        let layout = crate::nn::Layout::for_weights(device, self.dtype);
        let mut unet = UNet::new_stages(
            vb,
            &self.unet_cfg,
            &self.blocks,
            layout,
            self.unet_stages.as_deref(),
        )
        .map_err(weights::in_file(&files))?;
        unet.record_graphs(self.cuda_graphs);
        Ok(unet)
    }

    fn vae_files(&self) -> Result<Vec<PathBuf>> {
        weights::find_weights(
            &self.dir.join("vae"),
            "diffusion_pytorch_model",
            self.variant.as_deref(),
        )
    }

    fn load_vae(&self, device: &Device) -> Result<Decoder> {
        let files = self.vae_files()?;
        let vb = weights::load(&files, self.vae_dtype, device)?;
        Decoder::new(vb, &self.vae_cfg).map_err(|e| weights::in_file(&files)(Error::Candle(e)))
    }

    /// The `hf_device_map` analog: component → device, when a map is active.
    pub fn device_map(&self) -> Option<std::collections::BTreeMap<String, String>> {
        let Placement::Map(m) = &self.placement else {
            return None;
        };
        let name = |d: &Device| match d.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
            candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        };
        let mut out = std::collections::BTreeMap::new();
        out.insert("text_encoder".to_string(), name(&m.text_encoder));
        if self.xl {
            out.insert("text_encoder_2".to_string(), name(&m.text_encoder_2));
        }
        out.insert("unet".to_string(), name(&m.unet));
        out.insert("vae".to_string(), name(&m.vae));
        Some(out)
    }

    /// Undoes a device map: every component back on the CPU (as diffusers'
    /// `reset_device_map`), after which `to` and the offload modes are allowed.
    pub fn reset_device_map(&mut self) -> Result<()> {
        self.placement = Placement::Device(Device::Cpu);
        self.reload()
    }

    /// Moves the whole pipeline to `device`; an error while a device map is active.
    pub fn to(&mut self, device: &Device) -> Result<()> {
        if matches!(self.placement, Placement::Map(_)) {
            return Err(map_active());
        }
        self.placement = Placement::Device(device.clone());
        self.reload()
    }

    /// Sequential CPU offload onto `device`; an error while a device map is active.
    pub fn enable_sequential_cpu_offload(&mut self, device: &Device) -> Result<()> {
        if matches!(self.placement, Placement::Map(_)) {
            return Err(map_active());
        }
        self.placement = Placement::OffloadSequential(device.clone());
        self.reload()
    }

    /// Whether the pipeline runs under sequential CPU offload.
    pub(crate) fn offloads_sequentially(&self) -> bool {
        matches!(self.placement, Placement::OffloadSequential(_))
    }

    /// Model CPU offload onto `device`; an error while a device map is active.
    pub fn enable_model_cpu_offload(&mut self, device: &Device) -> Result<()> {
        if matches!(self.placement, Placement::Map(_)) {
            return Err(map_active());
        }
        self.placement = Placement::OffloadModel(device.clone());
        self.reload()
    }

    fn encoders(&self) -> Result<Held<'_, Encoders>> {
        Ok(match &self.resident {
            Some(r) => Held::Borrowed(r.encoders.as_ref().ok_or_else(unet_only)?),
            None => Held::Owned(self.load_encoders(&self.devices(), self.offloads_sequentially())?),
        })
    }

    fn unet(&self) -> Result<Held<'_, UNet>> {
        Ok(match (&self.resident, &self.placement) {
            (Some(r), _) => Held::Borrowed(&r.unet),
            (None, Placement::OffloadSequential(d)) => {
                let files = weights::find_weights(
                    &self.dir.join("unet"),
                    "diffusion_pytorch_model",
                    self.variant.as_deref(),
                )?;
                Held::Owned(UNet::streamed(
                    weights::load(&files, self.dtype, d)?,
                    &self.unet_cfg,
                    &self.blocks,
                )?)
            }
            (None, _) => Held::Owned(self.load_unet(&self.devices().unet)?),
        })
    }

    fn vae(&self) -> Result<Held<'_, Decoder>> {
        Ok(match (&self.resident, &self.placement) {
            (Some(r), _) => Held::Borrowed(r.vae.as_ref().ok_or_else(unet_only)?),
            // One layer's weights on the device at a time, like the UNet's.
            (None, Placement::OffloadSequential(d)) => {
                let vb = weights::load(&self.vae_files()?, self.vae_dtype, d)?;
                Held::Owned(Decoder::streamed(vb, &self.vae_cfg))
            }
            (None, _) => Held::Owned(self.load_vae(&self.devices().vae)?),
        })
    }

    /// The default image side (`sample_size × VAE factor`).
    pub fn default_size(&self) -> usize {
        self.default_size
    }

    /// The scheduler class in use.
    pub fn scheduler_class(&self) -> &str {
        &self.sched.class
    }

    /// The VAE's spatial factor.
    pub fn vae_scale_factor(&self) -> usize {
        self.vae_cfg.scale_factor()
    }

    /// What the configs say (sizes, scheduler).
    pub fn info(&self) -> ModelInfo {
        ModelInfo {
            default_size: self.default_size,
            vae_scale_factor: self.vae_cfg.scale_factor(),
            scheduler_class: self.sched.class.clone(),
            scheduler: self.sched.clone(),
        }
    }

    /// Checks parameters before any work; errors name the field and the range.
    pub fn check(&self, p: &Params) -> Result<()> {
        self.info().check(p)
    }

    /// The device the UNet runs on.
    pub fn device(&self) -> Device {
        self.devices().unet
    }

    /// How the components are placed.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }
}

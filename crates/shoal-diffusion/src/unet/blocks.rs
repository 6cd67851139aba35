//! The down, mid and up blocks and the UNet's input and output sides (diffusers
//! `models/unets/unet_2d_blocks.py`), and the builder that makes them from the state dict.

use candle_nn::VarBuilder;

use crate::config::{BlockSpec, UNetConfig};
use crate::nn::{self, Conv2d, GroupNorm, Layout};

use super::embeddings::TimestepEmbedding;
use super::resnet::Resnet;
use super::transformer_2d::Transformer2D;
use super::{CResult, conv};

/// One down or up level: ResNets, optional attentions, optional resampler.
#[derive(Debug)]
pub(super) struct Level {
    pub(super) resnets: Vec<Resnet>,
    pub(super) attns: Vec<Transformer2D>,
    pub(super) resample: Option<Conv2d>,
}

/// The mid block.
#[derive(Debug)]
pub(super) struct Mid {
    pub(super) resnets: [Resnet; 2],
    pub(super) attn: Transformer2D,
}

/// The input side: time embeddings and `conv_in`.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) time_embedding: TimestepEmbedding,
    pub(super) add_embedding: Option<TimestepEmbedding>,
    pub(super) conv_in: Conv2d,
}

/// The output side: `conv_norm_out`, `conv_out`.
#[derive(Debug)]
pub(super) struct Tail {
    pub(super) norm_out: GroupNorm,
    pub(super) conv_out: Conv2d,
}

/// Builds the UNet's parts from a `VarBuilder` (state-dict paths), one at a time.
/// Where one down or up level's layers come from ([`Builder::down_spec`]).
pub(super) struct LevelSpec<'b> {
    vb: VarBuilder<'b>,
    pub(super) block: &'b BlockSpec,
    /// Each ResNet's input width (one ResNet, and attention if any, per entry).
    pub(super) rins: Vec<usize>,
    /// The resampler's module name and stride (`None`: the level has none).
    pub(super) sampler: (&'static str, Option<usize>),
}

fn no_layer(what: &str, j: usize) -> candle_core::Error {
    candle_core::Error::Msg(format!("this UNet level has no {what}.{j}"))
}

pub(super) struct Builder<'a> {
    pub(super) vb: VarBuilder<'a>,
    pub(super) c: &'a UNetConfig,
    pub(super) blocks: &'a [BlockSpec],
    pub(super) layout: Layout,
}

impl Builder<'_> {
    pub(super) fn temb(&self) -> usize {
        self.blocks[0].channels * 4
    }

    pub(super) fn head(&self) -> CResult<Head> {
        let (c, vb, ch0) = (self.c, &self.vb, self.blocks[0].channels);
        let add_embedding = match (
            c.addition_embed_type.as_deref(),
            c.projection_class_embeddings_input_dim,
        ) {
            (Some("text_time"), Some(cin)) => {
                Some(TimestepEmbedding::new(vb.pp("add_embedding"), cin, self.temb())?)
            }
            _ => None,
        };
        Ok(Head {
            time_embedding: TimestepEmbedding::new(vb.pp("time_embedding"), ch0, self.temb())?,
            add_embedding,
            conv_in: conv(vb.pp("conv_in"), c.in_channels, ch0, 3, 1, self.layout)?,
        })
    }

    /// The layers of `down_blocks.{i}`: where their weights are, the block, each
    /// ResNet's input width and the downsampler's stride.
    pub(super) fn down_spec(&self, i: usize) -> LevelSpec<'_> {
        let (b, n) = (&self.blocks[i], self.blocks.len());
        let cin = if i == 0 {
            self.blocks[0].channels
        } else {
            self.blocks[i - 1].channels
        };
        LevelSpec {
            vb: self.vb.pp("down_blocks").pp(i),
            block: b,
            rins: (0..b.layers)
                .map(|j| if j == 0 { cin } else { b.channels })
                .collect(),
            sampler: ("downsamplers", (i + 1 < n).then_some(2)),
        }
    }

    /// The layers of `up_blocks.{i}` (see [`Builder::down_spec`]).
    pub(super) fn up_spec(&self, i: usize) -> LevelSpec<'_> {
        let n = self.blocks.len();
        let b = &self.blocks[n - 1 - i];
        let prev = if i == 0 {
            self.blocks[n - 1].channels
        } else {
            self.blocks[n - i].channels
        };
        let skip_in = self.blocks[(n - 1 - i).saturating_sub(1)].channels;
        // Each ResNet takes the previous output and one skip connection.
        let rins = (0..=b.layers)
            .map(|j| {
                let skip = if j == b.layers { skip_in } else { b.channels };
                (if j == 0 { prev } else { b.channels }) + skip
            })
            .collect();
        LevelSpec {
            vb: self.vb.pp("up_blocks").pp(i),
            block: b,
            rins,
            sampler: ("upsamplers", (i + 1 < n).then_some(1)),
        }
    }

    /// ResNet `j` of a level.
    pub(super) fn level_resnet(&self, s: &LevelSpec, j: usize) -> CResult<Resnet> {
        let rin = s.rins.get(j).copied().ok_or_else(|| no_layer("resnets", j))?;
        Resnet::new(
            s.vb.pp("resnets").pp(j),
            rin,
            s.block.channels,
            self.temb(),
            self.c,
            1.0,
            self.layout,
        )
    }

    /// Attention `j` of a level (`None` in a level without cross-attention).
    pub(super) fn level_attn(&self, s: &LevelSpec, j: usize) -> CResult<Option<Transformer2D>> {
        if !s.block.cross_attn {
            return Ok(None);
        }
        if j >= s.rins.len() {
            return Err(no_layer("attentions", j));
        }
        Transformer2D::new(
            s.vb.pp("attentions").pp(j),
            s.block.channels,
            s.block,
            s.block.transformer_layers,
            self.c,
            self.layout,
        )
        .map(Some)
    }

    /// The level's resampler, if it has one.
    pub(super) fn level_resample(&self, s: &LevelSpec) -> CResult<Option<Conv2d>> {
        match s.sampler {
            (name, Some(stride)) => Some(conv(
                s.vb.pp(name).pp(0).pp("conv"),
                s.block.channels,
                s.block.channels,
                3,
                stride,
                self.layout,
            ))
            .transpose(),
            (_, None) => Ok(None),
        }
    }

    /// A whole level, every layer built.
    fn level(&self, s: &LevelSpec) -> CResult<Level> {
        let mut resnets = Vec::new();
        let mut attns = Vec::new();
        for j in 0..s.rins.len() {
            resnets.push(self.level_resnet(s, j)?);
            attns.extend(self.level_attn(s, j)?);
        }
        Ok(Level {
            resnets,
            attns,
            resample: self.level_resample(s)?,
        })
    }

    pub(super) fn down(&self, i: usize) -> CResult<Level> {
        self.level(&self.down_spec(i))
    }

    /// Mid-block ResNet `j` (0 or 1).
    pub(super) fn mid_resnet(&self, j: usize) -> CResult<Resnet> {
        let (c, last) = (self.c, &self.blocks[self.blocks.len() - 1]);
        if j > 1 {
            return Err(no_layer("mid_block.resnets", j));
        }
        Resnet::new(
            self.vb.pp("mid_block").pp("resnets").pp(j),
            last.channels,
            last.channels,
            self.temb(),
            c,
            c.mid_block_scale_factor,
            self.layout,
        )
    }

    /// The mid block's attention.
    pub(super) fn mid_attn(&self) -> CResult<Transformer2D> {
        let last = &self.blocks[self.blocks.len() - 1];
        Transformer2D::new(
            self.vb.pp("mid_block").pp("attentions").pp(0),
            last.channels,
            last,
            last.transformer_layers,
            self.c,
            self.layout,
        )
    }

    pub(super) fn mid(&self) -> CResult<Mid> {
        Ok(Mid {
            resnets: [self.mid_resnet(0)?, self.mid_resnet(1)?],
            attn: self.mid_attn()?,
        })
    }

    pub(super) fn up(&self, i: usize) -> CResult<Level> {
        self.level(&self.up_spec(i))
    }

    pub(super) fn tail(&self) -> CResult<Tail> {
        let (c, ch0) = (self.c, self.blocks[0].channels);
        Ok(Tail {
            norm_out: nn::group_norm_in(
                c.norm_num_groups,
                ch0,
                c.norm_eps,
                self.vb.pp("conv_norm_out"),
                self.layout,
            )?,
            conv_out: conv(self.vb.pp("conv_out"), ch0, c.out_channels, 3, 1, self.layout)?,
        })
    }
}

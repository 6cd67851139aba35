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

    /// One level of `block`: a ResNet (with its attention, if any) for each
    /// input width in `rins`, and the resampler named `sampler` if `stride` is given.
    pub(super) fn level(
        &self,
        vbi: VarBuilder,
        block: &BlockSpec,
        rins: impl IntoIterator<Item = usize>,
        sampler: (&str, Option<usize>),
    ) -> CResult<Level> {
        let mut resnets = Vec::new();
        let mut attns = Vec::new();
        for (j, rin) in rins.into_iter().enumerate() {
            resnets.push(Resnet::new(
                vbi.pp("resnets").pp(j),
                rin,
                block.channels,
                self.temb(),
                self.c,
                1.0,
                self.layout,
            )?);
            if block.cross_attn {
                let vba = vbi.pp("attentions").pp(j);
                attns.push(Transformer2D::new(
                    vba,
                    block.channels,
                    block,
                    block.transformer_layers,
                    self.c,
                    self.layout,
                )?);
            }
        }
        let resample = match sampler {
            (name, Some(stride)) => Some(conv(
                vbi.pp(name).pp(0).pp("conv"),
                block.channels,
                block.channels,
                3,
                stride,
                self.layout,
            )?),
            (_, None) => None,
        };
        Ok(Level {
            resnets,
            attns,
            resample,
        })
    }

    pub(super) fn down(&self, i: usize) -> CResult<Level> {
        let (b, n) = (&self.blocks[i], self.blocks.len());
        let cin = if i == 0 {
            self.blocks[0].channels
        } else {
            self.blocks[i - 1].channels
        };
        let rins = (0..b.layers).map(|j| if j == 0 { cin } else { b.channels });
        let stride = (i + 1 < n).then_some(2);
        self.level(self.vb.pp("down_blocks").pp(i), b, rins, ("downsamplers", stride))
    }

    pub(super) fn mid(&self) -> CResult<Mid> {
        let (c, last) = (self.c, &self.blocks[self.blocks.len() - 1]);
        let mid = self.vb.pp("mid_block");
        let r = |j: usize| {
            Resnet::new(
                mid.pp("resnets").pp(j),
                last.channels,
                last.channels,
                self.temb(),
                c,
                c.mid_block_scale_factor,
                self.layout,
            )
        };
        Ok(Mid {
            resnets: [r(0)?, r(1)?],
            attn: Transformer2D::new(
                mid.pp("attentions").pp(0),
                last.channels,
                last,
                last.transformer_layers,
                c,
                self.layout,
            )?,
        })
    }

    pub(super) fn up(&self, i: usize) -> CResult<Level> {
        let n = self.blocks.len();
        let b = &self.blocks[n - 1 - i];
        let prev = if i == 0 {
            self.blocks[n - 1].channels
        } else {
            self.blocks[n - i].channels
        };
        let skip_in = self.blocks[(n - 1 - i).saturating_sub(1)].channels;
        // Each ResNet takes the previous output and one skip connection.
        let rins = (0..=b.layers).map(|j| {
            let skip = if j == b.layers { skip_in } else { b.channels };
            (if j == 0 { prev } else { b.channels }) + skip
        });
        let stride = (i + 1 < n).then_some(1);
        self.level(self.vb.pp("up_blocks").pp(i), b, rins, ("upsamplers", stride))
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

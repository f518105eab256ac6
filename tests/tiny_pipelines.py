"""Tiny random-weight diffusers editing pipelines, built locally for tests and benchmarks.

Each builder assembles a real pipeline class from components a few kilobytes big, with tokenizers
made here from a byte alphabet (nothing is downloaded), saves it with `save_pretrained` and returns
the folder. Loading that folder goes through `from_pretrained` and `model_index.json`, the same path
a Hub id takes, so the backend under test cannot tell it from a real model.

The text encoders get as many layers as the pipelines read hidden states from (FLUX.2 reads layers
10/20/30, Klein 9/18/27), so no call needs test-only arguments.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import pre_tokenizers

# Byte-level BPE alphabets cover every string, so prompts never hit an unknown-token path.
_BYTES = sorted(pre_tokenizers.ByteLevel.alphabet())
_T5_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-()"
_QWEN_SPECIALS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_PIXTRAL_SPECIALS = ("[IMG]", "[IMG_BREAK]", "[IMG_END]")
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _save(pipe, folder: Path) -> Path:
    pipe.save_pretrained(folder)
    return folder


def clip_tokenizer(max_length: int = 77):
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in _BYTES:
            vocab[char + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def tiny_clip_text(tokenizer, **extra):
    """A 2-layer, 32-wide CLIP text encoder over `tokenizer`'s vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **extra,
    )
    return CLIPTextModel(config)


def t5_tokenizer():
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(char, -3.0) for char in _T5_CHARS]
    pieces += [("\u2581" + char, -2.5) for char in _T5_CHARS]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def byte_bpe_tokenizer(specials: tuple[str, ...], cls_name: str = "Qwen2Tokenizer"):
    """A byte-level BPE tokenizer with no merges: one token per byte, plus `specials`."""
    import transformers

    vocab = {"<|endoftext|>": 0, **{char: i + 1 for i, char in enumerate(_BYTES)}}
    tokenizer = getattr(transformers, cls_name)(vocab=vocab, merges=[], model_max_length=4096)
    tokenizer.add_tokens(list(specials), special_tokens=True)
    tokenizer.chat_template = _CHAT_TEMPLATE
    return tokenizer


def _flux_vae(cls, levels: int = 3, **extra):
    # Three levels: a 64x64 image becomes 16x16 latents, 64 packed tokens. Four, as in the real
    # models, make the factor 8 (sides in multiples of 16).
    return cls(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=(8,) * levels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        **extra,
    )


def build_flux_kontext(
    folder: Path, layers: int = 1, single_layers: int = 1, heads: int = 2, head_dim: int = 16, vae_levels: int = 3
) -> Path:
    """FLUX.1-Kontext with a transformer of `layers` double and `single_layers` single blocks of
    `heads` x `head_dim` (the defaults are the tiny test model; the benchmark asks for more)."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxKontextPipeline,
        FluxTransformer2DModel,
    )
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    clip = clip_tokenizer()
    text_encoder = tiny_clip_text(clip, projection_dim=32)
    t5 = t5_tokenizer()
    text_encoder_2 = T5EncoderModel(
        T5Config(vocab_size=len(t5), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, pad_token_id=0)
    )
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=layers,
        num_single_layers=single_layers,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        # RoPE over (text index, row, column): a quarter of each head for the first, the rest split.
        axes_dims_rope=(head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8),
    )
    vae = _flux_vae(AutoencoderKL, vae_levels, shift_factor=0.06, scaling_factor=1.5)
    pipe = FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip,
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5,
        transformer=transformer,
    )
    return _save(pipe, folder)


def build_instruct_pix2pix(folder: Path) -> Path:
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(0)
    tokenizer = clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=16,
        in_channels=8,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
    )
    text_encoder = tiny_clip_text(tokenizer)
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=EulerAncestralDiscreteScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return _save(pipe, folder)


def _qwen_components():
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    torch.manual_seed(0)
    tokenizer = byte_bpe_tokenizer(_QWEN_SPECIALS)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in _QWEN_SPECIALS}
    # The vision tower sees at most 4x4 merged patches, whatever size the pipeline hands it.
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=56 * 56)
    # transformers builds (and saves) this processor only with a video processor, which needs torchvision.
    processor = Qwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor()
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(
        Qwen2_5_VLConfig(
            text_config={
                "vocab_size": len(tokenizer),
                "hidden_size": 16,
                "intermediate_size": 16,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "bos_token_id": None,
                "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
                "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            },
            vision_config={
                "depth": 2,
                "hidden_size": 16,
                "intermediate_size": 16,
                "num_heads": 2,
                "out_hidden_size": 16,
            },
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
        )
    )
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    z_dim = 4
    # Qwen-Image-Edit encodes its input at about 1024x1024 whatever the source size; five levels
    # of four channels keep that encode and the 32x32 packed tokens it yields cheap.
    vae = AutoencoderKLQwenImage(
        base_dim=2,
        z_dim=z_dim,
        dim_mult=[1, 1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True, True],
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "processor": processor,
        "transformer": transformer,
    }


def build_qwen_image_edit(folder: Path) -> Path:
    from diffusers import QwenImageEditPipeline

    return _save(QwenImageEditPipeline(**_qwen_components()), folder)


def build_qwen_image_edit_plus(folder: Path) -> Path:
    from diffusers import QwenImageEditPlusPipeline

    return _save(QwenImageEditPlusPipeline(**_qwen_components()), folder)


def _flux2_transformer(joint_attention_dim: int, guidance_embeds: bool):
    from diffusers import Flux2Transformer2DModel

    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=joint_attention_dim,
        timestep_guidance_channels=256,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=guidance_embeds,
    )


def build_flux2(folder: Path) -> Path:
    """FLUX.2 [dev]: a Mistral-3 text encoder behind a Pixtral processor."""
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Pipeline
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, PixtralImageProcessor, PixtralProcessor

    torch.manual_seed(0)
    tokenizer = byte_bpe_tokenizer((*_PIXTRAL_SPECIALS, "<|im_start|>", "<|im_end|>"), "LlamaTokenizerFast")
    processor = PixtralProcessor(
        image_processor=PixtralImageProcessor(), tokenizer=tokenizer, chat_template=_CHAT_TEMPLATE
    )
    hidden = 16
    text_encoder = Mistral3ForConditionalGeneration(
        Mistral3Config(
            text_config={
                "model_type": "mistral",
                "vocab_size": len(tokenizer),
                "hidden_size": hidden,
                "intermediate_size": 16,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "num_hidden_layers": 30,
                "sliding_window": None,
            },
            vision_config={
                "model_type": "pixtral",
                "hidden_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 16,
                "image_size": 32,
                "patch_size": 16,
            },
            image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"),
        )
    )
    pipe = Flux2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_flux_vae(AutoencoderKLFlux2),
        text_encoder=text_encoder,
        tokenizer=processor,
        transformer=_flux2_transformer(3 * hidden, guidance_embeds=True),
    )
    return _save(pipe, folder)


def build_flux2_klein(folder: Path) -> Path:
    """FLUX.2 [klein]: a Qwen3 text encoder, no guidance embedding."""
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    tokenizer = byte_bpe_tokenizer(("<|im_start|>", "<|im_end|>"))
    hidden = 16
    text_encoder = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=16,
            num_hidden_layers=27,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=8,
        )
    )
    pipe = Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_flux_vae(AutoencoderKLFlux2),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=_flux2_transformer(3 * hidden, guidance_embeds=False),
    )
    return _save(pipe, folder)


BUILDERS = {
    "flux_kontext": build_flux_kontext,
    "instruct_pix2pix": build_instruct_pix2pix,
    "qwen_image_edit": build_qwen_image_edit,
    "qwen_image_edit_plus": build_qwen_image_edit_plus,
    "flux2": build_flux2,
    "flux2_klein": build_flux2_klein,
}


def build_kontext_lora(pipeline_folder: Path, folder: Path) -> Path:
    """A LoRA with random (non-zero) weights for the tiny Kontext transformer, saved as diffusers saves
    LoRAs (pytorch_lora_weights.safetensors). Needs peft."""
    from diffusers import FluxKontextPipeline, FluxTransformer2DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    transformer = FluxTransformer2DModel.from_pretrained(pipeline_folder, subfolder="transformer")
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in transformer.named_parameters():
            if "lora_B" in name:  # peft starts B at zero, which would make the LoRA a no-op
                param.normal_(std=0.5)
    FluxKontextPipeline.save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(transformer))
    return folder


_BUILT: dict[str, Path] = {}


def build_once(name: str, root_factory) -> Path:
    """The folder of BUILDERS[name], built on first use in this process (pytest's tmp_path_factory
    gives the root), so test modules share one copy."""
    if name not in _BUILT:
        _BUILT[name] = BUILDERS[name](root_factory.mktemp("tiny") / name)
    return _BUILT[name]

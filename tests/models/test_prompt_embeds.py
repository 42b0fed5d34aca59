"""Prompt embeddings cached once from a local text encoder, as the stock pipelines compute them,
and read back by the adapters (tiny tokenizer and text encoders built here, nothing downloaded)."""

from __future__ import annotations

import pytest
import torch

from cil_lightning.models.prompt_embeds import main
from cil_lightning.models.wan import load_prompt_embeds

WORDS = "a video of cat dog runs jumps".split()


def _folder(tmp_path, family: str):
    """A weights folder with tokenizer/ (word-level, built in memory) and a tiny text_encoder/."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.model_max_length = 12
    fast.save_pretrained(tmp_path / "tokenizer")
    torch.manual_seed(0)
    if family == "wan":
        from transformers import UMT5Config, UMT5EncoderModel

        config = UMT5Config(vocab_size=32, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
        model = UMT5EncoderModel(config)
    else:
        from transformers import CLIPTextConfig, CLIPTextModel

        config = CLIPTextConfig(
            vocab_size=32,
            hidden_size=4,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=12,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=1,
        )
        model = CLIPTextModel(config)
    model.save_pretrained(tmp_path / "text_encoder")
    return model.eval()  # as from_pretrained gives it: no dropout


def test_wan_embeddings_are_the_encoder_states_zero_padded_to_512(tmp_path):
    """Wan: the UMT5 states of the prompt's tokens, then zeros up to 512 (the pipeline's length);
    the file loads with load_prompt_embeds and conditions the tiny Wan of the same width."""
    encoder = _folder(tmp_path, "wan")
    out = tmp_path / "wan_prompt.safetensors"
    assert main(["wan", str(tmp_path), str(out), "--prompt", "a cat runs"]) == 0
    pos, neg = load_prompt_embeds(out)
    assert pos.shape == neg.shape == (512, 32)
    ids = torch.tensor([[3 + WORDS.index(w) for w in ("a", "cat", "runs")]])
    with torch.no_grad():
        states = encoder(ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
    torch.testing.assert_close(pos[:3], states, rtol=1e-5, atol=1e-5)
    assert pos[3:].abs().sum() == 0 and neg.abs().sum() == 0  # the empty negative prompt

    from cil_lightning.models.wan import tiny_wan

    denoiser = tiny_wan(clip=False)
    denoiser.prompt_embeds, denoiser.negative_prompt_embeds = pos, neg
    cond = denoiser.encode_condition(torch.zeros(1, 3, 32, 32), num_frames=9)
    assert denoiser(torch.randn(1, 3, 16, 4, 4), torch.tensor([0.5]), cond).isfinite().all()


def test_i2vgenxl_embeddings_are_the_clip_text_states(tmp_path):
    """I2VGen-XL: CLIP text states of the padded prompt, as its pipeline (model_max_length)."""
    encoder = _folder(tmp_path, "i2vgenxl")
    out = tmp_path / "i2v_prompt.safetensors"
    assert main(["i2vgenxl", str(tmp_path), str(out), "--prompt", "a dog jumps"]) == 0
    pos, neg = load_prompt_embeds(out)
    assert pos.shape == neg.shape == (12, 4)
    ids = torch.tensor([[3 + WORDS.index(w) for w in ("a", "dog", "jumps")] + [0] * 9])
    with torch.no_grad():
        states = encoder(ids).last_hidden_state[0]
    torch.testing.assert_close(pos, states, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(pos, neg)


def test_missing_text_encoder_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer/ and text_encoder/"):
        main(["wan", str(tmp_path), str(tmp_path / "x.safetensors")])

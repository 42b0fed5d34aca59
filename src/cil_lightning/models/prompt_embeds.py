"""Cache a model's prompt embeddings once, where its text encoder is, so training and sampling never
hold the text encoder (Wan's UMT5-XXL alone is 11 GB in bf16):

    python -m cil_lightning.models.prompt_embeds wan WEIGHTS_DIR OUT.safetensors \\
        --prompt "a video" --negative-prompt ""

writes ``prompt_embeds`` [L, D] and ``negative_prompt_embeds`` [L, D] as the stock pipeline computes
them (``WanImageToVideoPipeline.encode_prompt``, ``I2VGenXLPipeline.encode_prompt``) from the
folder's ``tokenizer/`` and ``text_encoder/``, offline; ``model.prompt_embeds=OUT.safetensors`` then
feeds them to ``model=wan`` / ``model=i2vgenxl``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

FAMILIES = ("wan", "i2vgenxl")


def register_prompts(module: torch.nn.Module, prompt_embeds, negative_prompt_embeds=None) -> None:
    """Give an adapter its text contexts as non-persistent buffers ``prompt_embeds`` and
    ``negative_prompt_embeds`` [L, D] float32 (the negative defaults to zeros), so they follow
    the module's device and stay out of checkpoints (the config names their file)."""
    prompt = torch.as_tensor(prompt_embeds, dtype=torch.float32)
    negative = (
        torch.zeros_like(prompt)
        if negative_prompt_embeds is None
        else torch.as_tensor(negative_prompt_embeds, dtype=torch.float32)
    )
    module.register_buffer("prompt_embeds", prompt, persistent=False)
    module.register_buffer("negative_prompt_embeds", negative, persistent=False)


def encode_prompts(
    family: str, weights: str | Path, prompt: str, negative_prompt: str = ""
) -> tuple[Tensor, Tensor]:
    """(prompt_embeds [L, D], negative_prompt_embeds [L, D]) of one prompt, float32, computed by
    the family's stock pipeline from the local ``tokenizer/`` and ``text_encoder/`` folders."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    root = Path(weights).expanduser()
    for sub in ("tokenizer", "text_encoder"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(
                f"no {root / sub}: expected the model's diffusers folder with tokenizer/ and "
                "text_encoder/ (downloaded beforehand; nothing is fetched)"
            )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer", local_files_only=True)
    with torch.no_grad():
        if family == "wan":
            from diffusers import WanImageToVideoPipeline
            from transformers import UMT5EncoderModel

            encoder = UMT5EncoderModel.from_pretrained(root / "text_encoder", local_files_only=True)
            pipe = WanImageToVideoPipeline(tokenizer, encoder, None, None)
            # 512 tokens: the pipeline's __call__ default (encode_prompt's own is 226).
            pos, neg = pipe.encode_prompt(
                prompt,
                negative_prompt,
                do_classifier_free_guidance=True,
                max_sequence_length=512,
                device="cpu",
            )
        else:
            from diffusers import I2VGenXLPipeline
            from transformers import CLIPTextModel

            encoder = CLIPTextModel.from_pretrained(root / "text_encoder", local_files_only=True)
            pipe = I2VGenXLPipeline(None, encoder, tokenizer, None, None, None, None)
            pipe._guidance_scale = 9.0  # encode_prompt reads the guidance switch from it
            pos, neg = pipe.encode_prompt(prompt, "cpu", 1, negative_prompt=negative_prompt)
    return pos[0].float(), neg[0].float()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cil_lightning.models.prompt_embeds", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("family", choices=FAMILIES)
    parser.add_argument("weights", help="the model's local diffusers folder")
    parser.add_argument("out", help="the safetensors file to write")
    parser.add_argument("--prompt", default="", help="the training / sampling prompt")
    parser.add_argument("--negative-prompt", default="", help="the guidance's negative prompt")
    args = parser.parse_args(argv)
    from safetensors.torch import save_file

    pos, neg = encode_prompts(args.family, args.weights, args.prompt, args.negative_prompt)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {"prompt_embeds": pos.contiguous(), "negative_prompt_embeds": neg.contiguous()},
        str(out),
        metadata={"family": args.family, "prompt": args.prompt},
    )
    print(f"cil_lightning prompt_embeds: {tuple(pos.shape)} for {args.prompt!r}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

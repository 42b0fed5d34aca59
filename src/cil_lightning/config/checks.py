"""Check the method's and the run's parameters before anything heavy is built.

Runs on the composed Hydra config with only omegaconf imported, so a bad value fails in well under
a second with the key, the value and the allowed range, before data or models are loaded. The one
exception is a start point ``sampler.M``: its range belongs to the model's schedule, which is built
(cheap, but it imports torch) and asked. With ``inputs=True`` (the tasks) it also lists every
mandatory value left unset (``???``), with what it is and an example, and every input path that
does not exist, every weight file the validation metrics need and lack, and every device
setting that asks for a GPU on a machine without one, all in one message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """One or more config values are outside their allowed range."""


@dataclass(frozen=True)
class Rule:
    key: str
    ok: Callable[[object], bool]
    allowed: str
    meaning: str = ""


def _num(pred: Callable[[float], bool]) -> Callable[[object], bool]:
    def check(v: object) -> bool:
        return (
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(float(v))
            and pred(float(v))
        )

    return check


def _int(pred: Callable[[int], bool]) -> Callable[[object], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and pred(v)


RULES: tuple[Rule, ...] = (
    Rule("cond_noise.beta_m", _num(lambda v: v > 0), "> 0", "TimeNoise's maximum noise level"),
    Rule("cond_noise.a", _num(lambda v: v > 0), "> 0", "TimeNoise's time exponent"),
    Rule("cond_noise.s", _num(lambda v: v > 0), "> 0", "TimeNoise's logit-normal std"),
    Rule("cond_noise.mu_max", _num(lambda v: v >= 0), ">= 0", "TimeNoise's mean range"),
    Rule("cond_noise.beta", _num(lambda v: v >= 0), ">= 0", "constant condition-noise level"),
    Rule("cond_noise.P_std", _num(lambda v: v > 0), "> 0", "log-normal std of the level"),
    Rule("model.cfg_dropout", _num(lambda v: 0 <= v < 1), "[0, 1)", "CFG dropout rate"),
    Rule("data.num_frames", _int(lambda v: v >= 2), "an integer >= 2", "frames per clip"),
    Rule("data.height", _int(lambda v: v >= 8 and v % 8 == 0), "a multiple of 8, >= 8", ""),
    Rule("data.width", _int(lambda v: v >= 8 and v % 8 == 0), "a multiple of 8, >= 8", ""),
    Rule("data.batch_size", _int(lambda v: v >= 1), "an integer >= 1", "per-device batch"),
    Rule("data.num_workers", _int(lambda v: v >= 0), "an integer >= 0", ""),
    Rule("optimizer.lr", _num(lambda v: v > 0), "> 0", "learning rate"),
    Rule("trainer.max_steps", _int(lambda v: v == -1 or v >= 1), "-1 or an integer >= 1", ""),
    Rule("nan_policy", lambda v: v in ("stop", "skip"), "'stop' or 'skip'", "non-finite loss"),
    Rule("ema_decay", lambda v: v is None or _num(lambda x: 0 < x < 1)(v), "null or (0, 1)", ""),
    Rule("ema_warmup", lambda v: isinstance(v, bool), "true or false", "EMA decay warm-up"),
    Rule("sampler.num_steps", _int(lambda v: v >= 1), "an integer >= 1", "sampling steps"),
    Rule("sampler.min_guidance", _num(lambda v: v >= 0), ">= 0", "first frame's CFG scale"),
    Rule("sampler.max_guidance", _num(lambda v: v >= 0), ">= 0", "last frame's CFG scale"),
    Rule("sampler.eta", _num(lambda v: 0 <= v <= 1), "[0, 1]", "DDIM stochasticity"),
    Rule("sampler.guidance_rescale", _num(lambda v: 0 <= v <= 1), "[0, 1]", "guidance rescale"),
    Rule(
        "metric.is.detector",
        lambda v: v in ("auto", "torchscript", "c3d_state_dict"),
        "auto, torchscript or c3d_state_dict",
        "kind of the IS detector file",
    ),
    Rule("metric.is.splits", _int(lambda v: v >= 1), "an integer >= 1", "IS splits"),
    Rule("metric.is.shuffle", lambda v: isinstance(v, bool), "true or false", "IS shuffle"),
    Rule("metric.is.seed", _int(lambda v: 0 <= v < 2**32), "an integer in [0, 2^32)", ""),
    Rule("metric.is.eps", _num(lambda v: v >= 0), ">= 0", "IS log epsilon"),
)


def _start_point_rule(cfg: DictConfig, problems: list[str]) -> Rule | None:
    """The start point M's rule, asked of the model's schedule (``Schedule.check_start``); None
    when M is unset or there is no schedule. A schedule that cannot be built is a problem."""
    if OmegaConf.select(cfg, "sampler.M", default=None) is None:
        return None  # None: start at the schedule's full start
    if OmegaConf.select(cfg, "model.schedule._target_", default=None) is None:
        return None
    from hydra.utils import instantiate

    try:
        schedule = instantiate(cfg.model.schedule)
    except Exception as err:  # hydra wraps the schedule's own ValueError
        cause = err.__cause__ or err
        problems.append(f"  model.schedule cannot be built: {type(cause).__name__}: {cause}")
        return None

    def ok(M: object) -> bool:
        try:
            schedule.check_start(M)
        except ValueError:
            return False
        return True

    return Rule("sampler.M", ok, schedule.start_range)


# The values a user must give (``???`` in conf/): what each is and an example.
MANDATORY: dict[str, tuple[str, str]] = {
    "data.root": (
        "the videos to use: a folder (searched recursively) or a glob for data=folder, the data "
        "set's root for webvid / ucf101 / shards",
        "data.root=/data/my_videos",
    ),
    "images": ("the image(s) to animate: a file, a folder or a list", "images=photo.png"),
    "generated": ("the folder of generated videos to score", "generated=outputs/sample/videos"),
    "model.pretrained_path": (
        "the model's local weights folder (diffusers layout; nothing is downloaded)",
        "model.pretrained_path=./weights/Wan2.1-I2V-14B-480P-Diffusers",
    ),
    "model.prompt_embeds": (
        "a safetensors file with the training prompt's text embeddings (prompt_embeds, and "
        "optionally negative_prompt_embeds), computed once where the text encoder is",
        "model.prompt_embeds=./weights/prompt_embeds.safetensors",
    ),
}

# Input paths that must exist when set: key -> (kind, what it is).
PATHS: dict[str, tuple[str, str]] = {
    "data.root": ("root", "the videos to use"),
    "images": ("any", "the image(s) to animate"),
    "model.pretrained_path": (
        "dir",
        "the model's weights folder, diffusers layout; nothing is downloaded: see the README's "
        "weights table",
    ),
    "model.ckpt": (
        "file",
        "the model's official checkpoint file (DynamiCrafter's or VideoCrafter1's model.ckpt); "
        "nothing is downloaded: see the README's weights table",
    ),
    "model.open_clip": (
        "any",
        "a local open_clip ViT-H-14 weights file or folder (open_clip_pytorch_model.bin) for the "
        "lvdm encoders; nothing is downloaded",
    ),
    "sampler.stats": ("file", "Analytic-Init statistics; write them with `cil_lightning stats`"),
    "model.prompt_embeds": ("file", "the training prompt's text embeddings (safetensors)"),
    "stats": ("file", "Analytic-Init statistics; write them with `cil_lightning stats`"),
    "source": ("file", "the official checkpoint the exported model was built from"),
    "ckpt": ("ckpt", ""),
    "ckpt_path": ("ckpt", ""),
}
_LIGHTNING_CKPT_WORDS = ("last", "best", "hpc", "registry")  # ckpt_path values Lightning resolves


def missing_keys(node, prefix: str = "") -> list[str]:
    """Full keys of the values left ``???`` (``OmegaConf.missing_keys`` resolves interpolations,
    so a ``${data.root}`` elsewhere would raise instead of listing ``data.root``)."""
    is_list = OmegaConf.is_list(node)
    out = []
    for k in range(len(node)) if is_list else node.keys():
        if not prefix and k == "hydra":
            continue  # Hydra's own node (present when composed with it) is filled at run time
        full = f"{prefix}[{k}]" if is_list else f"{prefix}.{k}" if prefix else str(k)
        if OmegaConf.is_missing(node, k):
            out.append(full)
        elif not OmegaConf.is_interpolation(node, k) and OmegaConf.is_config(node._get_node(k)):
            out += missing_keys(node._get_node(k), full)
    return out


def missing_values(cfg: DictConfig) -> list[str]:
    """One line per mandatory value left ``???``: the key, what it is and an example."""
    lines = []
    for key in missing_keys(cfg):
        what, example = MANDATORY.get(key, ("a value this config leaves open (???)", f"{key}=..."))
        lines.append(f"  {key} is missing: {what}; for example `{example}`")
    return lines


def _path_problem(key: str, value: object, kind: str) -> str | None:
    """Why ``value`` is not a usable path for ``key`` (None: fine or not checkable here)."""
    if kind == "ckpt":
        from ..models.checkpoint import checkpoint_problem

        if key == "ckpt_path" and value in _LIGHTNING_CKPT_WORDS:
            return None
        return checkpoint_problem(value)
    text = str(value)
    if kind == "root":
        if "://" in text or text.startswith("pipe:") or "{" in text:
            return None  # urls, commands and brace patterns of shards are opened by the reader
        if not any(ch in text for ch in "*?["):
            return None if Path(text).expanduser().is_dir() else "is not an existing folder"
        # A glob must at least have its folder: the part before the first wildcard.
        head = re.split(r"[*?\[]", text)[0]
        folder = Path(head) if head.endswith("/") else Path(head).parent
        return None if folder.expanduser().is_dir() else f"is in no existing folder ({folder})"
    path = Path(text).expanduser()
    if kind == "dir" and not path.is_dir():
        return "is not an existing folder"
    if kind == "file" and not path.is_file():
        return "is not an existing file"
    if kind == "any" and not path.exists():
        return "does not exist"
    return None


def missing_paths(cfg: DictConfig, skip: set[str] = frozenset()) -> list[str]:
    """One line per input path in ``PATHS`` that is set but does not exist."""
    lines = []
    for key, (kind, what) in PATHS.items():
        if key in skip:
            continue
        try:
            value = OmegaConf.select(cfg, key, default=None)
        except Exception:  # an interpolation to a missing value: reported by missing_values
            continue
        values = list(value) if OmegaConf.is_list(value) or isinstance(value, list) else [value]
        for v in values:
            if v is None or v == "":
                continue
            why = _path_problem(key, v, kind)
            if why:
                lines.append(f"  {key}={str(v)!r} {why}" + (f" ({what})" if what else ""))
    return lines


# Device settings that may ask for a GPU: key -> the CPU setting to suggest.
DEVICE_KEYS: dict[str, str] = {
    "trainer.accelerator": "`trainer=cpu` (or trainer.accelerator=cpu)",
    "fabric.accelerator": "fabric.accelerator=cpu",
    "device": "device=cpu (or device=auto)",
}


def device_problems(cfg: DictConfig) -> list[str]:
    """One line per device setting that asks for CUDA when this machine has none. Checked in the
    task (on the node that runs it), not when a multirun is submitted from a login node."""
    lines = []
    for key, cpu in DEVICE_KEYS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if not isinstance(value, str) or value.split(":")[0] not in ("gpu", "cuda"):
            continue
        import torch  # only when a GPU is asked for

        if not torch.cuda.is_available():
            lines.append(
                f"  {key}={value!r} asks for a GPU, but torch sees no CUDA device here; "
                f"run on the CPU with {cpu}"
            )
    return lines


def validation_weight_problems(cfg: DictConfig) -> list[str]:
    """One line per weight file that the training run's validation metrics
    (``callbacks.validation_metrics.metrics``) need and that does not exist: else the run would
    train first and fail only when it validates."""
    names = OmegaConf.select(cfg, "callbacks.validation_metrics.metrics", default=None)
    if not names or OmegaConf.select(cfg, "metric", default=None) is None:
        return []
    from ..metrics.registry import weight_files

    settings = OmegaConf.to_container(cfg.metric, resolve=True)
    return [
        f"  {key}={path} does not exist (callbacks.validation_metrics.metrics={list(names)} "
        f"needs {expected}; nothing is downloaded)"
        for key, path, expected in weight_files(names, settings)
        if path is None or not Path(str(path)).is_file()
    ]


def validate(cfg: DictConfig, inputs: bool = False) -> None:
    """Raise ConfigError listing every present key whose value is out of range; with ``inputs``
    also every mandatory value left unset and every input path that does not exist."""
    problems: list[str] = []
    if inputs:
        problems += missing_values(cfg)
        problems += missing_paths(cfg, skip=set(missing_keys(cfg)))
        problems += device_problems(cfg)
        problems += validation_weight_problems(cfg)
    rules = list(RULES)
    start = _start_point_rule(cfg, problems)
    if start is not None:
        rules.append(start)
    for rule in rules:
        if OmegaConf.select(cfg, rule.key, default="__absent__") == "__absent__":
            continue
        value = OmegaConf.select(cfg, rule.key)
        if not rule.ok(value):
            why = f" ({rule.meaning})" if rule.meaning else ""
            problems.append(f"  {rule.key}={value!r} is out of range; allowed: {rule.allowed}{why}")
    if problems:
        raise ConfigError("invalid config values:\n" + "\n".join(problems))

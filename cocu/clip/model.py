"""CLIP models through open_clip: a tiny CLIP for the synthetic world, or a pretrained architecture
with weights from a local file. Never a hub download: no pretrained tag is ever passed to open_clip.

A pretrained file's format and activation are read from the file itself, because a state dict
loads strictly into an architecture with either activation (GELU or QuickGELU have no weights)
and then gives wrong embeddings silently. OpenAI's CLIP models were all trained with QuickGELU, so
their weights need an open_clip `-quickgelu` architecture (`ViT-B-16-quickgelu`, not `ViT-B-16`).

Formats (`read_checkpoint`) and where the activation comes from:

- `openai-torchscript`: OpenAI's release (`ViT-B-16.pt`), a TorchScript archive holding OpenAI's
  `input_resolution`, `context_length` and `vocab_size` tensors; `torchscript`: another TorchScript
  CLIP. Activation: the archive's MLP activation modules (`QuickGELU`, x * sigmoid(1.702 x), or GELU).
- `openai-state-dict`: a torch.save of OpenAI's model's state_dict (it keeps those three tensors).
  Activation: QuickGELU, as every OpenAI CLIP.
- `open_clip-state-dict`: a plain state dict, a `{"state_dict": ...}` checkpoint or .safetensors.
  Activation: `model_cfg.quick_gelu` of the `open_clip_config.json` beside it (open_clip's hub
  folders ship it); without that file the activation is unknown and the file is refused.
- `cocu-import`: what the `teacher` stage writes into `paths.clip_weights`: the tensors plus the
  architecture, activation and source checksum found at import.

`import_weights` (the teacher stage, real profile) reads the file, refuses a mismatch with
`clip.arch` naming the file, the arch and the fix, loads it strictly into `clip.arch` (so shapes
are checked too) and writes the `cocu-import` file that every later stage loads.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # defensive: nothing here may reach the network

import open_clip  # noqa: E402
import torch  # noqa: E402
from open_clip.model import CLIPTextCfg, CLIPVisionCfg  # noqa: E402

from cocu.config import ClipConfig, ConfigError  # noqa: E402
from cocu.tracking.run_info import sha256_file  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

WEIGHTS_KEY = "paths.clip_weights"  # the params key that names the weights file
Transform = Callable[[Any], torch.Tensor]  # PIL image -> [3, S, S] float tensor


class ChecksumError(ValueError):
    """The weights file's sha256 differs from `clip.expected_sha256`."""


class WeightsFormatError(ConfigError):
    """A pretrained weights file does not fit `clip.arch` (activation, keys or shapes), or its
    activation cannot be read from it; the message names the file, the arch and the fix."""


OPENAI_KEYS = ("input_resolution", "context_length", "vocab_size")  # tensors only OpenAI's models hold
IMPORT_KEY = "cocu_clip"  # the record in a file written by `import_weights`
FORMAT_LABELS = {
    "openai-torchscript": "OpenAI TorchScript archive",
    "torchscript": "TorchScript archive",
    "openai-state-dict": "OpenAI state dict",
    "open_clip-state-dict": "open_clip state dict",
    "cocu-import": "imported CLIP weights file",
}


@dataclass(frozen=True)
class CheckpointInfo:
    """What a weights file is (a key of FORMAT_LABELS) and the activation its weights were trained
    with (None: the file does not record it), with the evidence for it."""

    format: str
    quick_gelu: Optional[bool]
    evidence: str
    record: Optional[dict] = None  # cocu-import: the import's record

    @property
    def label(self) -> str:
        return FORMAT_LABELS[self.format]


def activation_name(quick_gelu: bool) -> str:
    return "QuickGELU" if quick_gelu else "GELU"


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip with a `constants.pkl` record (torch.save's zips have none)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in zf.namelist())


def _torchscript_activation(module: torch.jit.ScriptModule) -> tuple[Optional[bool], str]:
    """The activation of the archive's transformer MLPs (modules named `*.mlp.gelu` in OpenAI's and
    open_clip's CLIPs), from their type name, else from their code."""
    kinds: dict[str, bool] = {}
    for name, sub in module.named_modules():
        if not name.endswith("mlp.gelu"):
            continue
        type_name = getattr(sub, "original_name", "")
        try:
            code = sub.code
        except (RuntimeError, AttributeError):
            code = ""
        if type_name == "QuickGELU" or "torch.sigmoid" in code:
            kinds[name] = True
        elif type_name == "GELU" or "torch.gelu" in code:
            kinds[name] = False
    found = set(kinds.values())
    if len(found) == 1:
        quick = found.pop()
        return quick, f"its {len(kinds)} MLP activation modules are {activation_name(quick)}"
    if not kinds:
        return None, "no MLP activation module (`*.mlp.gelu`) was found in the archive"
    return None, "its MLP activation modules disagree"


def _state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # an open_clip training checkpoint
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                        for k, v in obj.items()):
        raise WeightsFormatError(f"{path}: not a CLIP weights file (expected a TorchScript archive, a state dict "
                                 "of tensors, a {'state_dict': ...} checkpoint or .safetensors)")
    if all(k.startswith("module.") for k in obj):  # saved from DistributedDataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def read_checkpoint(path: Path | str) -> tuple[CheckpointInfo, dict[str, torch.Tensor]]:
    """(what the file is and which activation it needs, its state dict without OpenAI's extra
    tensors). Pickles are read with `weights_only=True`: a weights file cannot run code."""
    path = Path(path)
    if is_torchscript(path):
        with warnings.catch_warnings():  # torch.jit.load is deprecated, but OpenAI's release is TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
        state = dict(module.state_dict())
        openai = any(k in state for k in OPENAI_KEYS)
        for k in OPENAI_KEYS:
            state.pop(k, None)
        quick, evidence = _torchscript_activation(module)
        return CheckpointInfo("openai-torchscript" if openai else "torchscript", quick, evidence), state
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(str(path), device="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable pickle is the same user error
            raise WeightsFormatError(f"{path}: not a readable weights file ({type(e).__name__}: {e})") from e
    if isinstance(obj, dict) and IMPORT_KEY in obj:
        record = dict(obj[IMPORT_KEY])
        return (CheckpointInfo("cocu-import", bool(record["quick_gelu"]),
                               f"recorded when {record['source_file']} ({record['source_format']}) was imported",
                               record), _state_dict_of(obj, path))
    state = _state_dict_of(obj, path)
    if any(k in state for k in OPENAI_KEYS):
        for k in OPENAI_KEYS:
            state.pop(k, None)
        return CheckpointInfo("openai-state-dict", True, "it holds OpenAI's input_resolution/context_length/vocab_size "
                              "tensors, and every OpenAI CLIP was trained with QuickGELU"), state
    config = path.parent / "open_clip_config.json"
    if config.is_file():
        model_cfg = json.loads(config.read_text()).get("model_cfg", {})
        quick = bool(model_cfg.get("quick_gelu", False))
        return CheckpointInfo("open_clip-state-dict", quick, f"{config}: model_cfg.quick_gelu = {quick}"), state
    return CheckpointInfo("open_clip-state-dict", None, "a plain state dict records no activation"), state


def arch_quick_gelu(arch: str) -> bool:
    """Whether the open_clip architecture `arch` builds QuickGELU."""
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise WeightsFormatError(f"clip.arch: {arch!r} is not a built-in open_clip architecture "
                                 f"(e.g. ViT-B-16-quickgelu for OpenAI's ViT-B/16)")
    return bool(cfg.get("quick_gelu", False))


def _arch_fix(arch: str, quick_gelu: bool) -> str:
    if quick_gelu:
        candidate = f"{arch}-quickgelu"
        if candidate in open_clip.list_models():
            return f"set clip.arch: {candidate} (OpenAI's weights need a -quickgelu architecture)"
        return "set clip.arch to an open_clip architecture with quick_gelu (a -quickgelu one)"
    return f"set clip.arch: {arch.removesuffix('-quickgelu')} (these weights use GELU)"


def check_activation(info: CheckpointInfo, arch: str, path: Path | str) -> None:
    """Refuse weights whose activation differs from `arch`'s, or cannot be read from the file."""
    want = arch_quick_gelu(arch)
    if info.quick_gelu is None:
        raise WeightsFormatError(
            f"{path}: {info.label} whose activation cannot be read from the file ({info.evidence}), so "
            f"clip.arch {arch} ({activation_name(want)}) cannot be checked and a wrong one would load silently. "
            "Fix: put the model's open_clip_config.json (open_clip's hub folders ship it) beside the file, or use "
            "OpenAI's TorchScript release for OpenAI weights")
    if info.quick_gelu != want:
        raise WeightsFormatError(
            f"{path}: {info.label} trained with {activation_name(info.quick_gelu)} ({info.evidence}), but "
            f"clip.arch {arch} builds {activation_name(want)}: the weights would load and give wrong embeddings. "
            f"Fix: {_arch_fix(arch, info.quick_gelu)}")


def _into(model: torch.nn.Module, state: dict[str, torch.Tensor], arch: str, path: Path | str) -> None:
    """Strict load, with an error that names the file and the arch (open_clip's own fix-ups for a
    scalar vs 1-d logit scale included)."""
    own = model.state_dict()
    if "logit_scale" in state and "logit_scale" in own and state["logit_scale"].ndim != own["logit_scale"].ndim:
        state = {**state, "logit_scale": state["logit_scale"].reshape(own["logit_scale"].shape)}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(shapes)} of other shape (e.g. {sorted(shapes)[0]})" if shapes else ""]
        raise WeightsFormatError(f"{path}: the weights do not fit clip.arch {arch}: tensors "
                                 f"{', '.join(p for p in parts if p)}; is clip.arch the architecture they were "
                                 "trained as?")
    model.load_state_dict(state, strict=True)


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def load_pretrained(arch: str, path: Path | str) -> tuple[torch.nn.Module, CheckpointInfo, dict[str, torch.Tensor]]:
    """`arch` with the weights of `path`, after the format and activation checks (module docstring)."""
    if ":" in arch:  # 'hf-hub:' / 'local-dir:' schemas fetch configs; not allowed here
        raise ValueError(f"clip.arch must be a built-in open_clip architecture name, got {arch!r}")
    info, state = read_checkpoint(path)
    if info.record is not None and info.record.get("arch") != arch:
        raise WeightsFormatError(f"{path}: imported for clip.arch {info.record.get('arch')}, not {arch}: re-run "
                                 "the `teacher` stage (dvc repro teacher)")
    check_activation(info, arch, path)
    quiet = _DropMessage("initialized randomly")  # open_clip's warning; the weights are loaded next
    logging.getLogger().addFilter(quiet)
    try:
        model = open_clip.create_model(arch, load_weights=False)
    finally:
        logging.getLogger().removeFilter(quiet)
    _into(model, state, arch, path)
    return model, info, state


def import_weights(cfg: ClipConfig, source: Path, out: Path) -> dict[str, Any]:
    """The real profile's `teacher` stage: check `clip.weights_file` (sha256, format, activation,
    keys and shapes against `clip.arch`) and write it to `out` as a `cocu-import` file (its tensors
    unchanged, plus the record). Returns the metrics of the import."""
    digest = check_weights_file(source, cfg.expected_sha256, key="clip.weights_file")
    _, info, state = load_pretrained(cfg.arch, source)
    record = {"arch": cfg.arch, "quick_gelu": bool(info.quick_gelu), "source_format": info.format,
              "source_file": str(source), "source_sha256": digest}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save({IMPORT_KEY: record, "state_dict": {k: v.detach().contiguous() for k, v in state.items()}}, tmp)
    os.replace(tmp, out)
    log.info("imported %s (%s, %s: %s) for %s -> %s", source, info.label, activation_name(bool(info.quick_gelu)),
             info.evidence, cfg.arch, out)
    return {"weights_sha256": digest, "source": str(source), "arch": cfg.arch, "format": info.format,
            "activation": activation_name(bool(info.quick_gelu)), "imported_sha256": sha256_file(out)}


def tiny_model_cfg(cfg: ClipConfig) -> dict[str, Any]:
    """The open_clip model config dict (same shape as open_clip's model_configs/*.json)."""
    return {
        "embed_dim": cfg.embed_dim,
        "vision_cfg": {
            "image_size": cfg.image_size,
            "layers": cfg.vision_layers,
            "width": cfg.vision_width,
            "head_width": cfg.vision_head_width,
            "patch_size": cfg.patch_size,
            "pool_type": cfg.vision_pool,
        },
        "text_cfg": {
            "context_length": cfg.context_length,
            "width": cfg.text_width,
            "heads": max(1, cfg.text_width // cfg.text_head_width),
            "layers": cfg.text_layers,
        },
    }


def build_tiny_clip(cfg: ClipConfig) -> open_clip.CLIP:
    """A randomly initialised tiny open_clip CLIP (seed torch before calling for determinism)."""
    mc = tiny_model_cfg(cfg)
    model = open_clip.CLIP(
        embed_dim=mc["embed_dim"], vision_cfg=CLIPVisionCfg(**mc["vision_cfg"]), text_cfg=CLIPTextCfg(**mc["text_cfg"])
    )
    pp = {
        "size": cfg.image_size,
        "mode": "RGB",
        "mean": open_clip.OPENAI_DATASET_MEAN,
        "std": open_clip.OPENAI_DATASET_STD,
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "fill_color": 0,
    }
    open_clip.set_model_preprocess_cfg(model, pp)
    return model


def check_weights_file(weights_path: Optional[Path], expected_sha256: Optional[str], key: str = WEIGHTS_KEY) -> str:
    """sha256 of the weights file; FileNotFoundError naming the path and params key if absent."""
    if weights_path is None:
        raise FileNotFoundError(f"no CLIP weights file given: set {key} in params.yaml")
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"CLIP weights file not found: {path} (params key {key}); "
            "put the file there (it is never downloaded)"
        )
    digest = sha256_file(path)
    if expected_sha256 and digest != expected_sha256.lower():
        raise ChecksumError(f"{path}: sha256 {digest} != expected {expected_sha256} (clip.expected_sha256)")
    return digest


def load_clip(
    cfg: ClipConfig, weights_path: Optional[Path]
) -> tuple[torch.nn.Module, Transform, Transform, Callable[..., torch.Tensor], Optional[str]]:
    """(model in eval mode, preprocess_train, preprocess_val, tokenizer, sha256 of the weights).

    synthetic: a tiny CLIP; `weights_path` None gives a random init (sha256 None), otherwise the
    file's state_dict is loaded strictly. pretrained: `cfg.arch` with weights from the local file
    in any format of the module docstring, after the activation check; a missing file is a
    FileNotFoundError, a mismatch a WeightsFormatError.
    """
    if cfg.source == "synthetic":
        digest = None
        model = build_tiny_clip(cfg)
        if weights_path is not None:
            digest = check_weights_file(weights_path, cfg.expected_sha256)
            open_clip.load_checkpoint(model, str(weights_path), strict=True)
            log.info("loaded tiny CLIP weights %s (sha256 %s)", weights_path, digest)
        tokenizer = open_clip.SimpleTokenizer(context_length=cfg.context_length)
    else:
        if ":" in cfg.arch:  # 'hf-hub:' / 'local-dir:' schemas fetch configs; not allowed here
            raise ValueError(f"clip.arch must be a built-in open_clip architecture name, got {cfg.arch!r}")
        digest = check_weights_file(weights_path, None)
        model, info, _ = load_pretrained(cfg.arch, weights_path)
        # clip.expected_sha256 is the checksum of clip.weights_file: an imported file carries it
        source_digest = info.record["source_sha256"] if info.record is not None else digest
        if cfg.expected_sha256 and source_digest != cfg.expected_sha256.lower():
            raise ChecksumError(f"{weights_path}: sha256 of the weights file {source_digest} != expected "
                                f"{cfg.expected_sha256} (clip.expected_sha256)")
        tokenizer = open_clip.get_tokenizer(cfg.arch)
        log.info("loaded %s weights %s (%s, sha256 %s)", cfg.arch, weights_path, info.label, digest)
    pp = open_clip.get_model_preprocess_cfg(model)
    preprocess_train = open_clip.image_transform(pp["size"], is_train=True, mean=pp["mean"], std=pp["std"])
    preprocess_val = open_clip.image_transform(
        pp["size"], is_train=False, mean=pp["mean"], std=pp["std"],
        resize_mode=pp.get("resize_mode"), interpolation=pp.get("interpolation"),
    )
    model.eval()
    return model, preprocess_train, preprocess_val, tokenizer, digest


def image_norm(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the model's image normalisation."""
    pp = open_clip.get_model_preprocess_cfg(model)
    return tuple(pp["mean"]), tuple(pp["std"])


def save_weights(model: torch.nn.Module, path: Path) -> str:
    """torch.save(state_dict) atomically (temp file + rename); returns the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)
    return sha256_file(path)

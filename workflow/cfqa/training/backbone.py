"""Loading a saved base model and its tokenizer (safetensors only, no remote code)."""
from __future__ import annotations

from pathlib import Path

from cfqa.config import BACKBONE_DIRS, MethodConfig
from cfqa.methods.registry import get_method
from cfqa.methods.families import check_method_family
from cfqa.model.model_family import family_of
from cfqa.training.optimization import seed_everything
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer


def backbone_dir(models_dir: Path, backbone: str) -> Path:
    if backbone not in BACKBONE_DIRS:
        raise ValueError(f"backbone must be one of {sorted(BACKBONE_DIRS)}, got {backbone!r}")
    return models_dir / BACKBONE_DIRS[backbone]


def load_backbone(directory: Path):
    """(model, tokenizer) from a save_pretrained directory; seq2seq or decoder-only."""
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory}: no saved model (config.json missing); run `cfqa pretrain`")
    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = auto.from_pretrained(directory, use_safetensors=True, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    if tokenizer.pad_token is None:
        # GPT-style hub tokenizers have no pad token: pad with eos. Batching and generation
        # build attention masks from lengths, so an eos used as padding is never attended to.
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def build_method_model(mcfg: MethodConfig, models_dir: Path):
    """(model, tokenizer, spec): the method's backbone loaded and the method applied."""
    spec = get_method(mcfg.method)
    base, tokenizer = load_backbone(backbone_dir(models_dir, mcfg.backbone))
    check_method_family(mcfg.method, family_of(base.config))   # e.g. lst on a GPT-Neo: say so before building
    seed_everything(mcfg.train.seed)  # methods initialise their new weights from the global RNG
    return spec.build(base, mcfg.options), tokenizer, spec

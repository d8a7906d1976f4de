"""What each fine-tuning method accepts: one frozen dataclass per method, typed and bounded.

The classes have no defaults: params.yaml lists every option of every method, and
cfqa.config validates each block against its class when the configuration loads, so a typo
or a bad value stops every command (and `snakemake -n`) before any job or model load.
Validation is pydantic's, on these plain dataclasses: ints are ints (never a bool or 16.0),
numbers are finite, flags are true/false, unknown keys are errors.

Kept apart from the method modules, which import torch, peft and transformers (about 6 s):
the configuration is validated on every Snakemake parse. Checks that need the model (layer
counts, d_model, module names of the architecture) stay in each method's `build`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import AfterValidator, ConfigDict, Field, Strict, StrictBool, StrictInt, StrictStr, with_config

from cfqa.model.model_family import ModelFamily

# Unknown keys are errors; NaN and infinities are not numbers here. Patterns are Python's `re`
# (the JSON schema's, which end in \Z; pydantic's default engine has no \Z).
TYPED = ConfigDict(extra="forbid", allow_inf_nan=False, regex_engine="python-re")


def distinct(values: tuple) -> tuple:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"items must be distinct; repeated: {repeated}")
    return values


Count = Annotated[StrictInt, Field(ge=1)]
Seed = Annotated[StrictInt, Field(ge=0)]
# A method's own initialisation seed: null (params.yaml's value) draws the initialisation from
# the run's random stream, which `cfqa.training.backbone.build_method_model` seeds with the run seed, so
# every run seed starts from its own initialisation and the spread over seeds includes it. An
# integer fixes the initialisation in every run on purpose (recorded with the options in every
# result file): the seeds then vary only the data order and dropout.
InitSeed = Seed | None
Number = Annotated[float, Strict()]                 # an int or a float, finite, never a bool or a string
Dropout = Annotated[Number, Field(ge=0, lt=1)]
ModuleNames = Annotated[tuple[StrictStr, ...], Field(min_length=1), AfterValidator(distinct)]

PrefixSite = Literal["encoder_self", "decoder_self", "decoder_cross"]
PREFIX_SITES: tuple[str, ...] = get_args(PrefixSite)
LstFusion = Literal["static", "dynamic", "attention"]
LST_FUSIONS: tuple[str, ...] = get_args(LstFusion)


@with_config(TYPED)
@dataclass(frozen=True)
class FullOptions:
    """Full fine-tuning has no options."""


@with_config(TYPED)
@dataclass(frozen=True)
class LastLayerOptions:
    num_blocks: Count                               # top decoder blocks that train (<= decoder depth)


@with_config(TYPED)
@dataclass(frozen=True)
class LoraOptions:
    r: Count                                        # rank of B·A
    alpha: Count                                    # scale alpha / r (peft's lora_alpha is an int)
    dropout: Dropout
    target_modules: ModuleNames


@with_config(TYPED)
@dataclass(frozen=True)
class IA3Options:
    target_modules: ModuleNames
    feedforward_modules: Annotated[tuple[StrictStr, ...], AfterValidator(distinct)]

    def __post_init__(self):
        stray = sorted(set(self.feedforward_modules) - set(self.target_modules))
        if stray:
            raise ValueError(f"feedforward_modules {stray} must also be in target_modules "
                             f"{list(self.target_modules)}")


@with_config(TYPED)
@dataclass(frozen=True)
class PromptOptions:
    num_virtual_tokens: Count
    seed: InitSeed                                  # draws the vocabulary rows the prompt starts from


@with_config(TYPED)
@dataclass(frozen=True)
class PrefixOptions:
    num_virtual_tokens: Count
    reparameterize: StrictBool                      # train through an MLP (Li & Liang) or the table
    mlp_hidden_size: Count
    seed: InitSeed                                  # initializes the prefix matrices and the MLP
    sites: Annotated[tuple[PrefixSite, ...], Field(min_length=1), AfterValidator(distinct)]


@with_config(TYPED)
@dataclass(frozen=True)
class PrefixDecoderOptions:
    num_virtual_tokens: Count
    reparameterize: StrictBool
    mlp_hidden_size: Count                          # used when reparameterize is true


@with_config(TYPED)
@dataclass(frozen=True)
class AdapterOptions:
    reduction_factor: Count                         # bottleneck d_model // reduction_factor (<= d_model)
    cross_attention: StrictBool
    train_layer_norms: StrictBool


@with_config(TYPED)
@dataclass(frozen=True)
class LstOptions:
    reduction_factor: Count                         # side width d_model // reduction_factor
    fusion: LstFusion
    dropout: Dropout
    seed: InitSeed                                  # initializes the attention fusion


# Why some are seq2seq only:
# - prefix: the in-house prefixes sit in T5's encoder self-, decoder self- and cross-attention
#   (through T5Stack hooks); a decoder-only LM gets peft's prefix tuning as `prefix_decoder`.
# - lst: the side network is a pruned copy of T5's encoder and decoder (relative position
#   bias, cross-attention), built from T5's weights.
BOTH = (ModelFamily.SEQ2SEQ, ModelFamily.CAUSAL)
SEQ2SEQ_ONLY = (ModelFamily.SEQ2SEQ,)


@dataclass(frozen=True)
class MethodEntry:
    """What the registry knows of a method without importing it: its options class, what it
    trains (one line: the report's glossary and MethodSpec.description) and the model families
    it applies to. The method's module, cfqa.methods.<name>, defines how it is built."""
    options: type
    description: str
    families: tuple[ModelFamily, ...]


# The registry: one entry per method, its key the module name under cfqa.methods. A new
# method is its module and one entry here (and its block in params.yaml).
METHODS: dict[str, MethodEntry] = {
    "full": MethodEntry(FullOptions, "every weight of the backbone (the reference the other methods are compared with)",
                        BOTH),
    "last_layer": MethodEntry(LastLayerOptions, "the top decoder block(s) under the head, the final norm and an untied "
                                                "copy of the output head", BOTH),
    "lora": MethodEntry(LoraOptions, "low-rank updates B·A beside the targeted linear layers (peft); the backbone frozen",
                        BOTH),
    "ia3": MethodEntry(IA3Options, "learned rescaling vectors of keys, values and feed-forward activations ((IA)³, peft)",
                       BOTH),
    "prompt": MethodEntry(PromptOptions, "learned input embeddings prepended to the encoder input (prompt tuning, peft)",
                          BOTH),
    "prefix": MethodEntry(PrefixOptions, "prefix keys and values in encoder, decoder and cross-attention (Li & Liang 2021)",
                          SEQ2SEQ_ONLY),
    "prefix_decoder": MethodEntry(PrefixDecoderOptions, "peft's prefix tuning: prefix keys and values in decoder "
                                                        "self-attention only", BOTH),
    "adapter": MethodEntry(AdapterOptions, "Houlsby bottleneck adapters after every attention and feed-forward sub-layer",
                           BOTH),
    "lst": MethodEntry(LstOptions, "Ladder Side Tuning: a side network of width d_model/r reading the frozen backbone's "
                                   "states", SEQ2SEQ_ONLY),
}

# Views of the registry for the places that need one fact (cfqa.methods.registry.METHOD_NAMES
# is these keys).
METHOD_OPTIONS: dict[str, type] = {name: entry.options for name, entry in METHODS.items()}
METHOD_DESCRIPTIONS: dict[str, str] = {name: entry.description for name, entry in METHODS.items()}
METHOD_FAMILIES: dict[str, tuple[ModelFamily, ...]] = {name: entry.families for name, entry in METHODS.items()}

# Any method's options (pydantic validates a MethodConfig's options against the method's class).
MethodOptions = Union[tuple(METHOD_OPTIONS.values())]  # type: ignore[valid-type]


def options_record(options: MethodOptions) -> dict[str, Any]:
    """The options as plain JSON values (lists, not tuples), for result files and tracking."""
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(options).items()}

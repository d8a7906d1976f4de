"""Batched greedy (or beam) generation, longest inputs first to keep padding small.

Both model families return the answer text only. An encoder-decoder reads right-padded inputs
and generates a separate decoder sequence. A decoder-only LM continues its prompt: prompts are
padded on the LEFT (so every row's next token follows its own last prompt token), the
attention mask marks the padding, generation stops at eos, and only the tokens after the
prompt are decoded.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch

from cfqa.model.model_family import ModelFamily, model_family
from cfqa.io.progress import progress


@dataclass(frozen=True)
class GenerationRun:
    texts: list[str]
    seconds: float


def pad_batch(sequences: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask); the mask comes from the lengths, since pad_id may equal eos."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        span = slice(width - len(sequence), width) if left else slice(0, len(sequence))
        input_ids[row, span] = torch.as_tensor(sequence, dtype=torch.long)
        attention_mask[row, span] = 1
    return input_ids, attention_mask


@torch.no_grad()
def generate_ids(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, family: ModelFamily,
                 pad_id: int, eos_id: int | None, max_new_tokens: int, num_beams: int) -> torch.Tensor:
    """The generated answer ids per row: for a causal LM the prompt is cut off."""
    if family is ModelFamily.SEQ2SEQ:   # pad and eos come from the config (LST's generate takes no others)
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                              num_beams=num_beams, do_sample=False)
    generated = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                               num_beams=num_beams, do_sample=False, pad_token_id=pad_id, eos_token_id=eos_id)
    return generated[:, input_ids.shape[1]:]


@torch.no_grad()
def generate_texts(model, tokenizer, inputs: list[str] | None, *, batch_size: int, max_input_length: int,
                   max_new_tokens: int, num_beams: int, device: torch.device, desc: str,
                   encoded: Sequence[Sequence[int]] | None = None, bf16: bool = False) -> GenerationRun:
    """`inputs` tokenized here, or `encoded` as given (already truncated, e.g. from the
    tokenize stage). `bf16`: generate under bf16 autocast, as a model trained with bf16 ran in
    training (fp32 master weights, bf16 matrix products): the same numerics, half the time on
    a GPU."""
    family = model_family(model)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError(f"{type(tokenizer).__name__} has no pad token; load the backbone with "
                         f"cfqa.training.backbone.load_backbone, which sets one")
    if encoded is None:
        encoded = tokenizer(inputs, truncation=True, max_length=max_input_length).input_ids
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    outputs: list[str | None] = [None] * len(encoded)
    started = time.perf_counter()
    bar = progress(total=len(encoded), desc=desc, unit="ex")
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        input_ids, attention_mask = pad_batch([encoded[i] for i in chunk], pad_id,
                                              left=family is ModelFamily.CAUSAL)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            generated = generate_ids(model, input_ids.to(device), attention_mask.to(device), family=family,
                                     pad_id=pad_id, eos_id=tokenizer.eos_token_id,
                                     max_new_tokens=max_new_tokens, num_beams=num_beams)
        for index, text in zip(chunk, tokenizer.batch_decode(generated, skip_special_tokens=True)):
            outputs[index] = text
        bar.update(len(chunk))
    bar.close()
    return GenerationRun(texts=[t or "" for t in outputs], seconds=time.perf_counter() - started)

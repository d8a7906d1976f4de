"""Batched greedy (or beam) generation, longest inputs first to keep padding small."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from cfqa.progress import progress


@dataclass(frozen=True)
class GenerationRun:
    texts: list[str]
    seconds: float


@torch.no_grad()
def generate_texts(model, tokenizer, inputs: list[str], *, batch_size: int, max_input_length: int,
                   max_new_tokens: int, num_beams: int, device: torch.device, desc: str) -> GenerationRun:
    encoded = tokenizer(inputs, truncation=True, max_length=max_input_length).input_ids
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    outputs: list[str | None] = [None] * len(encoded)
    started = time.perf_counter()
    bar = progress(total=len(encoded), desc=desc, unit="ex")
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in chunk)
        input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        for row, index in enumerate(chunk):
            input_ids[row, :len(encoded[index])] = torch.tensor(encoded[index])
        input_ids = input_ids.to(device)
        generated = model.generate(input_ids=input_ids, attention_mask=(input_ids != tokenizer.pad_token_id).long(),
                                   max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False)
        for index, text in zip(chunk, tokenizer.batch_decode(generated, skip_special_tokens=True)):
            outputs[index] = text
        bar.update(len(chunk))
    bar.close()
    return GenerationRun(texts=[t or "" for t in outputs], seconds=time.perf_counter() - started)

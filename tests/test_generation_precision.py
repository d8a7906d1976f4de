"""Generation runs in bf16 where training did (bf16 autocast: the matrix products in bf16,
fp32 master weights), and in fp32 otherwise; pre-tokenized inputs are generated as given."""
from __future__ import annotations

import torch

from cfqa.evaluation.generation import generate_texts
from conftest import tiny_t5


class IdsTokenizer:
    """Just what generate_texts needs: pad and eos ids, and decoding as the ids' text."""
    pad_token_id, eos_token_id = 0, 1

    def batch_decode(self, rows, skip_special_tokens=True):
        return [" ".join(str(int(t)) for t in row if int(t) > 1) for row in rows]


def head_dtypes(model, bf16: bool) -> tuple[set, list[str]]:
    seen = set()
    hook = model.lm_head.register_forward_hook(lambda module, args, output: seen.add(output.dtype))
    run = generate_texts(model, IdsTokenizer(), None, encoded=[[5, 6, 7, 1], [8, 9, 1]], batch_size=2,
                         max_input_length=8, max_new_tokens=4, num_beams=1, device=torch.device("cpu"), desc="t",
                         bf16=bf16)
    hook.remove()
    return seen, run.texts


def test_generation_follows_the_training_precision():
    model = tiny_t5()
    bf16_dtypes, bf16_texts = head_dtypes(model, bf16=True)
    fp32_dtypes, fp32_texts = head_dtypes(model, bf16=False)
    assert bf16_dtypes == {torch.bfloat16} and fp32_dtypes == {torch.float32}
    assert len(bf16_texts) == len(fp32_texts) == 2
    assert next(model.parameters()).dtype == torch.float32           # the weights stay fp32

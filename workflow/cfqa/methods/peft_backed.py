"""What the peft-backed methods (lora, ia3, prompt, prefix_decoder) share: peft's task type."""
from __future__ import annotations

from peft import TaskType
from transformers import PretrainedConfig


def peft_task_type(config: PretrainedConfig) -> TaskType:
    """Follows the architecture, so one method works on an encoder-decoder or a decoder-only LM."""
    return TaskType.SEQ_2_SEQ_LM if getattr(config, "is_encoder_decoder", False) else TaskType.CAUSAL_LM

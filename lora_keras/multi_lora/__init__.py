"""Several LoRA adapters on one frozen GPT-2 (m-LoRA): one model trains, saves and serves them.

- `apply.py`: `apply_multi_lora`, `adapter_names`, and the "multi_lora" section it records in
  an adapted backbone's config;
- `adapter_file.py`: one adapter of many to and from the file a single-adapter model reads
  (`lk.save_adapter(..., adapter=NAME)`, `lk.load_adapter(..., adapter=NAME)`);
- `generate.py`: `generate`, a batch of prompts each with its own adapter;
- `losses.py`: per-adapter sample weights and losses;
- `mixed_batches.py`: `mixed_batches`, each adapter's batches side by side, for one `fit`;
- `seeded_a.py`: each adapter's A from (seed, rank, layer), equal in a plain LoRA model.

The layers are `lora_keras.layers.MultiLoraEinsumDense` and `MultiLoraDense`; the task model
that takes `adapter_ids` is `gpt2_surgery.MultiAdapterGPT2CausalLM`.
"""

from lora_keras.multi_lora.apply import adapter_names, apply_multi_lora, multi_lora_settings
from lora_keras.multi_lora.generate import generate
from lora_keras.multi_lora.losses import adapter_losses, adapter_sample_weight
from lora_keras.multi_lora.mixed_batches import mixed_batches
from lora_keras.multi_lora.seeded_a import seed_lora_a

__all__ = [
    "adapter_losses",
    "adapter_names",
    "adapter_sample_weight",
    "apply_multi_lora",
    "generate",
    "mixed_batches",
    "multi_lora_settings",
    "seed_lora_a",
]

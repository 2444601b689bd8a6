from lora_keras.levers.chunked_loss import ChunkedLossCausalLM
from lora_keras.levers.options import LOSS_TOLERANCE, OPTIONS, check_options

__all__ = ["LOSS_TOLERANCE", "OPTIONS", "ChunkedLossCausalLM", "check_options"]

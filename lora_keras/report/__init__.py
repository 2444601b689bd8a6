"""Reports drawn from a comparison's `results.json`: Markdown and PNG plots."""

from lora_keras.report.write_report import write_report

__all__ = ["write_report"]

"""Stage 2: clinical data -> `Sample` JSONL: formats, task templates, conversations, curation.

See docs/data-format.md for the sample format.
"""

from medmllm.data.io import read_jsonl, read_samples, write_jsonl, write_samples
from medmllm.data.schema import ImagePart, ImageRef, Sample, TextPart, Turn, parse_sample, text_turn

__all__ = ["ImagePart", "ImageRef", "Sample", "TextPart", "Turn", "parse_sample", "read_jsonl", "read_samples", "text_turn", "write_jsonl", "write_samples"]

"""PubMedVision's data engine: filter image-text pairs and reformat them with a (vision) LLM (docs/reformat.md).

- `medmllm.reformat.prompts`: the paper's prompts, scenarios, question sets and criteria, verbatim.
- `medmllm.reformat.filters`: pre-filters (medical terms, resolution, image classifier, semantic dedup).
- `medmllm.reformat.engine`: the async client, cache, retries, resume and the output samples.
- `medmllm.reformat.review`: the expert review sheet and its SQLite store.
"""

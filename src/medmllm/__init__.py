"""medmllm: build, train, evaluate and serve medical multimodal LLMs.

The data flows one way, one subpackage per stage (see docs/architecture.md):
``scans`` (files -> Scan) -> ``data`` -> ``model`` -> ``train`` / ``eval`` / ``serve``.
"""

__version__ = "0.1.0"

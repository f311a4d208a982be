"""``medmllm serve``: one model behind an OpenAI-compatible API, with study uploads (docs/serving.md).

- `app.create_app(model_dir, api_keys=..., data_dir=...)`: the FastAPI application.
- `api`: chat completions (streaming), models, studies, engine stats.
- `engine`: the generation queue with dynamic batching, in one torch worker thread.
- `studies`: upload checks, safe unzip, de-identification, storage, slices, feature cache.
- `auth`: API keys (stored hashed); `limits`: request body limits.
"""


def __getattr__(name: str):
    if name == "create_app":  # lazily: importing the package must not pull in FastAPI and torch
        from medmllm.serve.app import create_app

        return create_app
    raise AttributeError(name)


__all__ = ["create_app"]

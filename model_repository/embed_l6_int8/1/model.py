# Engine code is shared by all embed variants: adapter/serving/backends/embed.py
from adapter.serving.backends.embed import OnnxEmbedding as TritonPythonModel  # noqa: F401

# Engine code is shared by all langid variants: adapter/serving/backends/langid.py
from adapter.serving.backends.langid import FastText as TritonPythonModel  # noqa: F401

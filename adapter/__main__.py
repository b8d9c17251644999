from adapter.cli import entrypoint

entrypoint()
